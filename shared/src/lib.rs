//! Code shared by the API and the worker: configuration, domain types, the database
//! (entities and repositories) and telemetry set-up. It knows no HTTP framework and no
//! binary; `api` and `worker` depend on it, never the other way round.
//!
//! Layout:
//! - [`config`]: typed, layered [`Settings`](config::Settings) (docs/design/configuration.md).
//! - [`cost`]: billable time × price.
//! - [`domain`]: newtypes and the deployment status machine (docs/design/domain.md).
//! - [`db`]: connection, sea-orm entities and repositories.
//! - [`queue`]: the command queue of docs/design/queue.md and its backends.
//! - [`mlflow`]: MLflow REST client, webhook signatures and payloads, metadata extraction.
//! - [`request`]: deploy requests validated into new deployments.
//! - [`provider`]: the provider trait, its registry, HuggingFace and `http`
//!   (docs/design/providers.md).
//! - [`runtime`]: backoff, bounded waits, the stop signal and the supervisor of background
//!   loops (docs/design/runtime.md).
//! - [`telemetry`]: logging set-up.

pub mod config;
pub mod cost;
pub mod db;
pub mod domain;
pub mod mlflow;
pub mod provider;
pub mod queue;
pub mod request;
pub mod runtime;
pub mod telemetry;
