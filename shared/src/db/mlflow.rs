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
use super::claim::{self, Claim};
use super::deployments::{self, Deployment, DeploymentEvent, NewDeployment};
use super::entities::{
    deployment_events, mlflow_deliveries, mlflow_events, mlflow_sync_cursors, mlflow_sync_retries,
    mlflow_version_claims,
};
use super::model_ops::Operation;
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
        claim_token: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(())
}

/// An event held by this worker's claim.
pub type EventClaim = Claim<mlflow_events::Entity>;

/// Leases the oldest event that is due and not leased, for `lease`; its `attempts` counts
/// this one. Two workers never hold the same event: the lease is a fenced claim
/// ([`super::claim`]) only one of them can win, and only its holder can finish or release it.
pub async fn lease_next_event(
    db: &DatabaseConnection,
    lease: Duration,
) -> Result<Option<(MlflowEvent, EventClaim)>, DbErr> {
    use mlflow_events::Column;
    let now = Utc::now();
    let candidates = mlflow_events::Entity::find()
        .filter(Column::ProcessedAt.is_null())
        .filter(Column::AvailableAt.lte(now))
        .filter(claim::free::<mlflow_events::Entity>(now))
        .order_by_asc(Column::Id)
        .limit(8)
        .all(db)
        .await?;
    for candidate in candidates {
        if let Some(claim) = claim::take(db, candidate.id, lease).await? {
            let event = mlflow_events::Entity::find_by_id(candidate.id)
                .one(db)
                .await?;
            return Ok(event.map(|e| (e, claim)));
        }
    }
    Ok(None)
}

/// Marks a leased event done with `outcome`; [`DbError::LostClaim`] when another worker claimed it
/// since (our lease ran out): nothing is written.
pub async fn finish_event(
    db: &DatabaseConnection,
    claim: &EventClaim,
    outcome: &str,
) -> Result<(), DbError> {
    let updated = claim
        .guard()
        .col_expr(mlflow_events::Column::ProcessedAt, Expr::value(Utc::now()))
        .col_expr(mlflow_events::Column::Outcome, Expr::value(outcome))
        .col_expr(
            mlflow_events::Column::LockedUntil,
            Expr::value(None::<DateTime<Utc>>),
        )
        .exec(db)
        .await?;
    lost_unless_one(updated.rows_affected, claim)
}

/// Releases a leased event to be tried again after `delay`, recording why it failed;
/// [`DbError::LostClaim`] when another worker claimed it since.
pub async fn retry_event(
    db: &DatabaseConnection,
    claim: &EventClaim,
    delay: Duration,
    error: &str,
) -> Result<(), DbError> {
    let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    let updated = claim
        .guard()
        .col_expr(mlflow_events::Column::AvailableAt, Expr::value(at))
        .col_expr(mlflow_events::Column::LastError, Expr::value(error))
        .col_expr(
            mlflow_events::Column::LockedUntil,
            Expr::value(None::<DateTime<Utc>>),
        )
        .exec(db)
        .await?;
    lost_unless_one(updated.rows_affected, claim)
}

fn lost_unless_one(rows: u64, claim: &EventClaim) -> Result<(), DbError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(DbError::LostClaim(format!(
            "MLflow event {} was claimed by another worker after our lease ran out",
            claim.id
        )))
    }
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
    // A deploy is a model operation (super::model_ops): the lock first, and older deploys
    // still provisioning give way to it.
    super::model_ops::lock(&txn, new.model_id.as_str(), None).await?;
    let claimed = match replacing {
        None => insert_claim(&txn, model_name, version, new.id.0).await?,
        Some(old) => repoint_claim(&txn, model_name, version, old, new.id.0).await?,
    };
    if !claimed {
        txn.rollback().await?;
        return Ok(None);
    }
    let (model, id) = (new.model_id.clone(), new.id.0);
    super::operations::supersede_provisioning(&txn, route, &model, Operation::Deploy, id).await?;
    let deployment = deployments::create(&txn, route, new, command).await?;
    txn.commit().await?;
    super::outbox::committed(route);
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

