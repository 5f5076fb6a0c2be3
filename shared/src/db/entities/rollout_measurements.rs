//! `rollout_measurements`: one API process's running total of what it measured of one
//! deployment in one step of a rollout, overwritten by each flush (docs/design/rollouts.md).

use sea_orm::entity::prelude::*;
use serde::Serialize;

/// One process's tally of one (rollout, deployment, step).
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "rollout_measurements")]
pub struct Model {
    /// Row id (UUIDv7).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The rollout.
    pub rollout_id: Uuid,
    /// The deployment measured (stable or canary).
    pub deployment_id: Uuid,
    /// The step the requests were routed in.
    pub step: i32,
    /// When the API wrote the row.
    pub recorded_at: DateTimeUtc,
    /// Requests.
    pub requests: i64,
    /// Failed requests.
    pub errors: i64,
    /// Latency histogram bucket counts (`domain::rollout::LATENCY_BOUNDS_MS`, then overflow).
    #[sea_orm(column_type = "JsonBinary")]
    pub latency_buckets: Json,
}

/// No relations are navigated.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
