//! Operations on a model, each one transaction of row changes, events and commands taken
//! under the model's operation lock ([`model_ops::lock`]): [`deploy`] a version, [`undeploy`]
//! the active deployment, and [`rollback`] to the previous version (reactivated at once if it
//! still runs, else redeployed from its recorded spec).
//!
//! Under the lock each one reads the model as the last committed operation left it and
//! decides by the rules of docs/design/domain.md ("Concurrent operations on one model"):
//! a rollback or an undeploy while an undeploy or a rollback is in flight is refused
//! ([`DbError::OperationInFlight`]); an identical deploy while one is in flight answers that
//! one; and every accepted operation **supersedes** the deploys still provisioning (they are
//! compensated and never take traffic after it). Every answer carries the model's version
//! (its `ETag`).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use serde_json::json;
use uuid::Uuid;

use super::DbError;
use super::deployments::{self, Changes, Deployment, Filter, NewDeployment, Transition};
use super::model_ops::{self, Locked, Operation};
use super::outbox::{self, Route};
use crate::domain::{DeploymentId, DeploymentStatus, ModelId};
use crate::queue::{DEPLOYMENTS_QUEUE, Envelope, MessageKind};

/// What an operation did, with the model's version after it (its `ETag`).
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// What was done.
    pub value: T,
    /// The model's version now.
    pub version: i64,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub enum Deployed {
    /// A new deployment is pending.
    Created(Deployment),
    /// An identical deployment was already in flight: that one (nothing written).
    InFlight(Deployment),
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub enum Rollback {
    /// The previous version still ran and serves again.
    Reactivated(Deployment),
    /// The previous version was gone: a new deployment of its spec is on its way.
    Redeploying(Deployment),
}

/// Statuses of a deployment still on its way to serving.
const PROVISIONING: [DeploymentStatus; 2] =
    [DeploymentStatus::Pending, DeploymentStatus::Deploying];

/// The model's deployments, newest first, as this transaction sees them.
async fn history<C: ConnectionTrait>(
    conn: &C,
    model: &ModelId,
) -> Result<Vec<Deployment>, DbError> {
    let filter = Filter {
        model_id: Some(model.clone()),
        limit: Some(1_000),
        ..Filter::default()
    };
    deployments::list(conn, &filter).await
}

/// Refuses a rollback or an undeploy while the last undeploy or rollback is in flight.
fn refuse_beside_in_flight(locked: &Locked, history: &[Deployment]) -> Result<(), DbError> {
    let Some((operation, Some(deployment))) = &locked.last else {
        return Ok(());
    };
    if operation != Operation::Undeploy.as_str() && operation != Operation::Rollback.as_str() {
        return Ok(());
    }
    let in_flight = history.iter().any(|d| {
        d.id == *deployment
            && (PROVISIONING.contains(&d.status) || d.status == DeploymentStatus::Undeploying)
    });
    if in_flight {
        return Err(DbError::OperationInFlight {
            operation: operation.clone(),
            deployment: *deployment,
        });
    }
    Ok(())
}

/// [`supersede`] for a caller outside this module (a heal's replacement, an activation by
/// the MLflow alias): reads the model's deployments itself. Take [`model_ops::lock`] first.
pub async fn supersede_provisioning(
    txn: &DatabaseTransaction,
    route: Route,
    model: &ModelId,
    by: Operation,
    by_id: Uuid,
) -> Result<(), DbError> {
    let history = history(txn, model).await?;
    supersede(txn, route, &history, None, by.as_str(), by_id).await
}

/// Compensates every deploy of the model still provisioning (but `keep`): it goes to
/// `rolling_back` with a `superseded` event naming `by`, and the worker deletes whatever it
/// created. It can never take traffic after the operation that superseded it.
async fn supersede(
    txn: &DatabaseTransaction,
    route: Route,
    history: &[Deployment],
    keep: Option<Uuid>,
    by: &str,
    by_id: Uuid,
) -> Result<(), DbError> {
    for older in history
        .iter()
        .filter(|d| PROVISIONING.contains(&d.status) && Some(d.id) != keep && d.id != by_id)
    {
        let reason = format!("superseded by the {by} of deployment {by_id}");
        let transition = Transition {
            to: DeploymentStatus::RollingBack,
            message: reason.clone(),
            details: Some(json!({"superseded_by": by_id, "operation": by})),
            changes: Changes {
                error_message: Some(Some(reason)),
                ..Changes::default()
            },
        };
        let row = deployments::transition(txn, older, transition).await?;
        deployments::record_event(
            txn,
            &row,
            "superseded",
            None,
            &format!("{by} {by_id} is newer"),
            Some(json!({"superseded_by": by_id})),
        )
        .await?;
        let check = Envelope::new(MessageKind::CheckStatus, DeploymentId(row.id), json!({}));
        outbox::enqueue(txn, route, DEPLOYMENTS_QUEUE, &check, None).await?;
    }
    Ok(())
}

/// Whether `row` asks for the same thing as `new` (model, version and spec).
fn same_request(row: &Deployment, new: &NewDeployment) -> bool {
    let spec =
        |m: &Option<serde_json::Value>, key: &str| m.as_ref().and_then(|m| m.get(key)).cloned();
    row.model_version == new.model_version
        && row.provider == new.provider
        && row.instance_type == new.instance_type
        && row.instance_size == new.instance_size
        && row.vendor == new.vendor
        && row.region == new.region
        && row.task == new.task
        && row.framework == new.framework
        && row.repository == new.repository
        && row.revision == new.revision
        && spec(&row.metadata, "scaling") == spec(&new.metadata, "scaling")
        && spec(&row.metadata, "endpoint_url") == spec(&new.metadata, "endpoint_url")
}

/// Tries of an operation whose transaction lost a race the model's lock does not cover (a
/// worker step changed a row it read, without the lock): each try reads everything again.
const TRIES: usize = 3;

/// Runs `attempt` again (up to [`TRIES`]) while its transaction lost such a race.
async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, DbError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, DbError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(DbError::StaleTransition { .. } | DbError::ActiveConflict(_)) if tries < TRIES => {}
            outcome => return outcome,
        }
    }
}

