//! `deployment_events`: append-only log of state changes.

use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One event.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "deployment_events")]
pub struct Model {
    /// Event id (UUIDv7: time-ordered).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The deployment.
    pub deployment_id: Uuid,
    /// What happened (`created`, `transition`, `provider_error`…).
    pub kind: String,
    /// Status before, if the event is a transition.
    pub from_status: Option<String>,
    /// Status after, if the event is a transition.
    pub to_status: Option<String>,
    /// A sentence for operators.
    #[sea_orm(column_type = "Text", nullable)]
    pub message: Option<String>,
    /// Structured details (provider state, attempt, error).
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub details: Option<Json>,
    /// When.
    pub created_at: DateTimeUtc,
}

/// Relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    /// The deployment this event belongs to.
    #[sea_orm(
        belongs_to = "super::deployed_models::Entity",
        from = "Column::DeploymentId",
        to = "super::deployed_models::Column::Id"
    )]
    Deployment,
}

impl Related<super::deployed_models::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Deployment.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
