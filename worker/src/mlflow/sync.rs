//! Status sync: deployment state back to MLflow as model-version tags, decoupled from the
//! saga (which never waits on MLflow).
//!
//! The loop follows `deployment_events` — every transition, activation and provider
//! observation is one row there — after a cursor stored in `mlflow_sync_cursors`, so any
//! worker continues where another stopped. For each deployment touched since the cursor it
//! writes the row's *current* state (`hokusai.deployment.id`, `hokusai.endpoint_url`,
//! `hokusai.deployment.error`, `hokusai.deployment.rollout` for a version rolled out in steps,
//! then `hokusai.deployment.status` last, so a reader who sees
//! `deployed` also finds the URL). Writing current state makes the sync idempotent and
//! immune to skipped intermediate events. Events are read only once they are
//! [`SETTLE`] old, because event ids are taken before their transaction commits.
//!
//! Failures never block: the client retries each call; a write still failing is stored in
//! `mlflow_sync_retries` and tried again with backoff (1 s doubling to 5 min, at most
//! [`MAX_ATTEMPTS`] times) — across restarts and by whichever worker leads — and the cursor
//! moves on. Deployments without a model version, versions MLflow does not know, and
//! deployments that no longer hold their version's claim (replaced through the `production`
//! alias) are skipped.
//!
//! Only the leader runs it (the reconciler's lease, `Tasks::every` with the leadership
//! predicate), so each tag has one writer.

use std::time::Duration;

use sea_orm::DbErr;
use shared::db::deployments;
use shared::db::deployments::Deployment;
use shared::db::mlflow::{
    claim_of, clear_sync_retry, cursor, database_now, due_sync_retries, events_after,
    record_sync_failure, save_cursor,
};
use shared::domain::DeploymentId;
use shared::mlflow::{MlflowError, metrics, tags};
use shared::runtime::Backoff;
use uuid::Uuid;

use super::MlflowContext;
use super::versions::{HandleError, write_tags};

/// The cursor's name in `mlflow_sync_cursors`.
pub const CURSOR: &str = "mlflow_status_sync";
/// How old (by the database's clock) an event must be before the sync reads it.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How often the leader syncs.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Failed writes of one deployment before it is left to the next change of its state.
pub const MAX_ATTEMPTS: i32 = 20;
/// Delays between a deployment's failed writes.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
/// Events read per tick.
const BATCH: u64 = 500;
/// Stored retries taken per tick.
const RETRIES: u64 = 100;

/// One tick: writes the state of every deployment with settled events after the cursor and
/// of those whose stored retry is due, then moves the cursor. Returns how many deployments
/// were written.
pub async fn sync_once(ctx: &MlflowContext) -> Result<usize, DbErr> {
    let db = &ctx.db;
    let after = cursor(db, CURSOR).await?;
    let settled = database_now(db).await? - chrono::Duration::from_std(SETTLE).unwrap_or_default();
    let events = events_after(db, after, settled, BATCH).await?;
    let mut touched: Vec<Uuid> = due_sync_retries(db, RETRIES)
        .await?
        .into_iter()
        .map(|r| r.deployment_id)
        .collect();
    for event in &events {
        if !touched.contains(&event.deployment_id) {
            touched.push(event.deployment_id);
        }
    }
    let mut written = 0;
    for id in touched {
        match push(ctx, id).await {
            Ok(wrote) => {
                written += usize::from(wrote);
                clear_sync_retry(db, id).await?;
            }
            Err(error) if error.is_transient() => {
                let shown = error.to_string();
                let attempts = record_sync_failure(db, id, &shown, |failures| {
                    BACKOFF.delay(u32::try_from(failures - 1).unwrap_or(0))
                })
                .await?;
                if attempts >= MAX_ATTEMPTS {
                    tracing::warn!(deployment_id = %id, attempts, error = shown, "MLflow status sync: giving up on this deployment until its state changes again");
                    clear_sync_retry(db, id).await?;
                }
            }
            Err(_) => clear_sync_retry(db, id).await?,
        }
    }
    if let Some(last) = events.last() {
        save_cursor(db, CURSOR, last.id).await?;
    }
    Ok(written)
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
    let rollout = shared::db::rollouts::of_canary(&ctx.db, row.id).await?;
    let mut values = status_tags(&row);
    if let Some(rollout) = rollout {
        values.insert(
            values.len() - 1,
            (tags::ROLLOUT_STATE, rollout_tag(&rollout)),
        );
    }
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

/// The `hokusai.deployment.rollout` value: the rollout's strategy, state, step and weight.
fn rollout_tag(rollout: &shared::db::rollouts::Rollout) -> String {
    let spec = rollout.spec().ok();
    serde_json::json!({
        "strategy": spec.as_ref().map(|s| s.strategy.as_str()),
        "state": rollout.state,
        "step": rollout.step,
        "steps": spec.map(|s| s.steps),
        "weight": rollout.weight(),
    })
    .to_string()
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
