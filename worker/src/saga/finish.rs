//! The end of a deployment's way out: delete whatever endpoint it may have, then
//! `undeploying → stopped` or `rolling_back → failed`. One implementation for the
//! `undeploy` step, the compensation of `check_status` and the reconciler's pass.

use serde_json::json;
use shared::db::deployments::{Changes, Deployment, Transition};
use shared::domain::DeploymentStatus;
use shared::provider::{InstanceSpec, Provider, ProviderError};

use super::Plan;
use super::spec::endpoint_of;

/// Deletes the endpoint of `deployment` (which is `undeploying` or `rolling_back`; a
/// missing endpoint counts as deleted) and returns the plan that finishes it, or the
/// provider's error (the caller retries, or gives up for an operator).
pub async fn delete_and_finish(
    deployment: Deployment,
    provider: &dyn Provider,
    default_instance: &InstanceSpec,
) -> Result<Plan, ProviderError> {
    // No recorded name and an unreadable spec: nothing to name here; the orphan sweep finds
    // such an endpoint by its prefix.
    let (handle, unnamed) = match endpoint_of(&deployment, provider, default_instance) {
        Ok(handle) => (handle, None),
        Err(reason) => (None, Some(reason)),
    };
    if let Some(handle) = &handle {
        match provider.undeploy(handle).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
    }
    let deleted = match unnamed {
        None => "endpoint deleted".to_owned(),
        Some(why) => {
            format!("no endpoint name known ({why}); the orphan sweep deletes any endpoint left")
        }
    };
    let (to, message) = match deployment.status {
        DeploymentStatus::Undeploying => (DeploymentStatus::Stopped, deleted),
        _ => {
            let reason = deployment
                .error_message
                .clone()
                .unwrap_or_else(|| "deploy failed".into());
            (
                DeploymentStatus::Failed,
                format!("{deleted}; deployment failed: {reason}"),
            )
        }
    };
    let transition = Transition {
        to,
        message,
        details: handle.map(|h| json!({"provider_model_id": h.provider_model_id})),
        changes: Changes {
            provider_status: Some("deleted".into()),
            is_active: Some(false),
            ..Changes::default()
        },
    };
    Ok(Plan::transition(deployment, transition))
}
