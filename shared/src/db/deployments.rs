//! Repository of deployments: creation with its first event and command, status transitions
//! under an optimistic lock, and the queries the API and the worker need.

use chrono::Utc;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, TransactionSession, TransactionTrait,
};
use serde_json::Value;
use uuid::Uuid;

use super::DbError;
use super::entities::{deployed_models, deployment_events};
use super::outbox;
use crate::domain::{DeploymentId, DeploymentStatus, ModelId};
use crate::queue::{DEPLOYMENTS_QUEUE, Envelope};

pub use super::transitions::{Changes, Transition, observe, set_active, transition};
pub use deployed_models::Model as Deployment;
pub use deployment_events::Model as DeploymentEvent;

/// What is known about a deployment when it is requested.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    /// Its id (chosen by the caller so commands can name it before the insert).
    pub id: DeploymentId,
    /// The model.
    pub model_id: ModelId,
    /// MLflow version.
    pub model_version: Option<String>,
    /// Provider name.
    pub provider: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance size.
    pub instance_size: Option<String>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Task.
    pub task: Option<String>,
    /// Framework.
    pub framework: Option<String>,
    /// HF repository.
    pub repository: Option<String>,
    /// Revision.
    pub revision: Option<String>,
    /// Free-form metadata.
    pub metadata: Option<Value>,
    /// Price per hour.
    pub hourly_cost_usd: Option<f64>,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency_key: Option<String>,
}

/// Creates a `pending` deployment, its `created` event and `command` (on `route`: the outbox,
/// or the embedded queue itself), in one transaction: all three exist afterwards, or none
/// does. `db` may itself be a transaction (the MLflow intake claims the model version in
/// the same one); the writes then commit with it.
pub async fn create<C: TransactionTrait>(
    db: &C,
    route: outbox::Route,
    new: NewDeployment,
    command: &Envelope,
) -> Result<Deployment, DbError> {
    let txn = db.begin().await?;
    let deployment = insert(&txn, new).await?;
    record_event(
        &txn,
        &deployment,
        "created",
        None,
        "deployment requested",
        None,
    )
    .await?;
    outbox::enqueue(&txn, route, DEPLOYMENTS_QUEUE, command, None).await?;
    txn.commit().await?;
    // Inside a caller's transaction this commits a savepoint: the caller calls it again.
    outbox::committed(route);
    Ok(deployment)
}

async fn insert<C: ConnectionTrait>(conn: &C, new: NewDeployment) -> Result<Deployment, DbError> {
    let now = Utc::now();
    let model_id = new.model_id.as_str().to_owned();
    deployed_models::ActiveModel {
        id: Set(new.id.0),
        model_id: Set(model_id.clone()),
        model_version: Set(new.model_version),
        provider: Set(new.provider),
        provider_model_id: Set(None),
        endpoint_url: Set(None),
        status: Set(DeploymentStatus::Pending),
        provider_status: Set(None),
        instance_type: Set(new.instance_type),
        instance_size: Set(new.instance_size),
        vendor: Set(new.vendor),
        region: Set(new.region),
        task: Set(new.task),
        framework: Set(new.framework),
        repository: Set(new.repository),
        revision: Set(new.revision),
        error_message: Set(None),
        metadata: Set(new.metadata),
        is_active: Set(false),
        hourly_cost_usd: Set(new.hourly_cost_usd),
        idempotency_key: Set(new.idempotency_key),
        accrued_cost_usd: Set(0.0),
        lock_version: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        deployed_at: Set(None),
        stopped_at: Set(None),
        last_prediction_at: Set(None),
        cost_month: Set(Some(crate::cost::month_key(now))),
        month_start_accrued_usd: Set(0.0),
    }
    .insert(conn)
    .await
    .map_err(|e| DbError::from_write(e, &model_id))
}

/// Appends an event to the deployment's log.
pub async fn record_event<C: ConnectionTrait>(
    conn: &C,
    deployment: &Deployment,
    kind: &str,
    from: Option<DeploymentStatus>,
    message: &str,
    details: Option<Value>,
) -> Result<DeploymentEvent, DbError> {
    let row = event_row(
        conn.get_database_backend(),
        deployment.id,
        deployment.status,
        kind,
        from,
        message,
        details,
    );
    Ok(row.insert(conn).await?)
}

