//! `mlflow_sync_cursors`: the status sync's position in `deployment_events`.

use sea_orm::entity::prelude::*;

/// A cursor.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "mlflow_sync_cursors")]
pub struct Model {
    /// Which follower.
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// The last event handled.
    pub last_event_id: Uuid,
    /// When it moved.
    pub updated_at: DateTimeUtc,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
