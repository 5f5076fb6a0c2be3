//! `check_status`: reads the provider's state and moves the deployment on.
//!
//! - `deploying`: ready ⇒ `deployed` and active in the same transaction (the previous active
//!   version is deactivated and gets a `retire` after `RETIRE_AFTER_SECONDS`) — or, for a
//!   canary rollout, `deployed` beside the active version with its rollout started; still
//!   provisioning ⇒ poll again with backoff until `DEPLOY_TIMEOUT_SECONDS`; failed, gone or
//!   timed out ⇒ `rolling_back`.
//! - `rolling_back`: deletes the endpoint (gone counts as deleted) ⇒ `failed`; when deletion
//!   keeps failing ⇒ `rollback_failed` and the message is dead-lettered for an operator,
//!   whose replay retries the compensation.
//! - `deployed`: a health observation; a lost endpoint ⇒ `failed`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use shared::db::deployments::{Changes, Transition};
use shared::db::rollouts;
use shared::domain::{DeploymentStatus, RolloutSpec};
use shared::provider::{EndpointStatus, ProviderError};
use shared::queue::{Envelope, MessageKind};

use super::finish::delete_and_finish;
use super::plan::RolloutWrite;
use super::serving::Observation;
use super::spec::{handle_of, spec_of};
use super::{Plan, Step, StepInput};

/// Decides a `check_status` command.
pub(crate) async fn decide(input: StepInput<'_>) -> Step {
    match input.deployment.status {
        DeploymentStatus::Deploying => provisioning(input).await,
        DeploymentStatus::RollingBack => compensate(input).await,
        DeploymentStatus::RollbackFailed if input.envelope.replayed.is_some() => {
            let next = input.envelope.follow_up(MessageKind::CheckStatus);
            let t = transition(
                DeploymentStatus::RollingBack,
                "operator replayed the compensation",
                None,
            );
            Step::Commit(Plan::transition(input.deployment, t).then(next, None))
        }
        DeploymentStatus::RollbackFailed => Step::DeadLetter {
            plan: None,
            reason: "compensation exhausted: the endpoint could not be deleted; replay to retry"
                .into(),
        },
        DeploymentStatus::Deployed => observe_deployed(input).await,
        other => Step::Ignore(format!("status check of a deployment {other}")),
    }
}

fn transition(to: DeploymentStatus, message: &str, error: Option<&str>) -> Transition {
    Transition {
        to,
        message: message.to_owned(),
        details: error.map(|e| json!({"error": e})),
        changes: Changes {
            error_message: error.map(|e| Some(e.to_owned())),
            ..Changes::default()
        },
    }
}

async fn provisioning(input: StepInput<'_>) -> Step {
    let spec = match spec_of(&input.deployment, &input.ctx.default_instance) {
        Ok(spec) => spec,
        Err(reason) => return roll_back(input, &reason),
    };
    let Some(handle) = handle_of(&input.deployment, input.provider.as_ref(), &spec) else {
        return roll_back(input, "no endpoint handle recorded");
    };
    match input.provider.get_status(&handle).await {
        Ok(status) if status.ready => activate(input, status).await,
        Ok(status) if status.state.is_failed() => {
            let reason = status
                .message
                .clone()
                .unwrap_or_else(|| format!("endpoint {}", status.state.as_str()));
            roll_back(
                input,
                &format!("provider reports {}: {reason}", status.state.as_str()),
            )
        }
        Ok(status) => keep_polling(input, status),
        Err(ProviderError::NotFound { message }) => {
            roll_back(input, &format!("endpoint disappeared: {message}"))
        }
        Err(error) if error.is_retryable() => input.retry(&error),
        Err(error) => roll_back(input, &error.to_string()),
    }
}

/// `deploying → rolling_back`, compensation scheduled at once.
fn roll_back(input: StepInput<'_>, reason: &str) -> Step {
    let next = input.envelope.follow_up(MessageKind::CheckStatus);
    let t = transition(
        DeploymentStatus::RollingBack,
        &format!("deploy failed, compensating: {reason}"),
        Some(reason),
    );
    Step::Commit(Plan::transition(input.deployment, t).then(next, None))
}

async fn activate(input: StepInput<'_>, status: EndpointStatus) -> Step {
    // Read with the deployment (`deployments::get_with_active`); if another version became
    // active since, the commit's one-active index refuses and the step decides again.
    let previous = input.active.clone();
    let details = json!({"provider_state": status.state.as_str(), "url": status.url,
                         "ready_replicas": status.ready_replicas});
    if let Some(spec) = shared::request::rollout_of(&input.deployment)
        && let Some(stable) = previous.as_ref().filter(|p| p.id != input.deployment.id)
    {
        let stable = stable.id;
        return start_canary(input, status, stable, spec, details).await;
    }
    let t = Transition {
        to: DeploymentStatus::Deployed,
        message: "endpoint running and healthy; now serving".into(),
        details: Some(details),
        changes: Changes {
            provider_status: Some(status.state.as_str().to_owned()),
            endpoint_url: status.url,
            error_message: Some(None),
            is_active: Some(true),
            ..Changes::default()
        },
    };
    let retire_after = input.ctx.settings.retire_after;
    let mut plan = Plan::transition(input.deployment.clone(), t);
    if let Some(previous) = previous.filter(|p| p.id != input.deployment.id) {
        let retire = Envelope {
            deployment_id: shared::domain::DeploymentId(previous.id),
            ..input.envelope.follow_up(MessageKind::Retire)
        };
        plan = plan.deactivating(previous).then(retire, Some(retire_after));
    }
    Step::Commit(plan)
}

