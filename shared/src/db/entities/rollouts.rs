//! `rollouts`: one canary rollout of a model (docs/design/rollouts.md).

use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One rollout.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "rollouts")]
pub struct Model {
    /// Rollout id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The model.
    pub model_id: String,
    /// The deployment serving when the rollout began (active throughout).
    pub stable_id: Uuid,
    /// The new deployment (deployed, not active, taking its step's weight).
    pub canary_id: Uuid,
    /// The validated `RolloutSpec`.
    #[sea_orm(column_type = "JsonBinary")]
    pub spec: Json,
    /// Index of the current step in the spec's steps.
    pub step: i32,
    /// `running`, `paused`, `promoted` or `aborted`.
    pub state: String,
    /// An operator's request not yet carried out: `promote` or `abort`.
    pub requested: Option<String>,
    /// When the rollout began.
    pub started_at: DateTimeUtc,
    /// When the current step began.
    pub step_started_at: DateTimeUtc,
    /// Last change.
    pub updated_at: DateTimeUtc,
    /// When it was promoted or aborted.
    pub ended_at: Option<DateTimeUtc>,
    /// Why it ended or paused, quoting the figures.
    #[sea_orm(column_type = "Text", nullable)]
    pub outcome: Option<String>,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
