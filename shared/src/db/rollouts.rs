//! Rollouts and their measurements (docs/design/rollouts.md).
//!
//! A rollout is **open** while `running` or `paused`; a model has at most one open rollout
//! (created under the model's operation lock, `db::model_ops`, by the activation of its
//! canary). The reconciler moves it on ([`advance`], [`end`], [`pause`]) in the same
//! transactions that change the deployments; the API only reads it, writes measurements and
//! records an operator's request ([`request`]), which the reconciler carries out.
//!
//! Every write is conditional on what its writer read — the state, the step and the pending
//! request — so a decision taken from a stale read (an operator's abort recorded meanwhile,
//! a second pass) changes nothing and fails with [`DbError::StaleRollout`]; the next pass
//! decides again from the current row.

use chrono::Utc;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use serde_json::Value;
use uuid::Uuid;

use super::DbError;
use super::entities::{rollout_measurements, rollouts};
use crate::domain::rollout::{Figures, RolloutSpec};

/// A stored rollout.
pub type Rollout = rollouts::Model;

/// The states of a rollout.
pub mod state {
    /// Steps are being taken.
    pub const RUNNING: &str = "running";
    /// Waiting for an operator (too little traffic until the deadline).
    pub const PAUSED: &str = "paused";
    /// The new version took all traffic.
    pub const PROMOTED: &str = "promoted";
    /// Rolled back.
    pub const ABORTED: &str = "aborted";
}

/// An operator's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// To 100 % now.
    Promote,
    /// Roll back now.
    Abort,
}

impl Request {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

impl rollouts::Model {
    /// The validated spec it was started with.
    pub fn spec(&self) -> Result<RolloutSpec, DbError> {
        serde_json::from_value(self.spec.clone()).map_err(|e| {
            DbError::Database(sea_orm::DbErr::Custom(format!(
                "rollout {}: unreadable spec: {e}",
                self.id
            )))
        })
    }

    /// The canary's share of traffic now, in percent (0 once the rollout ended).
    pub fn weight(&self) -> u8 {
        if !self.is_open() {
            return 0;
        }
        let spec = self.spec().ok();
        let step = usize::try_from(self.step).unwrap_or(0);
        spec.and_then(|s| s.steps.get(step).copied()).unwrap_or(0)
    }

    /// Running or paused.
    pub fn is_open(&self) -> bool {
        self.state == state::RUNNING || self.state == state::PAUSED
    }

