//! `queue_messages`: the embedded DB queue.

use sea_orm::entity::prelude::*;

/// One queued, leased or dead-lettered message.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "queue_messages")]
pub struct Model {
    /// Row id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Queue name.
    pub queue: String,
    /// The raw message (text, so an undecodable one can be kept for inspection).
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    /// Not delivered before this time.
    pub available_at: DateTimeUtc,
    /// Deliveries so far.
    pub attempts: i32,
    /// Leased by a consumer until this time.
    pub locked_until: Option<DateTimeUtc>,
    /// Why the last attempt failed.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Dead-lettered at (null = live).
    pub dead_at: Option<DateTimeUtc>,
    /// Enqueued.
    pub created_at: DateTimeUtc,
    /// The current claim's fencing token (`shared::db::claim`).
    pub claim_token: Option<Uuid>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
