//! Operator actions on a model, each one transaction of row changes, events and commands:
//! [`undeploy`] the active deployment, and [`rollback`] to the previous version
//! (reactivated at once if it still runs, else redeployed from its recorded spec).

use std::time::Duration;

use sea_orm::{DatabaseConnection, TransactionTrait};
use serde_json::json;

use super::DbError;
use super::deployments::{self, Changes, Deployment, Filter, NewDeployment, Transition};
use super::outbox::{self, Route};
use crate::domain::{DeploymentId, DeploymentStatus, ModelId};
use crate::queue::{DEPLOYMENTS_QUEUE, Envelope, MessageKind};

/// Takes `active` out of service at once (`undeploying`, not active) and queues the delete.
pub async fn undeploy(
    db: &DatabaseConnection,
    route: Route,
    active: &Deployment,
) -> Result<Deployment, DbError> {
    let txn = db.begin().await?;
    let transition = Transition {
        to: DeploymentStatus::Undeploying,
        message: "operator requested undeploy".into(),
        details: Some(json!({"was_active": active.is_active})),
        changes: Changes {
            is_active: Some(false),
            ..Changes::default()
        },
    };
    let row = deployments::transition(&txn, active, transition).await?;
    let command = Envelope::new(MessageKind::Undeploy, DeploymentId(row.id), json!({}));
    outbox::enqueue(&txn, route, DEPLOYMENTS_QUEUE, &command, None).await?;
    txn.commit().await?;
    Ok(row)
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub enum Rollback {
    /// The previous version still ran and serves again.
    Reactivated(Deployment),
    /// The previous version was gone: a new deployment of its spec is on its way.
    Redeploying(Deployment),
}

/// Rolls `model` back to the version before the active one. `None` when there is none.
pub async fn rollback(
    db: &DatabaseConnection,
    route: Route,
    model: &ModelId,
    retire_after: Duration,
) -> Result<Option<Rollback>, DbError> {
    let filter = Filter {
        model_id: Some(model.clone()),
        limit: Some(1_000),
        ..Filter::default()
    };
    let history = deployments::list(db, &filter).await?;
    let active = history.iter().find(|d| d.is_active).cloned();
    let running = history
        .iter()
        .find(|d| d.status == DeploymentStatus::Deployed && !d.is_active)
        .cloned();
    if let Some(previous) = running {
        return reactivate(db, route, active, previous, retire_after)
            .await
            .map(|d| Some(Rollback::Reactivated(d)));
    }
    let active_version = active.as_ref().and_then(|a| a.model_version.clone());
    let gone = history.into_iter().find(|d| {
        d.deployed_at.is_some()
            && !d.is_active
            && (active_version.is_none() || d.model_version != active_version)
    });
    match gone {
        Some(previous) => redeploy(db, route, &previous)
            .await
            .map(|d| Some(Rollback::Redeploying(d))),
        None => Ok(None),
    }
}

async fn reactivate(
    db: &DatabaseConnection,
    route: Route,
    active: Option<Deployment>,
    previous: Deployment,
    retire_after: Duration,
) -> Result<Deployment, DbError> {
    let txn = db.begin().await?;
    if let Some(active) = &active {
        let message = format!("rolled back to deployment {}", previous.id);
        deployments::set_active(&txn, active, false, &message).await?;
        let retire = Envelope::new(MessageKind::Retire, DeploymentId(active.id), json!({}));
        outbox::enqueue(&txn, route, DEPLOYMENTS_QUEUE, &retire, Some(retire_after)).await?;
    }
    let row =
        deployments::set_active(&txn, &previous, true, "operator rollback: serving again").await?;
    txn.commit().await?;
    Ok(row)
}

async fn redeploy(
    db: &DatabaseConnection,
    route: Route,
    previous: &Deployment,
) -> Result<Deployment, DbError> {
    let new = copy_of(previous, "rollback_of")?;
    let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
    deployments::create(db, route, new, &command).await
}

/// A new deployment (new id, so a new endpoint) of `previous`'s recorded spec, its
/// metadata naming `previous` under `relation` (`rollback_of`, `replaces`).
pub fn copy_of(previous: &Deployment, relation: &str) -> Result<NewDeployment, DbError> {
    let mut metadata = previous.metadata.clone().unwrap_or_else(|| json!({}));
    if let Some(map) = metadata.as_object_mut() {
        // The copy's own relation only: a redeploy of a former replacement is no replacement.
        map.remove("rollback_of");
        map.remove("replaces");
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
