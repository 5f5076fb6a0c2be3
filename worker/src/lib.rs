//! The hokusai-serve worker: a stateless process that consumes deployment commands from the
//! queue and drives providers (docs/architecture.md). Any number of workers may run; a
//! worker killed at any instant leaves nothing half-done that another cannot finish.
//!
//! Layout:
//! - [`startup`]: [`Worker::build`] / [`Worker::run_until_stopped`], N concurrent handlers
//!   and, for broker backends, the outbox relay.
//! - [`consumer`]: [`Consumer::try_process_one`]: one message, one step, settle after commit.
//! - [`saga`]: the steps of a deployment, one module per command kind.
//! - [`reconciler`]: the level-triggered pass (leader lease, deadlines, lost endpoints,
//!   lost commands, orphans).
//! - [`relay`]: the outbox relay, publishing committed commands to a broker queue.
//! - [`dlq`]: dead-letter operations behind `hokusai-serve dlq`.
//! - [`mlflow`]: MLflow intake, status sync and reconciliation (only with `MLFLOW_TRACKING_URI`).
//! - [`gauges`]: the gauges read from the database and the queue (deployments, outbox,
//!   depth, cost, idle), refreshed periodically.
//! - [`metrics_server`]: `/metrics` and `/health` on `WORKER_METRICS_PORT`.

pub mod consumer;
pub mod dlq;
pub mod gauges;
pub mod metrics_server;
pub mod mlflow;
pub mod reconciler;
pub mod relay;
pub mod retention;
pub mod saga;
pub mod startup;

pub use consumer::{Consumer, Outcome};
pub use startup::Worker;
