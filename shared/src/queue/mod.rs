//! The deployment command queue (DESIGN.md §6). This module holds the versioned message
//! envelope every backend carries; producers write it to the `outbox` in their business
//! transaction.

mod envelope;

pub use envelope::{Envelope, EnvelopeError, MessageKind};

/// The queue that carries deployment commands.
pub const DEPLOYMENTS_QUEUE: &str = "hokusai.deployments";
