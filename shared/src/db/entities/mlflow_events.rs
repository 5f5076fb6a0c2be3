//! `mlflow_events`: accepted webhook events waiting for (or done by) the worker's intake.

use sea_orm::entity::prelude::*;

/// One event.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mlflow_events")]
pub struct Model {
    /// Row id (UUIDv7: handled in arrival order).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The delivery that brought it.
    pub delivery_id: String,
    /// `entity.action`, e.g. `model_version.created`.
    pub event: String,
    /// Registered model name.
    pub model_name: String,
    /// Model version.
    pub version: Option<String>,
    /// The parsed event fields (`key`, `value`, `alias`).
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// When the listener accepted it.
    pub received_at: DateTimeUtc,
    /// Not handled before this time (retry backoff).
    pub available_at: DateTimeUtc,
    /// Handling attempts so far.
    pub attempts: i32,
    /// Leased by a worker until this time.
    pub locked_until: Option<DateTimeUtc>,
    /// Why the last attempt failed.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Done at (null = pending).
    pub processed_at: Option<DateTimeUtc>,
    /// What handling it did (`deployed`, `rejected`, `skipped`, `gave_up`…).
    pub outcome: Option<String>,
    /// The current claim's fencing token (`shared::db::claim`).
    pub claim_token: Option<Uuid>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