/// Deploys `new` (its `command` queued with it): an identical deploy already in flight is
/// answered instead; older deploys still provisioning are superseded.
pub async fn deploy(
    db: &DatabaseConnection,
    route: Route,
    new: NewDeployment,
    command: &Envelope,
    if_match: Option<i64>,
) -> Result<Versioned<Deployed>, DbError> {
    retrying(|| deploy_once(db, route, new.clone(), command, if_match)).await
}

async fn deploy_once(
    db: &DatabaseConnection,
    route: Route,
    new: NewDeployment,
    command: &Envelope,
    if_match: Option<i64>,
) -> Result<Versioned<Deployed>, DbError> {
    let txn = db.begin().await?;
    let locked = model_ops::lock(&txn, new.model_id.as_str(), if_match).await?;
    let history = history(&txn, &new.model_id).await?;
    if let Some(same) = history
        .iter()
        .find(|d| PROVISIONING.contains(&d.status) && same_request(d, &new))
    {
        txn.rollback().await?;
        return Ok(Versioned {
            value: Deployed::InFlight(same.clone()),
            version: locked.previous,
        });
    }
    let id = new.id.0;
    supersede(&txn, route, &history, None, Operation::Deploy.as_str(), id).await?;
    let created = deployments::create(&txn, route, new, command).await?;
    txn.commit().await?;
    outbox::committed(route);
    Ok(Versioned {
        value: Deployed::Created(created),
        version: locked.version,
    })
}

/// Takes the model's active deployment out of service at once (`undeploying`, not active) and
/// queues the delete; deploys still provisioning are superseded. `None` when nothing is
/// active.
pub async fn undeploy(
    db: &DatabaseConnection,
    route: Route,
    model: &ModelId,
    if_match: Option<i64>,
) -> Result<Option<Versioned<Deployment>>, DbError> {
    retrying(|| undeploy_once(db, route, model, if_match)).await
}

async fn undeploy_once(
    db: &DatabaseConnection,
    route: Route,
    model: &ModelId,
    if_match: Option<i64>,
) -> Result<Option<Versioned<Deployment>>, DbError> {
    let txn = db.begin().await?;
    let locked = model_ops::lock(&txn, model.as_str(), if_match).await?;
    let history = history(&txn, model).await?;
    refuse_beside_in_flight(&locked, &history)?;
    let Some(active) = history.iter().find(|d| d.is_active).cloned() else {
        txn.rollback().await?;
        return Ok(None);
    };
    supersede(
        &txn,
        route,
        &history,
        None,
        Operation::Undeploy.as_str(),
        active.id,
    )
    .await?;
    let transition = Transition {
        to: DeploymentStatus::Undeploying,
        message: "operator requested undeploy".into(),
        details: Some(json!({"was_active": active.is_active})),
        changes: Changes {
            is_active: Some(false),
            ..Changes::default()
        },
    };
    let row = deployments::transition(&txn, &active, transition).await?;
    let command = Envelope::new(MessageKind::Undeploy, DeploymentId(row.id), json!({}));
    outbox::enqueue(&txn, route, DEPLOYMENTS_QUEUE, &command, None).await?;
    model_ops::record(&txn, model.as_str(), Operation::Undeploy, row.id).await?;
    txn.commit().await?;
    outbox::committed(route);
    Ok(Some(Versioned {
        value: row,
        version: locked.version,
    }))
}

