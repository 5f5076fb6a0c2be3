//! From a `deployed_models` row to what providers take: the [`DeploymentSpec`], the
//! [`EndpointHandle`].

use shared::db::deployments::Deployment;
use shared::provider::{DeploymentSpec, EndpointHandle, Provider};

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
