//! From a `deployed_models` row to what providers take: the [`DeploymentSpec`], the
//! [`EndpointHandle`], and the cost accrued since the last observation.

use chrono::{DateTime, Utc};
use shared::db::deployments::Deployment;
use shared::provider::{DeploymentSpec, EndpointHandle, Provider, ProviderState};

pub use shared::request::spec_of;

/// How to reach the deployment's endpoint: the recorded name, else the name the provider
/// gives it deterministically (an endpoint whose create we never saw answered).
pub fn handle_of(
    row: &Deployment,
    provider: &dyn Provider,
    spec: &DeploymentSpec,
) -> Option<EndpointHandle> {
    match &row.provider_model_id {
        Some(name) => Some(EndpointHandle {
            provider_model_id: name.clone(),
            endpoint_url: row.endpoint_url.clone(),
        }),
        None => provider.handle_for(spec),
    }
}

/// Accrued cost including the time since the row last changed, if that time was billable
/// (the provider state recorded then is taken to have lasted until `now`).
pub fn accrued_until(row: &Deployment, now: DateTime<Utc>) -> f64 {
    let billable = row
        .provider_status
        .as_deref()
        .map(ProviderState::parse)
        .is_some_and(|s| s.is_billable());
    let (Some(hourly), true) = (row.hourly_cost_usd, billable) else {
        return row.accrued_cost_usd;
    };
    let hours = (now - row.updated_at).num_milliseconds().max(0) as f64 / 3_600_000.0;
    row.accrued_cost_usd + hourly * hours
}