    /// The operator's pending request.
    pub fn pending_request(&self) -> Option<Request> {
        match self.requested.as_deref() {
            Some("promote") => Some(Request::Promote),
            Some("abort") => Some(Request::Abort),
            _ => None,
        }
    }
}

/// Starts a rollout of `canary` against `stable` at step 0 (inside the activation's
/// transaction, under the model's lock).
pub async fn create<C: ConnectionTrait>(
    txn: &C,
    model_id: &str,
    stable_id: Uuid,
    canary_id: Uuid,
    spec: &RolloutSpec,
) -> Result<Rollout, DbError> {
    let now = Utc::now();
    let row = rollouts::ActiveModel {
        id: Set(Uuid::now_v7()),
        model_id: Set(model_id.to_owned()),
        stable_id: Set(stable_id),
        canary_id: Set(canary_id),
        spec: Set(serde_json::to_value(spec).unwrap_or(Value::Null)),
        step: Set(0),
        state: Set(state::RUNNING.to_owned()),
        requested: Set(None),
        started_at: Set(now),
        step_started_at: Set(now),
        updated_at: Set(now),
        ended_at: Set(None),
        outcome: Set(None),
    };
    Ok(row.insert(txn).await?)
}

/// The model's open rollout, if any.
pub async fn open_for<C: ConnectionTrait>(
    db: &C,
    model_id: &str,
) -> Result<Option<Rollout>, DbError> {
    Ok(rollouts::Entity::find()
        .filter(rollouts::Column::ModelId.eq(model_id))
        .filter(rollouts::Column::State.is_in([state::RUNNING, state::PAUSED]))
        .order_by_desc(rollouts::Column::StartedAt)
        .one(db)
        .await?)
}

/// The model's latest rollout, open or not.
pub async fn latest_for<C: ConnectionTrait>(
    db: &C,
    model_id: &str,
) -> Result<Option<Rollout>, DbError> {
    Ok(rollouts::Entity::find()
        .filter(rollouts::Column::ModelId.eq(model_id))
        .order_by_desc(rollouts::Column::StartedAt)
        .one(db)
        .await?)
}

/// The latest rollout whose canary is `deployment`, if any.
pub async fn of_canary<C: ConnectionTrait>(
    db: &C,
    deployment: Uuid,
) -> Result<Option<Rollout>, DbError> {
    Ok(rollouts::Entity::find()
        .filter(rollouts::Column::CanaryId.eq(deployment))
        .order_by_desc(rollouts::Column::StartedAt)
        .one(db)
        .await?)
}

/// The open rollouts, oldest first, at most `limit`.
pub async fn open<C: ConnectionTrait>(db: &C, limit: u64) -> Result<Vec<Rollout>, DbError> {
    Ok(rollouts::Entity::find()
        .filter(rollouts::Column::State.is_in([state::RUNNING, state::PAUSED]))
        .order_by_asc(rollouts::Column::StartedAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// Records an operator's `request` on the model's open rollout; `None` when it has none.
pub async fn request<C: ConnectionTrait>(
    db: &C,
    model_id: &str,
    request: Request,
) -> Result<Option<Rollout>, DbError> {
    let Some(open) = open_for(db, model_id).await? else {
        return Ok(None);
    };
    let mut row: rollouts::ActiveModel = open.clone().into();
    row.requested = Set(Some(request.as_str().to_owned()));
    row.updated_at = Set(Utc::now());
    // Ended between the read and the write: there is no rollout to ask any more.
    match guarded_update(db, &open, row).await {
        Ok(updated) => Ok(Some(updated)),
        Err(DbError::StaleRollout(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Writes `row` over `read` only if the stored rollout still has `read`'s state, step and
/// pending request; otherwise [`DbError::StaleRollout`] and nothing is written.
async fn guarded_update<C: ConnectionTrait>(
    db: &C,
    read: &Rollout,
    row: rollouts::ActiveModel,
) -> Result<Rollout, DbError> {
    let requested = match &read.requested {
        Some(r) => rollouts::Column::Requested.eq(r.as_str()),
        None => rollouts::Column::Requested.is_null(),
    };
    let result = rollouts::Entity::update_many()
        .set(row)
        .filter(rollouts::Column::Id.eq(read.id))
        .filter(rollouts::Column::State.eq(read.state.as_str()))
        .filter(rollouts::Column::Step.eq(read.step))
        .filter(requested)
        .exec(db)
        .await?;
    if result.rows_affected == 0 {
        return Err(DbError::StaleRollout(read.id));
    }
    rollouts::Entity::find_by_id(read.id)
        .one(db)
        .await?
        .ok_or(DbError::StaleRollout(read.id))
}

/// Moves `rollout` to step `step` (running, the request cleared), starting its bake.
pub async fn advance<C: ConnectionTrait>(
    txn: &C,
    rollout: &Rollout,
    step: i32,
) -> Result<Rollout, DbError> {
    let now = Utc::now();
    let mut row: rollouts::ActiveModel = rollout.clone().into();
    row.step = Set(step);
    row.state = Set(state::RUNNING.to_owned());
    row.requested = Set(None);
    row.step_started_at = Set(now);
    row.updated_at = Set(now);
    guarded_update(txn, rollout, row).await
}

/// Ends `rollout` `promoted` or `aborted`, saying why.
pub async fn end<C: ConnectionTrait>(
    txn: &C,
    rollout: &Rollout,
    to: &str,
    outcome: &str,
) -> Result<Rollout, DbError> {
    let now = Utc::now();
    let mut row: rollouts::ActiveModel = rollout.clone().into();
    row.state = Set(to.to_owned());
    row.requested = Set(None);
    row.ended_at = Set(Some(now));
    row.updated_at = Set(now);
    row.outcome = Set(Some(outcome.to_owned()));
    guarded_update(txn, rollout, row).await
}

/// Pauses `rollout` until an operator promotes or aborts it.
pub async fn pause<C: ConnectionTrait>(
    txn: &C,
    rollout: &Rollout,
    why: &str,
) -> Result<Rollout, DbError> {
    let mut row: rollouts::ActiveModel = rollout.clone().into();
    row.state = Set(state::PAUSED.to_owned());
    row.updated_at = Set(Utc::now());
    row.outcome = Set(Some(why.to_owned()));
    guarded_update(txn, rollout, row).await
}

/// Writes one API process's running total of what it measured of `deployment_id` in `step`
/// of `rollout_id` into its row `row` (created by the first write, overwritten by the next).
pub async fn record<C: ConnectionTrait>(
    db: &C,
    row: Uuid,
    rollout_id: Uuid,
    deployment_id: Uuid,
    step: i32,
    figures: &Figures,
) -> Result<(), DbError> {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let model = rollout_measurements::ActiveModel {
        id: Set(row),
        rollout_id: Set(rollout_id),
        deployment_id: Set(deployment_id),
        step: Set(step),
        recorded_at: Set(Utc::now()),
        requests: Set(as_i64(figures.requests)),
        errors: Set(as_i64(figures.errors)),
        latency_buckets: Set(serde_json::to_value(&figures.latency_buckets).unwrap_or(Value::Null)),
    };
    let totals = OnConflict::column(rollout_measurements::Column::Id)
        .update_columns([
            rollout_measurements::Column::RecordedAt,
            rollout_measurements::Column::Requests,
            rollout_measurements::Column::Errors,
            rollout_measurements::Column::LatencyBuckets,
        ])
        .to_owned();
    rollout_measurements::Entity::insert(model)
        .on_conflict(totals)
        .exec(db)
        .await?;
    Ok(())
}

/// The sum of what every API process measured of `deployment_id` in `step` of `rollout_id`.
pub async fn figures<C: ConnectionTrait>(
    db: &C,
    rollout_id: Uuid,
    deployment_id: Uuid,
    step: i32,
) -> Result<Figures, DbError> {
    let rows = rollout_measurements::Entity::find()
        .filter(rollout_measurements::Column::RolloutId.eq(rollout_id))
        .filter(rollout_measurements::Column::DeploymentId.eq(deployment_id))
        .filter(rollout_measurements::Column::Step.eq(step))
        .all(db)
        .await?;
    let mut total = Figures::default();
    for row in rows {
        total.add(&Figures {
            requests: u64::try_from(row.requests).unwrap_or(0),
            errors: u64::try_from(row.errors).unwrap_or(0),
            latency_buckets: serde_json::from_value(row.latency_buckets).unwrap_or_default(),
        });
    }
    Ok(total)
}
