//! sea-orm entities, one module per table of docs/design/domain.md. The schema itself is owned
//! by the `migrations` crate; these types only map it.

pub mod deployed_models;
pub mod deployment_events;
pub mod mlflow_deliveries;
pub mod mlflow_events;
pub mod mlflow_sync_cursors;
pub mod mlflow_sync_retries;
pub mod mlflow_version_claims;
pub mod outbox;
pub mod processed_messages;
pub mod queue_messages;
pub mod rollout_measurements;
pub mod rollouts;
