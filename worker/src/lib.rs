//! The hokusai-serve worker: consumes deployment commands and drives providers.
//!
//! Layout:
//! - [`relay`]: the outbox relay, publishing committed commands to a broker queue.
//! - [`dlq`]: dead-letter operations behind `hokusai-serve dlq`.

pub mod dlq;
pub mod relay;
