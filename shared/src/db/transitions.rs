//! Changes to a deployment row, always under the optimistic lock (`lock_version`) and always
//! with an event in `deployment_events`: status [`transition`]s checked against the status
//! machine, provider observations ([`observe`]) and the active flag ([`set_active`]).

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, UpdateMany};
use serde_json::Value;

use super::DbError;
use super::deployments::{Deployment, record_event};
use super::entities::deployed_models;
use crate::cost;
use crate::domain::{DeploymentId, DeploymentStatus};

/// Columns a transition may change besides the status. `None` leaves a column alone.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// New provider state.
    pub provider_status: Option<String>,
    /// Provider endpoint name.
    pub provider_model_id: Option<String>,
    /// Endpoint URL.
    pub endpoint_url: Option<String>,
    /// Failure reason (`Some(None)` clears it).
    pub error_message: Option<Option<String>>,
    /// Active flag.
    pub is_active: Option<bool>,
}

/// A status change and its event.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Target status.
    pub to: DeploymentStatus,
    /// Event message for operators.
    pub message: String,
    /// Event details.
    pub details: Option<Value>,
    /// Other columns to set.
    pub changes: Changes,
}

/// Moves `current` to `transition.to` and appends the event, if and only if nobody changed
/// the row since `current` was read (same `lock_version`) and the status machine allows it.
/// Runs on the caller's connection or transaction; returns the updated row.
pub async fn transition<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
    transition: Transition,
) -> Result<Deployment, DbError> {
    let change = plan_transition(current, transition, Utc::now())?;
    run(conn, current, change).await
}

/// Records what the provider said without a status change (provider state, cost), under
/// the same optimistic lock. An event is written only when the provider state changed, so
/// polling does not flood the log.
pub async fn observe<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
    changes: Changes,
    details: Option<Value>,
) -> Result<Deployment, DbError> {
    let change = plan_observe(current, changes, details, Utc::now());
    run(conn, current, change).await
}

/// A change of one deployment built but not run: the guarded update and the event that
/// goes with it. [`transition`] and [`observe`] run it statement by statement; a saga step
/// runs it inside one statement (PostgreSQL) or one script (SQLite) with the rest of its
/// writes (`db::one_statement`).
#[derive(Debug)]
pub struct Planned {
    /// The update ([`guarded_update`]).
    pub update: UpdateMany<deployed_models::Entity>,
    /// The row's status afterwards.
    pub to: DeploymentStatus,
    /// The event appended with it, if any.
    pub event: Option<NewEvent>,
}

/// An event to append to a deployment's log (`deployments::event_row`).
#[derive(Debug)]
pub struct NewEvent {
    /// Its kind (`transition`, `provider_state`, …).
    pub kind: &'static str,
    /// The status before.
    pub from: Option<DeploymentStatus>,
    /// The message for operators.
    pub message: String,
    /// Details.
    pub details: Option<Value>,
}

/// What [`transition`] writes at `now`; refused when the status machine does not allow it.
pub fn plan_transition(
    current: &Deployment,
    transition: Transition,
    now: chrono::DateTime<Utc>,
) -> Result<Planned, DbError> {
    if !current.status.can_transition_to(transition.to) {
        return Err(DbError::IllegalTransition {
            id: DeploymentId(current.id),
            from: current.status,
            to: transition.to,
        });
    }
    Ok(Planned {
        update: guarded_update(current, transition.to, transition.changes, now),
        to: transition.to,
        event: Some(NewEvent {
            kind: "transition",
            from: Some(current.status),
            message: transition.message,
            details: transition.details,
        }),
    })
}

/// What [`observe`] writes at `now`.
pub fn plan_observe(
    current: &Deployment,
    changes: Changes,
    details: Option<Value>,
    now: chrono::DateTime<Utc>,
) -> Planned {
    let new_state = changes
        .provider_status
        .clone()
        .filter(|s| current.provider_status.as_ref() != Some(s));
    let event = new_state.map(|state| NewEvent {
        kind: "provider_state",
        from: Some(current.status),
        message: format!("provider state is now {state}"),
        details,
    });
    Planned {
        update: guarded_update(current, current.status, changes, now),
        to: current.status,
        event,
    }
}

