//! `processed_messages`: the consumers' inbox.

use sea_orm::entity::prelude::*;

/// A handled message id.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "processed_messages")]
pub struct Model {
    /// The envelope's `message_id`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: Uuid,
    /// When it was handled.
    pub processed_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