/// A canary's endpoint is ready: `deployed` but not active, its rollout started at the first
/// step beside `stable` (docs/design/rollouts.md). While another rollout of the model is still
/// open (a newer deploy supersedes it; the reconciler ends it), the canary waits, polled like a
/// deployment still provisioning and bound by the same deadline.
async fn start_canary(
    input: StepInput<'_>,
    status: EndpointStatus,
    stable: uuid::Uuid,
    spec: RolloutSpec,
    details: serde_json::Value,
) -> Step {
    match rollouts::open_for(&input.ctx.db, &input.deployment.model_id).await {
        Ok(None) => {}
        Ok(Some(_)) => return keep_polling(input, status),
        // Ask again at the next poll (its commit fails too while the database is away, and
        // the message is then delivered again): never drop the canary's check.
        Err(error) => {
            tracing::warn!(%error, deployment = %input.deployment.id, "rollout lookup failed; polling again");
            return keep_polling(input, status);
        }
    }
    let weight = spec.steps.first().copied().unwrap_or(100);
    let share = if spec.is_shadow() {
        format!("shadowing {weight}% of the traffic (answers discarded)")
    } else {
        format!("canary taking {weight}% of the traffic")
    };
    let t = Transition {
        to: DeploymentStatus::Deployed,
        message: format!("endpoint running and healthy; {share} beside deployment {stable}"),
        details: Some(details),
        changes: Changes {
            provider_status: Some(status.state.as_str().to_owned()),
            endpoint_url: status.url,
            error_message: Some(None),
            ..Changes::default()
        },
    };
    let started = json!({"stable_id": stable, "steps": spec.steps, "bake_seconds": spec.bake_seconds,
                         "max_error_rate": spec.max_error_rate, "min_requests": spec.min_requests,
                         "max_latency_p95_ms": spec.max_latency_p95_ms});
    let message = format!(
        "{} rollout started: steps {:?}, each baked {} s",
        spec.strategy.as_str(),
        spec.steps,
        spec.bake_seconds
    );
    let plan = Plan::transition(input.deployment, t)
        .with_event("rollout_started", &message, Some(started))
        .with_rollout(RolloutWrite::Start { stable, spec });
    Step::Commit(plan)
}

fn keep_polling(input: StepInput<'_>, status: EndpointStatus) -> Step {
    let now = Utc::now();
    let started = started_at(input.envelope).unwrap_or(input.deployment.created_at);
    let elapsed = (now - started).to_std().unwrap_or_default();
    if elapsed >= input.ctx.settings.deploy_timeout {
        let reason = format!(
            "not ready after {} s (DEPLOY_TIMEOUT_SECONDS), provider state {}",
            elapsed.as_secs(),
            status.state.as_str()
        );
        return roll_back(input, &reason);
    }
    let polls = input
        .envelope
        .payload
        .get("polls")
        .and_then(|p| p.as_u64())
        .unwrap_or(0);
    let settings = &input.ctx.settings;
    let delay = poll_delay(
        settings.status_poll_initial,
        settings.status_poll_max,
        polls,
    );
    let next = Envelope {
        payload: json!({"started_at": started, "polls": polls + 1}),
        ..input.envelope.follow_up(MessageKind::CheckStatus)
    };
    let changes = Changes {
        provider_status: Some(status.state.as_str().to_owned()),
        ..Changes::default()
    };
    let details = json!({"provider_state": status.state.as_str(), "message": status.message});
    Step::Commit(Plan::observe(input.deployment, changes, Some(details)).then(next, Some(delay)))
}

fn started_at(envelope: &Envelope) -> Option<DateTime<Utc>> {
    envelope
        .payload
        .get("started_at")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

async fn compensate(input: StepInput<'_>) -> Step {
    let provider = input.provider.clone();
    let deployment = input.deployment.clone();
    match delete_and_finish(deployment, provider.as_ref(), &input.ctx.default_instance).await {
        Ok(plan) => Step::Commit(plan),
        Err(error) if error.is_retryable() => input.retry(&error),
        Err(error) => {
            let reason = format!("compensation failed, endpoint may still exist: {error}");
            let t = transition(DeploymentStatus::RollbackFailed, &reason, Some(&reason));
            Step::DeadLetter {
                plan: Some(Plan::transition(input.deployment, t)),
                reason,
            }
        }
    }
}

async fn observe_deployed(input: StepInput<'_>) -> Step {
    let provider = input.provider.clone();
    let timeout = input.ctx.settings.step_timeout;
    match super::serving::observe(input.ctx, input.deployment, provider.as_ref(), timeout).await {
        Ok(Observation::Serving(Some(plan)) | Observation::Lost { plan, .. }) => Step::Commit(plan),
        Ok(Observation::Serving(None)) => Step::Ignore("endpoint serving; nothing changed".into()),
        Ok(Observation::Unobserved(why)) => {
            Step::Ignore(format!("status observation failed: {why}"))
        }
        Err(error) => Step::Ignore(format!("status observation failed: {error}")),
    }
}

/// Delay before poll number `polls + 1`: `initial` doubling up to `max`.
fn poll_delay(initial: Duration, max: Duration, polls: u64) -> Duration {
    let polls = u32::try_from(polls).unwrap_or(u32::MAX);
    shared::runtime::Backoff::new(initial, max)
        .exact()
        .delay(polls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_back_off_exponentially_up_to_the_maximum() {
        let (initial, max) = (Duration::from_secs(2), Duration::from_secs(30));
        let delays: Vec<u64> = (0..6)
            .map(|n| poll_delay(initial, max, n).as_secs())
            .collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 30, 30]);
        assert_eq!(poll_delay(initial, max, u64::MAX), max);
    }
}
