//! `mlflow_sync_retries`: deployments whose state could not be written to MLflow, retried by
//! the status sync with backoff (kept in the database, so a restart loses none).

use sea_orm::entity::prelude::*;

/// One deployment waiting for its tags to be written again.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mlflow_sync_retries")]
pub struct Model {
    /// The deployment.
    #[sea_orm(primary_key, auto_increment = false)]
    pub deployment_id: Uuid,
    /// Failed writes so far.
    pub attempts: i32,
    /// Not tried again before this time.
    pub next_attempt_at: DateTimeUtc,
    /// Why the last write failed.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// First failure.
    pub created_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
