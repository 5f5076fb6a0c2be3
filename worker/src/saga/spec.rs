//! From a `deployed_models` row to what providers take: the [`DeploymentSpec`], the
//! [`EndpointHandle`].

use shared::db::deployments::Deployment;
use shared::provider::{DeploymentSpec, EndpointHandle, InstanceSpec, Provider};

pub use shared::request::spec_of;

/// How to reach the deployment's endpoint: the recorded name, else the name the provider
/// gives it deterministically (an endpoint whose create we never saw answered).
pub fn handle_of(
    row: &Deployment,
    provider: &dyn Provider,
    spec: &DeploymentSpec,
) -> Option<EndpointHandle> {
    match &row.provider_model_id {
        Some(name) => Some(EndpointHandle::new(name, row.endpoint_url.clone())),
        None => provider.handle_for(spec),
    }
}

/// The endpoint a deployment may have at its provider, for deleting or observing it: the
/// recorded name when there is one (whatever the stored spec says), else the deterministic
/// name of its spec. `Ok(None)`: the provider names nothing (nothing to delete). `Err`: no
/// name recorded and the stored spec unreadable; the caller says so in its event, and the
/// orphan sweep finds the endpoint, if any, by its prefix.
pub fn endpoint_of(
    row: &Deployment,
    provider: &dyn Provider,
    default_instance: &InstanceSpec,
) -> Result<Option<EndpointHandle>, String> {
    if let Some(name) = &row.provider_model_id {
        return Ok(Some(EndpointHandle::new(name, row.endpoint_url.clone())));
    }
    let spec = spec_of(row, default_instance)?;
    Ok(provider.handle_for(&spec))
}