/// The row [`record_event`] inserts into `backend` for deployment `id`, now in status `to`.
pub fn event_row(
    backend: sea_orm::DatabaseBackend,
    id: Uuid,
    to: DeploymentStatus,
    kind: &str,
    from: Option<DeploymentStatus>,
    message: &str,
    details: Option<Value>,
) -> deployment_events::ActiveModel {
    deployment_events::ActiveModel {
        id: Set(Uuid::now_v7()),
        deployment_id: Set(id),
        kind: Set(kind.to_owned()),
        from_status: Set(from.map(|s| s.as_str().to_owned())),
        to_status: Set(Some(to.as_str().to_owned())),
        message: Set(Some(message.to_owned())),
        details: Set(details),
        // PostgreSQL stamps the row itself (`clock_timestamp()`, the column's default), so
        // the MLflow status sync's cursor reads one clock whatever the writers' clocks say
        // (`db::mlflow::events_after`); SQLite has one writing process.
        created_at: if backend == sea_orm::DatabaseBackend::Postgres {
            sea_orm::ActiveValue::NotSet
        } else {
            Set(Utc::now())
        },
    }
}

/// One deployment.
pub async fn get<C: ConnectionTrait>(
    conn: &C,
    id: DeploymentId,
) -> Result<Option<Deployment>, DbError> {
    Ok(deployed_models::Entity::find_by_id(id.0).one(conn).await?)
}

/// One deployment and the deployment serving its model (itself when it serves), read in
/// one statement — what a saga step decides from: `id = $1 OR (is_active AND model_id =
/// (SELECT model_id … WHERE id = $1))`, two index lookups on both databases (the primary
/// key and the one-active index). The serving row is as of the read: a commit that acts on
/// it is guarded by its `lock_version` and the one-active index.
pub async fn get_with_active<C: ConnectionTrait>(
    conn: &C,
    id: DeploymentId,
) -> Result<Option<(Deployment, Option<Deployment>)>, DbError> {
    use deployed_models::Column;
    use sea_orm::sea_query::{Condition, Expr, ExprTrait, Query};
    let model_of = Query::select()
        .column(Column::ModelId)
        .from(deployed_models::Entity)
        .and_where(Column::Id.eq(id.0))
        .to_owned();
    let mut rows = deployed_models::Entity::find()
        .filter(
            Condition::any().add(Column::Id.eq(id.0)).add(
                Condition::all()
                    .add(Column::IsActive.eq(true))
                    .add(Expr::col(Column::ModelId).eq(Expr::from(model_of))),
            ),
        )
        // The deployment and at most one serving row (the one-active index).
        .limit(2)
        .all(conn)
        .await?;
    let Some(at) = rows.iter().position(|row| row.id == id.0) else {
        return Ok(None);
    };
    let deployment = rows.swap_remove(at);
    let active = match rows.pop() {
        Some(other) => Some(other),
        None => deployment.is_active.then(|| deployment.clone()),
    };
    Ok(Some((deployment, active)))
}

/// The deployment serving `model_id`, if any.
pub async fn find_active<C: ConnectionTrait>(
    conn: &C,
    model_id: &ModelId,
) -> Result<Option<Deployment>, DbError> {
    Ok(deployed_models::Entity::find()
        .filter(deployed_models::Column::ModelId.eq(model_id.as_str()))
        .filter(deployed_models::Column::IsActive.eq(true))
        .one(conn)
        .await?)
}

/// The deployment of `model_id` created by the request with `Idempotency-Key` `key`, if
/// any: one lookup in the unique index `(model_id, idempotency_key)`, however many
/// deployments the model has had.
pub async fn find_by_idempotency_key<C: ConnectionTrait>(
    conn: &C,
    model_id: &ModelId,
    key: &str,
) -> Result<Option<Deployment>, DbError> {
    Ok(deployed_models::Entity::find()
        .filter(deployed_models::Column::ModelId.eq(model_id.as_str()))
        .filter(deployed_models::Column::IdempotencyKey.eq(key))
        .one(conn)
        .await?)
}

/// Filters of [`list`]; unset fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this model.
    pub model_id: Option<ModelId>,
    /// Only this status.
    pub status: Option<DeploymentStatus>,
    /// Only this provider.
    pub provider: Option<String>,
    /// At most this many rows (default 100).
    pub limit: Option<u64>,
}