/// Rolls `model` back to the version before the active one. `None` when there is none.
pub async fn rollback(
    db: &DatabaseConnection,
    route: Route,
    model: &ModelId,
    retire_after: Duration,
    if_match: Option<i64>,
) -> Result<Option<Versioned<Rollback>>, DbError> {
    retrying(|| rollback_once(db, route, model, retire_after, if_match)).await
}

async fn rollback_once(
    db: &DatabaseConnection,
    route: Route,
    model: &ModelId,
    retire_after: Duration,
    if_match: Option<i64>,
) -> Result<Option<Versioned<Rollback>>, DbError> {
    let txn = db.begin().await?;
    let locked = model_ops::lock(&txn, model.as_str(), if_match).await?;
    // Under the lock, so a canary that became ready since the caller looked is seen: its
    // rollout ends by promote or abort, never by a rollback that would activate it.
    if let Some(open) = super::rollouts::open_for(&txn, model.as_str()).await? {
        return Err(DbError::OperationInFlight {
            operation: "rollout".into(),
            deployment: open.canary_id,
        });
    }
    let history = history(&txn, model).await?;
    refuse_beside_in_flight(&locked, &history)?;
    let active = history.iter().find(|d| d.is_active).cloned();
    let running = history
        .iter()
        .find(|d| d.status == DeploymentStatus::Deployed && !d.is_active)
        .cloned();
    let done = if let Some(previous) = running {
        supersede(
            &txn,
            route,
            &history,
            None,
            Operation::Rollback.as_str(),
            previous.id,
        )
        .await?;
        let row = reactivate(&txn, route, active, previous, retire_after).await?;
        Rollback::Reactivated(row)
    } else {
        let active_version = active.as_ref().and_then(|a| a.model_version.clone());
        let gone = history.iter().find(|d| {
            d.deployed_at.is_some()
                && !d.is_active
                && (active_version.is_none() || d.model_version != active_version)
        });
        let Some(previous) = gone else {
            txn.rollback().await?;
            return Ok(None);
        };
        let new = copy_of(previous, "rollback_of")?;
        supersede(
            &txn,
            route,
            &history,
            None,
            Operation::Rollback.as_str(),
            new.id.0,
        )
        .await?;
        let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
        Rollback::Redeploying(deployments::create(&txn, route, new, &command).await?)
    };
    let id = match &done {
        Rollback::Reactivated(d) | Rollback::Redeploying(d) => d.id,
    };
    model_ops::record(&txn, model.as_str(), Operation::Rollback, id).await?;
    txn.commit().await?;
    outbox::committed(route);
    Ok(Some(Versioned {
        value: done,
        version: locked.version,
    }))
}

async fn reactivate(
    txn: &DatabaseTransaction,
    route: Route,
    active: Option<Deployment>,
    previous: Deployment,
    retire_after: Duration,
) -> Result<Deployment, DbError> {
    if let Some(active) = &active {
        let message = format!("rolled back to deployment {}", previous.id);
        deployments::set_active(txn, active, false, &message).await?;
        let retire = Envelope::new(MessageKind::Retire, DeploymentId(active.id), json!({}));
        outbox::enqueue(txn, route, DEPLOYMENTS_QUEUE, &retire, Some(retire_after)).await?;
    }
    deployments::set_active(txn, &previous, true, "operator rollback: serving again").await
}

/// A new deployment (new id, so a new endpoint) of `previous`'s recorded spec, its
/// metadata naming `previous` under `relation` (`rollback_of`, `replaces`).
pub fn copy_of(previous: &Deployment, relation: &str) -> Result<NewDeployment, DbError> {
    let mut metadata = previous.metadata.clone().unwrap_or_else(|| json!({}));
    if let Some(map) = metadata.as_object_mut() {
        // The copy's own relation only: a redeploy of a former replacement is no replacement.
        map.remove("rollback_of");
        map.remove("replaces");
        // A rollback or a heal takes over at once: the version's rollout was its first way in.
        map.remove(crate::request::ROLLOUT_KEY);
        map.insert(relation.into(), json!(previous.id));
    }
    Ok(NewDeployment {
        id: DeploymentId::new(),
        model_id: ModelId::parse(&previous.model_id)
            .map_err(|e| DbError::Database(sea_orm::DbErr::Custom(e.to_string())))?,
        model_version: previous.model_version.clone(),
        provider: previous.provider.clone(),
        instance_type: previous.instance_type.clone(),
        instance_size: previous.instance_size.clone(),
        vendor: previous.vendor.clone(),
        region: previous.region.clone(),
        task: previous.task.clone(),
        framework: previous.framework.clone(),
        repository: previous.repository.clone(),
        revision: previous.revision.clone(),
        metadata: Some(metadata),
        hourly_cost_usd: previous.hourly_cost_usd,
        idempotency_key: None,
    })
}
