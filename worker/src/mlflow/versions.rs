//! Acting on one model version: deploy it exactly once, write a rejection back, or make it
//! the active deployment of its model. Shared by the intake and the reconciliation.
//!
//! Exactly one deployment per version: the deployment is created in the transaction that
//! inserts the version's claim (`mlflow_version_claims`, primary key name + version), so
//! duplicate or reordered deliveries, reconciliation and concurrent workers cannot create
//! a second one. Only the `production` alias may replace a version's deployment, and only
//! one that can no longer serve (stopped, failed…): the claim is re-pointed conditionally.

use chrono::Utc;
use sea_orm::{DbErr, TransactionTrait};
use serde_json::json;
use shared::db::DbError;
use shared::db::deployments::{self, Deployment};
use shared::db::mlflow::{claim_of, create_for_version};
use shared::db::outbox;
use shared::domain::{DeploymentId, DeploymentStatus, ModelId};
use shared::mlflow::client::tag_value;
use shared::mlflow::metadata::{self, VersionFacts};
use shared::mlflow::webhook::PRODUCTION_ALIAS;
use shared::mlflow::{MlflowClient, MlflowError, metrics, tags};
use shared::queue::{DEPLOYMENTS_QUEUE, Envelope, MessageKind};
use shared::request::{Rejected, prepare};
use uuid::Uuid;

use super::MlflowContext;

/// Why acting on a version failed.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// MLflow failed or refused.
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
    /// The database failed (or the deployment changed concurrently).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<DbErr> for HandleError {
    fn from(error: DbErr) -> Self {
        Self::Db(DbError::Database(error))
    }
}

impl HandleError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Mlflow(error) => error.is_transient(),
            Self::Db(_) => true,
        }
    }
}

/// Deploys the version unless a deployment already claimed it.
pub async fn deploy_if_new(
    ctx: &MlflowContext,
    facts: &VersionFacts,
) -> Result<&'static str, HandleError> {
    let (name, version) = (&facts.version.name, &facts.version.version);
    if claim_of(&ctx.db, name, version).await?.is_some() {
        return Ok("already_deployed");
    }
    deploy(ctx, facts, None).await
}

/// Validates the version's metadata with [`prepare`] and creates its deployment (claiming
/// the version, or taking the claim over from `replacing`); a version that cannot be
/// deployed gets its rejection written back to MLflow instead.
pub async fn deploy(
    ctx: &MlflowContext,
    facts: &VersionFacts,
    replacing: Option<Uuid>,
) -> Result<&'static str, HandleError> {
    let (name, version) = (&facts.version.name, &facts.version.version);
    let prepared = metadata::describe(facts)
        .and_then(|request| prepare(request, &ctx.providers, &ctx.default_instance));
    let new = match prepared {
        Ok(new) => new,
        Err(Rejected(reason)) => {
            reject(&ctx.client, facts, &reason).await?;
            return Ok("rejected");
        }
    };
    let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
    let created = create_for_version(
        &ctx.db,
        ctx.route,
        (name, version),
        replacing,
        new,
        &command,
    )
    .await?;
    Ok(if created.is_some() {
        "deployment_created"
    } else {
        "already_deployed"
    })
}

/// Writes `hokusai.deployment.status=rejected` and the reason, unless the version already
/// says exactly that (reconciliation re-examines rejected versions every pass).
pub async fn reject(
    client: &MlflowClient,
    facts: &VersionFacts,
    reason: &str,
) -> Result<(), MlflowError> {
    let tags_now = &facts.version.tags;
    let (name, version) = (&facts.version.name, &facts.version.version);
    if tag_value(tags_now, tags::STATUS) == Some(tags::REJECTED)
        && tag_value(tags_now, tags::ERROR) == Some(reason)
    {
        return Ok(());
    }
    let written = write_tags(
        client,
        name,
        version,
        &[(tags::ERROR, reason), (tags::STATUS, tags::REJECTED)],
    )
    .await;
    let outcome = if written.is_ok() {
        "rejected"
    } else {
        "failed"
    };
    let error = written.as_ref().err().map(ToString::to_string);
    metrics::tag_write(name, version, outcome, error.as_deref());
    written
}

/// Sets `tags` on the version, in order (each call retried by the client).
pub async fn write_tags(
    client: &MlflowClient,
    name: &str,
    version: &str,
    tags: &[(&str, &str)],
) -> Result<(), MlflowError> {
    for (key, value) in tags {
        client.set_version_tag(name, version, key, value).await?;
    }
    Ok(())
}

/// Makes `version` the active deployment of `name` for the `production` alias: nothing if
/// it already is or is still deploying (the saga activates it when ready), a swap in one
/// transaction if it is deployed, a (re)deployment otherwise. Acts only while the alias
/// still points at `version`, so reordered alias events end on the alias's real target.
pub async fn activate(
    ctx: &MlflowContext,
    name: &str,
    version: &str,
) -> Result<&'static str, HandleError> {
    match ctx.client.alias_version(name, PRODUCTION_ALIAS).await? {
        Some(target) if target == version => {}
        Some(_) => return Ok("alias_moved"),
        None => return Ok("alias_gone"),
    }
    let Some(claim) = claim_of(&ctx.db, name, version).await? else {
        let facts = metadata::fetch(&ctx.client, name, version).await?;
        return deploy(ctx, &facts, None).await;
    };
    let row = deployments::get(&ctx.db, DeploymentId(claim.deployment_id)).await?;
    match row {
        Some(row) if row.status == DeploymentStatus::Deployed && row.is_active => {
            Ok("already_active")
        }
        Some(row) if row.status == DeploymentStatus::Deployed => {
            swap(ctx, &row, version).await?;
            Ok("activated")
        }
        Some(row)
            if matches!(
                row.status,
                DeploymentStatus::Pending | DeploymentStatus::Deploying
            ) =>
        {
            Ok("deploying")
        }
        _ => {
            let facts = metadata::fetch(&ctx.client, name, version).await?;
            deploy(ctx, &facts, Some(claim.deployment_id)).await
        }
    }
}

/// Deactivates the model's active deployment (its retirement scheduled after
/// `RETIRE_AFTER_SECONDS`) and activates `row`, in one transaction.
async fn swap(ctx: &MlflowContext, row: &Deployment, version: &str) -> Result<(), DbError> {
    let txn = ctx.db.begin().await?;
    // An activation is a model operation: the model's lock first (shared::db::model_ops).
    shared::db::model_ops::lock(&txn, &row.model_id, None).await?;
    let previous = match ModelId::parse(&row.model_id) {
        Ok(model) => deployments::find_active(&txn, &model).await?,
        Err(_) => None,
    };
    if let Some(previous) = previous.filter(|p| p.id != row.id) {
        let message = format!("MLflow alias production moved to version {version}");
        deployments::set_active(&txn, &previous, false, &message).await?;
        let retire = Envelope::new(MessageKind::Retire, DeploymentId(previous.id), json!({}));
        let delay = Some(ctx.retire_after);
        outbox::enqueue(&txn, ctx.route, DEPLOYMENTS_QUEUE, &retire, delay).await?;
    }
    let message = format!("MLflow alias production points at version {version}");
    deployments::set_active(&txn, row, true, &message).await?;
    txn.commit().await?;
    outbox::committed(ctx.route);
    tracing::info!(model_id = %row.model_id, version, at = %Utc::now(), "production alias activated");
    Ok(())
}
