//! The intake: handles the webhook events the API recorded in `mlflow_events`, one at a
//! time per call ([`try_handle_one`], callable alone so tests drive it step by step).
//!
//! An event is leased, handled, and marked processed with its outcome. A transient failure
//! (MLflow down, database busy) releases it for a retry with backoff; after
//! [`MAX_ATTEMPTS`] it is closed as `gave_up` — reconciliation still finds a version tagged
//! `hokusai.deploy=true` that has no deployment.

use std::sync::Arc;
use std::time::Duration;

use shared::config::AutoDeploy;
use shared::db::DbError;
use shared::db::mlflow::{self as repo, MlflowEvent};
use shared::mlflow::{metadata, metrics};
use shared::runtime::{Backoff, Heartbeat, Shutdown};

use super::MlflowContext;
use super::versions::{self, HandleError};

/// How long a worker holds an event while handling it.
pub const LEASE: Duration = Duration::from_secs(120);
/// Attempts before an event is given up on.
pub const MAX_ATTEMPTS: i32 = 10;

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An event was handled (or released for a retry).
    Handled,
    /// No event was due.
    Empty,
}

/// How often the intake beats when healthy: an event's handling is bounded by the MLflow
/// client's timeouts and retries.
pub const PERIOD: Duration = Duration::from_secs(60);
/// Pause when no event is due.
const IDLE: Duration = Duration::from_millis(500);
/// Delays after database failures, and between an event's attempts (1 s doubling to 5 min).
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

/// Handles events until `shutdown`.
pub async fn run(ctx: Arc<MlflowContext>, heartbeat: Heartbeat, shutdown: Shutdown) {
    let mut failures = 0;
    while !shutdown.is_triggered() {
        let delay = match try_handle_one(&ctx).await {
            Ok(outcome) => {
                failures = 0;
                if outcome == Outcome::Handled {
                    Duration::ZERO
                } else {
                    IDLE
                }
            }
            Err(error) => {
                let delay = BACKOFF.delay(failures);
                failures += 1;
                tracing::warn!(%error, retry_in = ?delay, "MLflow intake: database unavailable");
                delay
            }
        };
        heartbeat.beat();
        if shutdown.sleep(delay).await {
            return;
        }
    }
}

/// Leases the next due event and handles it. A claim lost meanwhile (this worker stalled past
/// its lease and another took the event) writes nothing and is not an error of the loop.
pub async fn try_handle_one(ctx: &MlflowContext) -> Result<Outcome, DbError> {
    let Some((event, claim)) = repo::lease_next_event(&ctx.db, LEASE).await? else {
        return Ok(Outcome::Empty);
    };
    let version = event.version.as_deref();
    let settled = match handle(ctx, &event).await {
        Ok(outcome) => {
            metrics::intake(&event.event, &event.model_name, version, outcome);
            repo::finish_event(&ctx.db, &claim, outcome).await
        }
        Err(error) if error.is_transient() && event.attempts < MAX_ATTEMPTS => {
            let delay = BACKOFF.delay(u32::try_from(event.attempts - 1).unwrap_or(0));
            tracing::warn!(%error, retry_in = ?delay, event = %event.event, "MLflow event failed; will retry");
            repo::retry_event(&ctx.db, &claim, delay, &error.to_string()).await
        }
        Err(error) => {
            metrics::intake(&event.event, &event.model_name, version, "gave_up");
            tracing::warn!(%error, event = %event.event, "MLflow event given up");
            match repo::retry_event(&ctx.db, &claim, Duration::ZERO, &error.to_string()).await {
                Ok(()) => repo::finish_event(&ctx.db, &claim, "gave_up").await,
                Err(lost) => Err(lost),
            }
        }
    };
    match settled {
        Err(DbError::LostClaim(reason)) => {
            tracing::warn!(
                reason,
                "MLflow event: claim lost; its new holder settles it"
            );
            Ok(Outcome::Handled)
        }
        other => other.map(|()| Outcome::Handled),
    }
}

/// docs/contracts/mlflow.md: what each event does.
async fn handle(ctx: &MlflowContext, event: &MlflowEvent) -> Result<&'static str, HandleError> {
    let name = event.model_name.as_str();
    let Some(version) = event.version.as_deref() else {
        return Ok("no_version");
    };
    match event.event.as_str() {
        "model_version.created" | "model_version_tag.set" => {
            let facts = match metadata::fetch(&ctx.client, name, version).await {
                Ok(facts) => facts,
                Err(shared::mlflow::MlflowError::NotFound(_)) => return Ok("version_gone"),
                Err(other) => return Err(other.into()),
            };
            let everything =
                event.event == "model_version.created" && ctx.auto_deploy == AutoDeploy::All;
            if !(everything || facts.wants_deploy()) {
                return Ok("not_tagged");
            }
            versions::deploy_if_new(ctx, &facts).await
        }
        "model_version_alias.created" => versions::activate(ctx, name, version).await,
        _ => Ok("ignored"),
    }
}