/// Deployments, newest first.
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    filter: &Filter,
) -> Result<Vec<Deployment>, DbError> {
    let mut query = deployed_models::Entity::find();
    if let Some(model_id) = &filter.model_id {
        query = query.filter(deployed_models::Column::ModelId.eq(model_id.as_str()));
    }
    if let Some(status) = filter.status {
        query = query.filter(deployed_models::Column::Status.eq(status));
    }
    if let Some(provider) = &filter.provider {
        query = query.filter(deployed_models::Column::Provider.eq(provider.as_str()));
    }
    Ok(query
        .order_by_desc(deployed_models::Column::CreatedAt)
        .order_by_desc(deployed_models::Column::Id)
        .limit(filter.limit.unwrap_or(100).min(i64::MAX as u64))
        .all(conn)
        .await?)
}

/// One deployment per model among those `filter` matches: the model's active one, else its
/// newest; ordered by model id, at most `filter.limit` models (default 100). One query, the
/// choice made by the database (`ROW_NUMBER() OVER (PARTITION BY model_id …)`), however many
/// deployments each model has.
pub async fn per_model<C: ConnectionTrait>(
    conn: &C,
    filter: &Filter,
) -> Result<Vec<Deployment>, DbError> {
    use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Order, Query};
    const RANK: &str = "representative_rank";
    let mut ranked = Query::select();
    ranked
        .column(Asterisk)
        .expr_as(
            Expr::cust(
                "ROW_NUMBER() OVER (PARTITION BY model_id \
                 ORDER BY is_active DESC, created_at DESC, id DESC)",
            ),
            Alias::new(RANK),
        )
        .from(deployed_models::Entity);
    if let Some(model_id) = &filter.model_id {
        ranked.and_where(deployed_models::Column::ModelId.eq(model_id.as_str()));
    }
    if let Some(status) = filter.status {
        ranked.and_where(deployed_models::Column::Status.eq(status));
    }
    if let Some(provider) = &filter.provider {
        ranked.and_where(deployed_models::Column::Provider.eq(provider.as_str()));
    }
    let mut representatives = Query::select();
    representatives
        .column(Asterisk)
        .from_subquery(ranked, Alias::new("ranked"))
        .and_where(ExprTrait::eq(Expr::col(Alias::new(RANK)), 1))
        .order_by(Alias::new("model_id"), Order::Asc)
        .limit(filter.limit.unwrap_or(100));
    let statement = conn.get_database_backend().build(&representatives);
    Ok(deployed_models::Entity::find()
        .from_raw_sql(statement)
        .all(conn)
        .await?)
}

/// The deployment's event log, oldest first.
pub async fn events<C: ConnectionTrait>(
    conn: &C,
    id: DeploymentId,
) -> Result<Vec<DeploymentEvent>, DbError> {
    Ok(deployment_events::Entity::find()
        .filter(deployment_events::Column::DeploymentId.eq(id.0))
        .order_by_asc(deployment_events::Column::CreatedAt)
        .order_by_asc(deployment_events::Column::Id)
        .all(conn)
        .await?)
}

/// Records when deployments last answered a prediction (`last_prediction_at` only moves
/// forward). Touches neither `updated_at` nor `lock_version`: it is no state change and must
/// not make a concurrent transition stale.
pub async fn record_predictions<C: ConnectionTrait>(
    conn: &C,
    notes: &[(Uuid, chrono::DateTime<Utc>)],
) -> Result<(), DbError> {
    for (id, at) in notes {
        deployed_models::Entity::update_many()
            .col_expr(
                deployed_models::Column::LastPredictionAt,
                sea_orm::sea_query::Expr::value(*at),
            )
            .filter(deployed_models::Column::Id.eq(*id))
            .filter(
                sea_orm::Condition::any()
                    .add(deployed_models::Column::LastPredictionAt.is_null())
                    .add(deployed_models::Column::LastPredictionAt.lt(*at)),
            )
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// Deployments that are not finished (`pending`, `deploying`, `deployed`, `undeploying`,
/// `rolling_back`), oldest first, at most `limit`: the reconciler's working set.
pub async fn list_live<C: ConnectionTrait>(
    conn: &C,
    limit: u64,
) -> Result<Vec<Deployment>, DbError> {
    use DeploymentStatus::*;
    Ok(deployed_models::Entity::find()
        .filter(deployed_models::Column::Status.is_in([
            Pending,
            Deploying,
            Deployed,
            Undeploying,
            RollingBack,
        ]))
        .order_by_asc(deployed_models::Column::CreatedAt)
        .limit(limit)
        .all(conn)
        .await?)
}

/// The time of the latest event of each of `ids` (of `kind` only, when given).
pub async fn last_event_at<C: ConnectionTrait>(
    conn: &C,
    ids: &[Uuid],
    kind: Option<&str>,
) -> Result<std::collections::HashMap<Uuid, chrono::DateTime<Utc>>, DbError> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        let mut query = deployment_events::Entity::find()
            .select_only()
            .column(deployment_events::Column::DeploymentId)
            .column_as(deployment_events::Column::CreatedAt.max(), "at")
            .filter(deployment_events::Column::DeploymentId.is_in(chunk.iter().copied()))
            .group_by(deployment_events::Column::DeploymentId);
        if let Some(kind) = kind {
            query = query.filter(deployment_events::Column::Kind.eq(kind));
        }
        let rows: Vec<(Uuid, chrono::DateTime<Utc>)> = query.into_tuple().all(conn).await?;
        out.extend(rows);
    }
    Ok(out)
}

