//! Status sync: deployment state back to MLflow as model-version tags, decoupled from the
//! saga (which never waits on MLflow).
//!
//! The loop follows `deployment_events` — every transition, activation and provider
//! observation is one row there — after a cursor stored in `mlflow_sync_cursors`, so any
//! worker continues where another stopped. For each deployment touched since the cursor it
//! writes the row's *current* state (`hokusai.deployment.id`, `hokusai.endpoint_url`,
//! `hokusai.deployment.error`, then `hokusai.deployment.status` last, so a reader who sees
//! `deployed` also finds the URL). Writing current state makes the sync idempotent and
//! immune to skipped intermediate events. Events are read only once they are
//! [`SETTLE`] old, because event ids are taken before their transaction commits.
//!
//! Failures never block: the client retries each call, a write still failing is counted
//! and its deployment kept for the next tick, and the cursor moves on. Deployments without
//! a model version, versions MLflow does not know, and deployments that no longer hold
//! their version's claim (replaced through the `production` alias) are skipped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::DbErr;
use shared::db::deployments::{self, Deployment};
use shared::db::mlflow::{claim_of, cursor, events_after, save_cursor};
use shared::domain::DeploymentId;
use shared::mlflow::{MlflowError, metrics, tags};
use tokio::sync::watch;
use uuid::Uuid;

use super::versions::{HandleError, write_tags};
use super::{MlflowContext, pause};

/// The cursor's name in `mlflow_sync_cursors`.
pub const CURSOR: &str = "mlflow_status_sync";
/// How old an event must be before the sync reads it.
pub const SETTLE: Duration = Duration::from_secs(2);
/// Events read per tick.
const BATCH: u64 = 500;
/// Deployments kept for retry at most (beyond that, reconciliation is the safety net).
const MAX_RETRY: usize = 1_000;

/// The follower and its retry set.
pub struct StatusSync {
    ctx: Arc<MlflowContext>,
    retry: BTreeSet<Uuid>,
}

/// Syncs every second until `stop` turns true.
pub async fn run(ctx: Arc<MlflowContext>, mut stop: watch::Receiver<bool>) {
    let mut sync = StatusSync::new(ctx);
    loop {
        if let Err(error) = sync.sync_once().await {
            tracing::warn!(%error, "MLflow status sync: database unavailable");
        }
        if pause(&mut stop, Duration::from_secs(1)).await {
            return;
        }
    }
}

impl StatusSync {
    /// A follower over `ctx`.
    pub fn new(ctx: Arc<MlflowContext>) -> Self {
        Self {
            ctx,
            retry: BTreeSet::new(),
        }
    }

    /// One tick: writes the state of every deployment with settled events after the cursor
    /// (and of those whose last write failed), then moves the cursor. Returns how many
    /// deployments were written.
    pub async fn sync_once(&mut self) -> Result<usize, DbErr> {
        let db = &self.ctx.db;
        let after = cursor(db, CURSOR).await?;
        let settled = Utc::now() - chrono::Duration::from_std(SETTLE).unwrap_or_default();
        let events = events_after(db, after, settled, BATCH).await?;
        let mut touched: Vec<Uuid> = std::mem::take(&mut self.retry).into_iter().collect();
        for event in &events {
            if !touched.contains(&event.deployment_id) {
                touched.push(event.deployment_id);
            }
        }
        let mut written = 0;
        for id in touched {
            match push(&self.ctx, id).await {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(error) if error.is_transient() && self.retry.len() < MAX_RETRY => {
                    self.retry.insert(id);
                }
                Err(_) => {}
            }
        }
        if let Some(last) = events.last() {
            save_cursor(db, CURSOR, last.id).await?;
        }
        Ok(written)
    }
}

/// Writes one deployment's state to its model version; `false` when it has none to write.
async fn push(ctx: &MlflowContext, id: Uuid) -> Result<bool, HandleError> {
    let Some(row) = deployments::get(&ctx.db, DeploymentId(id)).await? else {
        return Ok(false);
    };
    let Some(version) = row.model_version.clone() else {
        return Ok(false);
    };
    if let Some(claim) = claim_of(&ctx.db, &row.model_id, &version).await?
        && claim.deployment_id != row.id
    {
        return Ok(false);
    }
    let values = status_tags(&row);
    let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let written = write_tags(&ctx.client, &row.model_id, &version, &pairs).await;
    match written {
        Ok(()) => {
            metrics::tag_write(&row.model_id, &version, "written", None);
            Ok(true)
        }
        Err(MlflowError::NotFound(_)) => {
            metrics::tag_write(&row.model_id, &version, "not_in_mlflow", None);
            Ok(false)
        }
        Err(error) => {
            let shown = error.to_string();
            metrics::tag_write(&row.model_id, &version, "failed", Some(&shown));
            Err(error.into())
        }
    }
}

/// The tags describing `row`, status last.
fn status_tags(row: &Deployment) -> Vec<(&'static str, String)> {
    vec![
        (tags::DEPLOYMENT_ID, row.id.to_string()),
        (
            tags::ENDPOINT_URL,
            row.endpoint_url.clone().unwrap_or_default(),
        ),
        (tags::ERROR, row.error_message.clone().unwrap_or_default()),
        (tags::STATUS, row.status.as_str().to_owned()),
    ]
}