/// The database's clock now (PostgreSQL `clock_timestamp()`); on SQLite, which only `dev`'s
/// single process writes, this process's clock.
pub async fn database_now<C: ConnectionTrait>(conn: &C) -> Result<DateTime<Utc>, DbErr> {
    if conn.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return Ok(Utc::now());
    }
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT clock_timestamp() AS now",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("SELECT clock_timestamp() returned no row".into()))?;
    row.try_get::<DateTime<Utc>>("", "now")
}

/// Up to `limit` deployment events after the event `after` (all when `None`) in the order
/// `(created_at, id)`, written before `settled_before`. `created_at` is the **database's**
/// clock on PostgreSQL (the column's default, `clock_timestamp()` at insert), and the caller
/// passes [`database_now`] minus a settle window: an event whose transaction has not
/// committed yet is invisible now, so the follower reads only events old enough that every
/// transaction that could still add one before them has committed. No application clock is
/// involved, so skewed workers lose no event.
pub async fn events_after<C: ConnectionTrait>(
    conn: &C,
    after: Option<Uuid>,
    settled_before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<DeploymentEvent>, DbErr> {
    use deployment_events::Column;
    let mut query = deployment_events::Entity::find().filter(Column::CreatedAt.lt(settled_before));
    let last = match after {
        Some(id) => deployment_events::Entity::find_by_id(id).one(conn).await?,
        None => None,
    };
    if let Some(last) = last {
        query = query.filter(
            Condition::any()
                .add(Column::CreatedAt.gt(last.created_at))
                .add(
                    Condition::all()
                        .add(Column::CreatedAt.eq(last.created_at))
                        .add(Column::Id.gt(last.id)),
                ),
        );
    }
    query
        .order_by_asc(Column::CreatedAt)
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(conn)
        .await
}

/// Deployments whose MLflow write is due for another try, oldest first.
pub async fn due_sync_retries<C: ConnectionTrait>(
    conn: &C,
    limit: u64,
) -> Result<Vec<mlflow_sync_retries::Model>, DbErr> {
    use mlflow_sync_retries::Column;
    mlflow_sync_retries::Entity::find()
        .filter(Column::NextAttemptAt.lte(Utc::now()))
        .order_by_asc(Column::NextAttemptAt)
        .limit(limit)
        .all(conn)
        .await
}

/// Records a failed MLflow write of `deployment_id`'s state, to be tried again after
/// `delay(failures so far)`; returns the failures so far (this one included).
pub async fn record_sync_failure<C: ConnectionTrait>(
    conn: &C,
    deployment_id: Uuid,
    error: &str,
    delay: impl FnOnce(i32) -> Duration,
) -> Result<i32, DbErr> {
    use mlflow_sync_retries::Column;
    let now = Utc::now();
    let existing = mlflow_sync_retries::Entity::find_by_id(deployment_id)
        .one(conn)
        .await?;
    let attempts = existing.as_ref().map_or(0, |r| r.attempts) + 1;
    let next = now + chrono::Duration::from_std(delay(attempts)).unwrap_or(chrono::Duration::MAX);
    let row = mlflow_sync_retries::ActiveModel {
        deployment_id: Set(deployment_id),
        attempts: Set(attempts),
        next_attempt_at: Set(next),
        last_error: Set(Some(error.to_owned())),
        created_at: Set(existing.map_or(now, |r| r.created_at)),
    };
    mlflow_sync_retries::Entity::insert(row)
        .on_conflict(
            OnConflict::column(Column::DeploymentId)
                .update_columns([Column::Attempts, Column::NextAttemptAt, Column::LastError])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(attempts)
}

/// Forgets `deployment_id`'s pending retry (written, or given up).
pub async fn clear_sync_retry<C: ConnectionTrait>(
    conn: &C,
    deployment_id: Uuid,
) -> Result<(), DbErr> {
    mlflow_sync_retries::Entity::delete_by_id(deployment_id)
        .exec(conn)
        .await
        .map(drop)
}
