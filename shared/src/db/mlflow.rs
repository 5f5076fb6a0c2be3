//! Repositories of the MLflow integration: accepted deliveries and their events (the
//! listener's side), the events' leases (the worker's intake), the one-deployment-per-
//! version claims, and the status sync's cursor over `deployment_events`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::Value;
use uuid::Uuid;

use super::DbError;
use super::deployments::{self, Deployment, DeploymentEvent, NewDeployment};
use super::entities::{
    deployment_events, mlflow_deliveries, mlflow_events, mlflow_sync_cursors, mlflow_version_claims,
};
use super::outbox::Route;
use crate::queue::Envelope;

pub use mlflow_events::Model as MlflowEvent;
pub use mlflow_version_claims::Model as VersionClaim;

/// An event to hand to the worker.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `entity.action`.
    pub event: String,
    /// Registered model name.
    pub model_name: String,
    /// Version.
    pub version: Option<String>,
    /// Other fields (`key`, `value`, `alias`).
    pub payload: Value,
}

/// What recording a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time this delivery id was seen; its event (if any) is queued.
    New,
    /// Seen before (an MLflow retry or a replay): nothing was written.
    Duplicate,
}

/// Records `delivery_id` and, in the same transaction, `event` for the worker. A delivery
/// id seen before writes nothing.
pub async fn record_delivery(
    db: &DatabaseConnection,
    delivery_id: &str,
    event: Option<NewEvent>,
) -> Result<Recorded, DbErr> {
    let txn = db.begin().await?;
    let now = Utc::now();
    let row = mlflow_deliveries::ActiveModel {
        delivery_id: Set(delivery_id.to_owned()),
        received_at: Set(now),
    };
    let inserted = mlflow_deliveries::Entity::insert(row)
        .on_conflict(
            OnConflict::column(mlflow_deliveries::Column::DeliveryId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    if inserted == 0 {
        txn.rollback().await?;
        return Ok(Recorded::Duplicate);
    }
    if let Some(event) = event {
        insert_event(&txn, delivery_id, event, now).await?;
    }
    txn.commit().await?;
    Ok(Recorded::New)
}

async fn insert_event<C: ConnectionTrait>(
    conn: &C,
    delivery_id: &str,
    event: NewEvent,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    mlflow_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        delivery_id: Set(delivery_id.to_owned()),
        event: Set(event.event),
        model_name: Set(event.model_name),
        version: Set(event.version),
        payload: Set(event.payload),
        received_at: Set(now),
        available_at: Set(now),
        attempts: Set(0),
        locked_until: Set(None),
        last_error: Set(None),
        processed_at: Set(None),
        outcome: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// Leases the oldest event that is due and not leased, for `lease`; its `attempts` counts
/// this one. Two workers never hold the same event: the lease is taken by a conditional
/// update that only one of them can win.
pub async fn lease_next_event(
    db: &DatabaseConnection,
    lease: Duration,
) -> Result<Option<MlflowEvent>, DbErr> {
    use mlflow_events::Column;
    let now = Utc::now();
    let free = Condition::any()
        .add(Column::LockedUntil.is_null())
        .add(Column::LockedUntil.lt(now));
    let candidates = mlflow_events::Entity::find()
        .filter(Column::ProcessedAt.is_null())
        .filter(Column::AvailableAt.lte(now))
        .filter(free.clone())
        .order_by_asc(Column::Id)
        .limit(8)
        .all(db)
        .await?;
    let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    for candidate in candidates {
        let taken = mlflow_events::Entity::update_many()
            .col_expr(Column::LockedUntil, Expr::value(until))
            .col_expr(Column::Attempts, Expr::value(candidate.attempts + 1))
            .filter(Column::Id.eq(candidate.id))
            .filter(Column::Attempts.eq(candidate.attempts))
            .filter(Column::ProcessedAt.is_null())
            .filter(free.clone())
            .exec(db)
            .await?;
        if taken.rows_affected == 1 {
            return mlflow_events::Entity::find_by_id(candidate.id)
                .one(db)
                .await;
        }
    }
    Ok(None)
}

/// Marks a leased event done with `outcome`.
pub async fn finish_event(db: &DatabaseConnection, id: Uuid, outcome: &str) -> Result<(), DbErr> {
    mlflow_events::Entity::update_many()
        .col_expr(mlflow_events::Column::ProcessedAt, Expr::value(Utc::now()))
        .col_expr(mlflow_events::Column::Outcome, Expr::value(outcome))
        .col_expr(
            mlflow_events::Column::LockedUntil,
            Expr::value(None::<DateTime<Utc>>),
        )
        .filter(mlflow_events::Column::Id.eq(id))
        .exec(db)
        .await
        .map(drop)
}

/// Releases a leased event to be tried again after `delay`, recording why it failed.
pub async fn retry_event(
    db: &DatabaseConnection,
    id: Uuid,
    delay: Duration,
    error: &str,
) -> Result<(), DbErr> {
    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    mlflow_events::Entity::update_many()
        .col_expr(mlflow_events::Column::AvailableAt, Expr::value(at))
        .col_expr(mlflow_events::Column::LastError, Expr::value(error))
        .col_expr(
            mlflow_events::Column::LockedUntil,
            Expr::value(None::<DateTime<Utc>>),
        )
        .filter(mlflow_events::Column::Id.eq(id))
        .exec(db)
        .await
        .map(drop)
}

/// Every event, oldest first (tests and operators).
pub async fn events(db: &DatabaseConnection) -> Result<Vec<MlflowEvent>, DbErr> {
    mlflow_events::Entity::find()
        .order_by_asc(mlflow_events::Column::Id)
        .all(db)
        .await
}

/// The claim of `model_name` version `version`, if any.
pub async fn claim_of<C: ConnectionTrait>(
    conn: &C,
    model_name: &str,
    version: &str,
) -> Result<Option<VersionClaim>, DbErr> {
    mlflow_version_claims::Entity::find_by_id((model_name.to_owned(), version.to_owned()))
        .one(conn)
        .await
}

/// Creates `new` (with its event and `command`) as the deployment of `model_name`
/// version `version` — only if no deployment claimed that version yet (`replacing: None`)
/// or the claim still names `replacing`. `None`: another deployment holds the version.
pub async fn create_for_version(
    db: &DatabaseConnection,
    route: Route,
    (model_name, version): (&str, &str),
    replacing: Option<Uuid>,
    new: NewDeployment,
    command: &Envelope,
) -> Result<Option<Deployment>, DbError> {
    let txn = db.begin().await?;
    let claimed = match replacing {
        None => insert_claim(&txn, model_name, version, new.id.0).await?,
        Some(old) => repoint_claim(&txn, model_name, version, old, new.id.0).await?,
    };
    if !claimed {
        txn.rollback().await?;
        return Ok(None);
    }
    let deployment = deployments::create(&txn, route, new, command).await?;
    txn.commit().await?;
    Ok(Some(deployment))
}

async fn insert_claim<C: ConnectionTrait>(
    conn: &C,
    model_name: &str,
    version: &str,
    deployment_id: Uuid,
) -> Result<bool, DbErr> {
    let now = Utc::now();
    let row = mlflow_version_claims::ActiveModel {
        model_name: Set(model_name.to_owned()),
        version: Set(version.to_owned()),
        deployment_id: Set(deployment_id),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let inserted = mlflow_version_claims::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                mlflow_version_claims::Column::ModelName,
                mlflow_version_claims::Column::Version,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(inserted == 1)
}

async fn repoint_claim<C: ConnectionTrait>(
    conn: &C,
    model_name: &str,
    version: &str,
    old: Uuid,
    new: Uuid,
) -> Result<bool, DbErr> {
    use mlflow_version_claims::Column;
    let updated = mlflow_version_claims::Entity::update_many()
        .col_expr(Column::DeploymentId, Expr::value(new))
        .col_expr(Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(Column::ModelName.eq(model_name))
        .filter(Column::Version.eq(version))
        .filter(Column::DeploymentId.eq(old))
        .exec(conn)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Where the follower `name` stands in `deployment_events`.
pub async fn cursor<C: ConnectionTrait>(conn: &C, name: &str) -> Result<Option<Uuid>, DbErr> {
    Ok(mlflow_sync_cursors::Entity::find_by_id(name.to_owned())
        .one(conn)
        .await?
        .map(|c| c.last_event_id))
}

/// Moves the follower `name` to `last_event_id`.
pub async fn save_cursor<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    last_event_id: Uuid,
) -> Result<(), DbErr> {
    let row = mlflow_sync_cursors::ActiveModel {
        name: Set(name.to_owned()),
        last_event_id: Set(last_event_id),
        updated_at: Set(Utc::now()),
    };
    mlflow_sync_cursors::Entity::insert(row)
        .on_conflict(
            OnConflict::column(mlflow_sync_cursors::Column::Name)
                .update_columns([
                    mlflow_sync_cursors::Column::LastEventId,
                    mlflow_sync_cursors::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await
        .map(drop)
}

/// Up to `limit` deployment events after `after` (all when `None`), oldest first, written
/// before `settled_before`: events younger than that may still have older-id siblings in
/// transactions not yet committed, so the follower waits for them to settle.
pub async fn events_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<Uuid>,
    settled_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<DeploymentEvent>, DbErr> {
    let mut query = deployment_events::Entity::find()
        .filter(deployment_events::Column::CreatedAt.lt(settled_before));
    if let Some(after) = after {
        query = query.filter(deployment_events::Column::Id.gt(after));
    }
    query
        .order_by_asc(deployment_events::Column::Id)
        .limit(limit)
        .all(conn)
        .await
}
