//! Reconciliation: the safety net under webhooks. MLflow drops a delivery for good after
//! three failed tries (listener down, network), so every `MLFLOW_RECONCILE_INTERVAL_SECONDS`
//! the worker searches the versions tagged `hokusai.deploy=true` (`model-versions/search`,
//! the dotted key backticked) and deploys those no deployment has claimed yet, through the
//! same path as the intake. Versions whose metadata cannot be deployed are re-examined
//! each pass (a fixed tag deploys them) without rewriting an unchanged rejection.
//!
//! Only version tags are searched: a registered-model tag deploys new versions as they are
//! created, but does not resurrect the model's old versions.

use shared::db::mlflow::claim_of;
use shared::mlflow::{metadata, metrics, tags};

use super::MlflowContext;
use super::versions::{self, HandleError};

/// What a pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Versions tagged for deployment.
    pub tagged: u64,
    /// Of those, deployments created now.
    pub deployed: u64,
    /// Of those, rejected (their reason is in MLflow).
    pub rejected: u64,
    /// Of those, failed to examine (retried next pass).
    pub failed: u64,
}

/// The search filter of versions asking to be deployed.
pub fn filter() -> String {
    format!("tags.`{}` = 'true'", tags::DEPLOY)
}

/// One pass over every page of tagged versions.
pub async fn reconcile_once(ctx: &MlflowContext) -> Result<Report, HandleError> {
    let mut report = Report::default();
    let mut page: Option<String> = None;
    loop {
        let (found, next) = ctx
            .client
            .search_versions(&filter(), page.as_deref())
            .await?;
        for version in found {
            report.tagged += 1;
            if claim_of(&ctx.db, &version.name, &version.version)
                .await?
                .is_some()
            {
                continue;
            }
            match reconcile_version(ctx, &version.name, &version.version).await {
                Ok("deployment_created") => report.deployed += 1,
                Ok("rejected") => report.rejected += 1,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, model_id = %version.name, version = %version.version,
                                   "reconciling a version failed");
                    report.failed += 1;
                }
            }
        }
        page = next;
        if page.is_none() {
            break;
        }
    }
    metrics::reconciled("deployed", report.deployed);
    metrics::reconciled("failed", report.failed);
    Ok(report)
}

async fn reconcile_version(
    ctx: &MlflowContext,
    name: &str,
    version: &str,
) -> Result<&'static str, HandleError> {
    let facts = metadata::fetch(&ctx.client, name, version).await?;
    if !facts.wants_deploy() {
        return Ok("not_tagged");
    }
    versions::deploy_if_new(ctx, &facts).await
}
