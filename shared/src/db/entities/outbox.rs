//! `outbox`: commands committed with the business change, awaiting publication.

use sea_orm::entity::prelude::*;

/// One pending or published command.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    /// Row id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Destination queue.
    pub queue: String,
    /// The envelope.
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// Not to be delivered before this time (delayed commands).
    pub available_at: Option<DateTimeUtc>,
    /// Written.
    pub created_at: DateTimeUtc,
    /// Published to the queue (null = pending).
    pub published_at: Option<DateTimeUtc>,
    /// Failed publishes so far.
    pub attempts: i32,
    /// Why the last publish failed.
    #[sea_orm(column_type = "Text", nullable)]
    pub last_error: Option<String>,
    /// Given up on after `RELAY_MAX_ATTEMPTS` (null = still relayed).
    pub parked_at: Option<DateTimeUtc>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