/// Runs `change` on `conn`, statement by statement; returns the updated row.
async fn run<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
    change: Planned,
) -> Result<Deployment, DbError> {
    let updated = returning(conn, current, change.update).await?;
    if let Some(e) = change.event {
        record_event(conn, &updated, e.kind, e.from, &e.message, e.details).await?;
    }
    Ok(updated)
}

/// Makes `current` serve (or stop serving) its model, with an event. The database refuses
/// a second active deployment ([`DbError::ActiveConflict`]): deactivate the old one first.
pub async fn set_active<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
    active: bool,
    message: &str,
) -> Result<Deployment, DbError> {
    let change = plan_set_active(current, active, message, Utc::now());
    run(conn, current, change).await
}

/// What [`set_active`] writes at `now`.
fn plan_set_active(
    current: &Deployment,
    active: bool,
    message: &str,
    now: chrono::DateTime<Utc>,
) -> Planned {
    let changes = Changes {
        is_active: Some(active),
        ..Changes::default()
    };
    Planned {
        update: guarded_update(current, current.status, changes, now),
        to: current.status,
        event: Some(NewEvent {
            kind: if active { "activated" } else { "deactivated" },
            from: Some(current.status),
            message: message.to_owned(),
            details: None,
        }),
    }
}

/// Runs `update` (a [`guarded_update`] of `current`) and reads the row it wrote.
async fn returning<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
    update: UpdateMany<deployed_models::Entity>,
) -> Result<Deployment, DbError> {
    // `RETURNING` (PostgreSQL, SQLite ≥ 3.35) reads the new row in the same round trip.
    let updated = update
        .exec_with_returning(conn)
        .await
        .map_err(|e| DbError::from_write(e, &current.model_id))?;
    updated.into_iter().next().ok_or(DbError::StaleTransition {
        id: DeploymentId(current.id),
        expected: current.lock_version,
    })
}

/// The update that moves `current` to `to` with `changes` at `now`, built but not run. Every
/// write folds the billable time since the previous one into `accrued_cost_usd` (priced in
/// the provider state that held until now) and keeps the month-to-date bookkeeping. It
/// matches no row once someone changed `current` since it was read (`lock_version`).
pub fn guarded_update(
    current: &Deployment,
    to: DeploymentStatus,
    c: Changes,
    now: chrono::DateTime<Utc>,
) -> UpdateMany<deployed_models::Entity> {
    let mut update = deployed_models::Entity::update_many()
        .col_expr(deployed_models::Column::Status, Expr::value(to.as_str()))
        .col_expr(
            deployed_models::Column::LockVersion,
            Expr::value(current.lock_version + 1),
        )
        .col_expr(deployed_models::Column::UpdatedAt, Expr::value(now));
    if let Some(v) = c.provider_status {
        update = update.col_expr(deployed_models::Column::ProviderStatus, Expr::value(v));
    }
    if let Some(v) = c.provider_model_id {
        update = update.col_expr(deployed_models::Column::ProviderModelId, Expr::value(v));
    }
    if let Some(v) = c.endpoint_url {
        update = update.col_expr(deployed_models::Column::EndpointUrl, Expr::value(v));
    }
    if let Some(v) = c.error_message {
        update = update.col_expr(deployed_models::Column::ErrorMessage, Expr::value(v));
    }
    if let Some(v) = c.is_active {
        update = update.col_expr(deployed_models::Column::IsActive, Expr::value(v));
    }
    let accrued = cost::accrued_until(current, now);
    update = update
        .col_expr(
            deployed_models::Column::AccruedCostUsd,
            Expr::value(accrued),
        )
        .col_expr(
            deployed_models::Column::MonthStartAccruedUsd,
            Expr::value(cost::accrued_at_month_start(current, now)),
        )
        .col_expr(
            deployed_models::Column::CostMonth,
            Expr::value(cost::month_key(now)),
        );
    if to == DeploymentStatus::Deployed && current.deployed_at.is_none() {
        update = update.col_expr(deployed_models::Column::DeployedAt, Expr::value(now));
    }
    if to == DeploymentStatus::Stopped {
        update = update.col_expr(deployed_models::Column::StoppedAt, Expr::value(now));
    }
    update
        .filter(deployed_models::Column::Id.eq(current.id))
        .filter(deployed_models::Column::LockVersion.eq(current.lock_version))
}