/// How many events of `kind` the deployment has.
pub async fn count_events<C: ConnectionTrait>(
    conn: &C,
    id: DeploymentId,
    kind: &str,
) -> Result<u64, DbError> {
    use sea_orm::PaginatorTrait;
    Ok(deployment_events::Entity::find()
        .filter(deployment_events::Column::DeploymentId.eq(id.0))
        .filter(deployment_events::Column::Kind.eq(kind))
        .count(conn)
        .await?)
}

/// The deployment whose endpoint is recorded as `name`, if any.
pub async fn find_by_endpoint<C: ConnectionTrait>(
    conn: &C,
    provider: &str,
    name: &str,
) -> Result<Option<Deployment>, DbError> {
    Ok(deployed_models::Entity::find()
        .filter(deployed_models::Column::Provider.eq(provider))
        .filter(deployed_models::Column::ProviderModelId.eq(name))
        .one(conn)
        .await?)
}

/// Why a model without an active deployment does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotServing {
    /// Its serving deployment's endpoint was lost; this replacement is on its way.
    Replacing(Uuid),
    /// Its last serving deployment's endpoint was lost and nothing replaces it.
    Lost(Uuid),
    /// It is not deployed (never, or undeployed).
    NotDeployed,
}

/// Why `model`, which has no active deployment, does not serve: a replacement of a lost
/// deployment in flight (metadata `replaces`), else whether the once-serving deployment
/// that changed last ended through a lost endpoint (`rolling_back` or `failed` after
/// having been `deployed`; an operator's undeploy ends `stopped`, which answers 404).
pub async fn why_not_serving<C: ConnectionTrait>(
    conn: &C,
    model: &ModelId,
) -> Result<NotServing, DbError> {
    let in_flight = deployed_models::Entity::find()
        .filter(deployed_models::Column::ModelId.eq(model.as_str()))
        .filter(
            deployed_models::Column::Status
                .is_in([DeploymentStatus::Pending, DeploymentStatus::Deploying]),
        )
        .limit(100)
        .all(conn)
        .await?;
    if let Some(replacement) = in_flight.into_iter().find(|d| {
        d.metadata
            .as_ref()
            .is_some_and(|m| m.get("replaces").is_some())
    }) {
        return Ok(NotServing::Replacing(replacement.id));
    }
    let last_served = deployed_models::Entity::find()
        .filter(deployed_models::Column::ModelId.eq(model.as_str()))
        .filter(deployed_models::Column::DeployedAt.is_not_null())
        .order_by_desc(deployed_models::Column::UpdatedAt)
        .one(conn)
        .await?;
    Ok(match last_served {
        Some(d)
            if matches!(
                d.status,
                DeploymentStatus::RollingBack | DeploymentStatus::Failed
            ) =>
        {
            NotServing::Lost(d.id)
        }
        _ => NotServing::NotDeployed,
    })
}

/// `current` as read, if nobody changed it since (same `lock_version`); else
/// [`DbError::StaleTransition`]. For writes that depend on the row without changing it.
pub async fn unchanged<C: ConnectionTrait>(
    conn: &C,
    current: &Deployment,
) -> Result<Deployment, DbError> {
    let id = DeploymentId(current.id);
    match get(conn, id).await? {
        Some(now) if now.lock_version == current.lock_version => Ok(now),
        Some(_) => Err(DbError::StaleTransition {
            id,
            expected: current.lock_version,
        }),
        None => Err(DbError::NotFound(id)),
    }
}
