//! Changes to a deployment row, always under the optimistic lock (`lock_version`) and always
//! with an event in `deployment_events`: status [`transition`]s checked against the status
//! machine, provider observations ([`observe`]) and the active flag ([`set_active`]).

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
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
    let id = DeploymentId(current.id);
    if !current.status.can_transition_to(transition.to) {
        return Err(DbError::IllegalTransition {
            id,
            from: current.status,
            to: transition.to,
        });
    }
    let updated = apply(conn, current, transition.to, transition.changes).await?;
    record_event(
        conn,
        &updated,
        "transition",
        Some(current.status),
        &transition.message,
        transition.details,
    )
    .await?;
    Ok(updated)
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
    let changed_state = changes
        .provider_status
        .as_ref()
        .is_some_and(|s| current.provider_status.as_ref() != Some(s));
    let updated = apply(conn, current, current.status, changes).await?;
    if changed_state {
        let message = format!(
            "provider state is now {}",
            updated.provider_status.as_deref().unwrap_or("unknown")
        );
        record_event(
            conn,
            &updated,
            "provider_state",
            Some(current.status),
            &message,
            details,
        )
        .await?;
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
    let changes = Changes {
        is_active: Some(active),
        ..Changes::default()
    };
    let updated = apply(conn, current, current.status, changes).await?;
    let kind = if active { "activated" } else { "deactivated" };
    record_event(conn, &updated, kind, Some(current.status), message, None).await?;
    Ok(updated)
}

/// The guarded update: `to` and `changes`, if `lock_version` is still the one read. Every
/// write folds the billable time since the previous one into `accrued_cost_usd` (priced in
/// the provider state that held until now) and keeps the month-to-date bookkeeping.
async fn apply<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
    to: DeploymentStatus,
    c: Changes,
) -> Result<Deployment, DbError> {
    let id = DeploymentId(current.id);
    let now = Utc::now();
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
    // `RETURNING` (PostgreSQL, SQLite ≥ 3.35) reads the new row in the same round trip.
    let updated = update
        .filter(deployed_models::Column::Id.eq(current.id))
        .filter(deployed_models::Column::LockVersion.eq(current.lock_version))
        .exec_with_returning(conn)
        .await
        .map_err(|e| DbError::from_write(e, &current.model_id))?;
    updated.into_iter().next().ok_or(DbError::StaleTransition {
        id,
        expected: current.lock_version,
    })
}
