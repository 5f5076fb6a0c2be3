//! `deploy`: `pending → deploying`. Creates the provider endpoint (idempotent: deterministic
//! names, adopt on conflict) and schedules the first `check_status`.

use chrono::Utc;
use serde_json::json;
use shared::db::deployments::{Changes, Transition};
use shared::domain::DeploymentStatus;
use shared::provider::ProviderError;
use shared::queue::MessageKind;

use super::spec::{endpoint_of, spec_of};
use super::{Plan, Step, StepInput};

/// Decides a `deploy` command.
pub(crate) async fn decide(input: StepInput<'_>) -> Step {
    let status = input.deployment.status;
    match status {
        DeploymentStatus::Pending => create(input).await,
        // Undeploy or rollback won while our create may still have been in flight: the
        // endpoint, if it was created after all, must not outlive the deployment.
        // A deployment superseded (rolling_back) or ended while its create was in flight:
        // delete whatever the create made.
        DeploymentStatus::Undeploying
        | DeploymentStatus::Stopped
        | DeploymentStatus::Failed
        | DeploymentStatus::RollingBack => clean_up_late_create(input).await,
        other => Step::Ignore(format!("deploy of a deployment already {other}")),
    }
}

async fn create(input: StepInput<'_>) -> Step {
    let spec = match spec_of(&input.deployment, &input.ctx.default_instance) {
        Ok(spec) => spec,
        Err(reason) => return fail(input, &reason),
    };
    match input.provider.deploy(&spec).await {
        Ok(handle) => {
            let started = Utc::now();
            let check = input.envelope.follow_up(MessageKind::CheckStatus);
            let check = shared::queue::Envelope {
                payload: json!({"started_at": started, "polls": 0}),
                ..check
            };
            let transition = Transition {
                to: DeploymentStatus::Deploying,
                message: format!(
                    "endpoint {} requested at {}",
                    handle.provider_model_id,
                    input.provider.name()
                ),
                details: Some(
                    json!({"provider_model_id": handle.provider_model_id, "attempt": input.envelope.attempt}),
                ),
                changes: Changes {
                    provider_status: Some("pending".into()),
                    provider_model_id: Some(handle.provider_model_id),
                    endpoint_url: handle.endpoint_url,
                    ..Changes::default()
                },
            };
            let delay = input.ctx.settings.status_poll_initial;
            Step::Commit(Plan::transition(input.deployment, transition).then(check, Some(delay)))
        }
        Err(error) if error.is_retryable() => input.retry(&error),
        // A conflict on our own name (retryable errors were retried above until the
        // deadline): something may exist at the provider, so compensate (delete by name)
        // rather than just fail.
        Err(
            error @ (ProviderError::Conflict { .. }
            | ProviderError::Transient { .. }
            | ProviderError::Timeout { .. }),
        )
        | Err(error @ (ProviderError::RateLimited { .. } | ProviderError::Unavailable { .. })) => {
            roll_back(input, &error.to_string())
        }
        Err(error) => fail(input, &error.to_string()),
    }
}

/// `pending → failed`: nothing was created (the spec or our credentials are refused).
fn fail(input: StepInput<'_>, reason: &str) -> Step {
    let transition = Transition {
        to: DeploymentStatus::Failed,
        message: format!("deploy refused: {reason}"),
        details: Some(json!({"error": reason})),
        changes: Changes {
            error_message: Some(Some(reason.to_owned())),
            ..Changes::default()
        },
    };
    Step::Commit(Plan::transition(input.deployment, transition))
}

/// `pending → rolling_back`; the follow-up `check_status` deletes the endpoint by name.
fn roll_back(input: StepInput<'_>, reason: &str) -> Step {
    let transition = Transition {
        to: DeploymentStatus::RollingBack,
        message: format!("deploy failed, compensating: {reason}"),
        details: Some(json!({"error": reason, "attempt": input.envelope.attempt})),
        changes: Changes {
            error_message: Some(Some(reason.to_owned())),
            ..Changes::default()
        },
    };
    let next = input.envelope.follow_up(MessageKind::CheckStatus);
    Step::Commit(Plan::transition(input.deployment, transition).then(next, None))
}

/// A permanent failure here is not forgotten: the endpoint, if any, belongs to no live
/// deployment, so the reconciler's orphan sweep deletes it after `ORPHAN_GRACE_SECONDS`.
async fn clean_up_late_create(input: StepInput<'_>) -> Step {
    let status = input.deployment.status;
    let handle = match endpoint_of(
        &input.deployment,
        input.provider.as_ref(),
        &input.ctx.default_instance,
    ) {
        Ok(Some(handle)) => handle,
        Ok(None) => return Step::Ignore(format!("deploy of a deployment already {status}")),
        Err(reason) => {
            return Step::Ignore(format!(
                "deploy of a deployment already {status}; {reason}; the orphan sweep will delete any late endpoint"
            ));
        }
    };
    match input.provider.undeploy(&handle).await {
        Ok(()) => Step::Ignore(format!(
            "deploy of a deployment already {status}; any late endpoint deleted"
        )),
        // Bounded: the deployment is finished, so no deadline ends this; past
        // QUEUE_MAX_ATTEMPTS postponements the orphan sweep takes over.
        Err(error) if error.is_retryable() && input.envelope.postponed < input.ctx.max_attempts => {
            input.retry(&error)
        }
        Err(error) => Step::Ignore(format!(
            "deploy of a deployment already {status}; deleting a late endpoint failed ({error}); the orphan sweep will retry"
        )),
    }
}
