//! `undeploy`: takes a deployment out of service and deletes its endpoint, in two committed
//! steps so that every concurrent step sees `undeploying` before the delete happens:
//! `pending | deploying | deployed → undeploying` (active flag cleared: predictions stop at
//! once), then the provider delete and `undeploying → stopped`.

use serde_json::json;
use shared::db::deployments::{Changes, Transition};
use shared::domain::DeploymentStatus;
use shared::queue::MessageKind;

use super::finish::delete_and_finish;
use super::{Plan, Step, StepInput};

/// Decides an `undeploy` command.
pub(crate) async fn decide(input: StepInput<'_>) -> Step {
    use DeploymentStatus::*;
    match input.deployment.status {
        Pending | Deploying | Deployed => start(input, "undeploy requested"),
        Undeploying => delete(input).await,
        other => Step::Ignore(format!("undeploy of a deployment already {other}")),
    }
}

/// `→ undeploying`, then this same command again to do the delete.
pub(crate) fn start(input: StepInput<'_>, why: &str) -> Step {
    let t = Transition {
        to: DeploymentStatus::Undeploying,
        message: format!("{why}; taking the endpoint down"),
        details: Some(json!({"was_active": input.deployment.is_active})),
        changes: Changes {
            is_active: Some(false),
            ..Changes::default()
        },
    };
    let next = input.envelope.follow_up(MessageKind::Undeploy);
    Step::Commit(Plan::transition(input.deployment, t).then(next, None))
}

async fn delete(input: StepInput<'_>) -> Step {
    let provider = input.provider.clone();
    let deployment = input.deployment.clone();
    match delete_and_finish(deployment, provider.as_ref(), &input.ctx.default_instance).await {
        Ok(plan) => Step::Commit(plan),
        Err(error) if error.is_retryable() => input.retry(&error),
        Err(error) => Step::DeadLetter {
            plan: Some(Plan::events_only(input.deployment).with_event(
                "undeploy_failed",
                &format!("endpoint could not be deleted: {error}"),
                Some(json!({"error": error.message()})),
            )),
            reason: format!("undeploy failed, the endpoint may still exist and bill: {error}"),
        },
    }
}
