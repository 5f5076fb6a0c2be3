//! The intake: handles the webhook events the API recorded in `mlflow_events`, one at a
//! time per call ([`try_handle_one`], callable alone so tests drive it step by step).
//!
//! An event is leased, handled, and marked processed with its outcome. A transient failure
//! (MLflow down, database busy) releases it for a retry with backoff; after
//! [`MAX_ATTEMPTS`] it is closed as `gave_up` — reconciliation still finds a version tagged
//! `hokusai.deploy=true` that has no deployment.

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DbErr;
use shared::config::AutoDeploy;
use shared::db::mlflow::{self as repo, MlflowEvent};
use shared::mlflow::{metadata, metrics};
use tokio::sync::watch;

use super::versions::{self, HandleError};
use super::{MlflowContext, pause};

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

/// Handles events until `stop` turns true.
pub async fn run(ctx: Arc<MlflowContext>, mut stop: watch::Receiver<bool>) {
    loop {
        let delay = match try_handle_one(&ctx).await {
            Ok(Outcome::Handled) => Duration::ZERO,
            Ok(Outcome::Empty) => Duration::from_millis(500),
            Err(error) => {
                tracing::warn!(%error, "MLflow intake: database unavailable; retrying in 1 s");
                Duration::from_secs(1)
            }
        };
        if pause(&mut stop, delay).await {
            return;
        }
    }
}

/// Leases the next due event and handles it.
pub async fn try_handle_one(ctx: &MlflowContext) -> Result<Outcome, DbErr> {
    let Some(event) = repo::lease_next_event(&ctx.db, LEASE).await? else {
        return Ok(Outcome::Empty);
    };
    let version = event.version.as_deref();
    match handle(ctx, &event).await {
        Ok(outcome) => {
            metrics::intake(&event.event, &event.model_name, version, outcome);
            repo::finish_event(&ctx.db, event.id, outcome).await?;
        }
        Err(error) if error.is_transient() && event.attempts < MAX_ATTEMPTS => {
            let delay = backoff(event.attempts);
            tracing::warn!(%error, retry_in = ?delay, event = %event.event, "MLflow event failed; will retry");
            repo::retry_event(&ctx.db, event.id, delay, &error.to_string()).await?;
        }
        Err(error) => {
            metrics::intake(&event.event, &event.model_name, version, "gave_up");
            tracing::warn!(%error, event = %event.event, "MLflow event given up");
            repo::retry_event(&ctx.db, event.id, Duration::ZERO, &error.to_string()).await?;
            repo::finish_event(&ctx.db, event.id, "gave_up").await?;
        }
    }
    Ok(Outcome::Handled)
}

/// 1 s doubling up to 5 minutes.
fn backoff(attempts: i32) -> Duration {
    let exponent = attempts.clamp(1, 9) as u32 - 1;
    Duration::from_secs(1u64 << exponent).min(Duration::from_secs(300))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_is_bounded() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(256));
    }
}
