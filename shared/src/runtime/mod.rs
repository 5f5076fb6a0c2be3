//! The moving parts every process shares, one mechanism per concern
//! (docs/design/runtime.md):
//!
//! - [`Batcher`]: the one way concurrent callers share a round trip (group commit: queue
//!   claims, publishes and acks).
//! - [`Backoff`]: the one retry-delay policy (minimum, maximum, jitter, a server's
//!   `Retry-After` honoured); `backon` runs retries with it.
//! - [`within`]: the one bounded wait.
//! - [`Shutdown`] / [`ShutdownTrigger`]: the one stop signal (tokio's mini-redis `Shutdown` is
//!   the model).
//! - [`Tasks`]: the supervisor of every background loop — it restarts a loop that panicked or
//!   returned, counts it, and reports each loop's heartbeat for `GET /ready`; its
//!   [`Tasks::every`] is the one periodic-task runner.

mod backoff;
mod batch;
mod shutdown;
mod tasks;

use std::future::Future;
use std::time::Duration;

pub use backoff::{Backoff, Delays};
pub use batch::{BatchFailed, Batcher};
pub use shutdown::{Shutdown, ShutdownTrigger};
pub use tasks::{Heartbeat, Readiness, TaskReport, TaskState, Tasks};

/// A wait that ran out: `what` did not answer within `limit`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: no answer within {limit:?}")]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub limit: Duration,
}

/// Runs `fut` for at most `limit`; the one bounded wait. The caller maps [`TimedOut`] into its
/// own error type.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, TimedOut> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| TimedOut {
            what: what.to_owned(),
            limit,
        })
}
