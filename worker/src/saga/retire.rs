//! `retire`: after `RETIRE_AFTER_SECONDS`, undeploys a version that a newer one replaced —
//! unless an operator rolled back to it meanwhile (it is active again).

use shared::domain::DeploymentStatus;

use super::{Step, StepInput, undeploy};

/// Decides a `retire` command.
pub(crate) async fn decide(input: StepInput<'_>) -> Step {
    match input.deployment.status {
        DeploymentStatus::Deployed if input.deployment.is_active => {
            Step::Ignore("the replaced version serves again (rolled back to); not retiring".into())
        }
        DeploymentStatus::Deployed => {
            undeploy::start(input, "replaced by a newer version; retiring")
        }
        other => Step::Ignore(format!("retire of a deployment already {other}")),
    }
}
