//! From a `deployed_models` row to what providers take: the [`DeploymentSpec`], the
//! [`EndpointHandle`], and the cost accrued since the last observation.

use chrono::{DateTime, Utc};
use shared::db::deployments::Deployment;
use shared::domain::{DeploymentId, ModelId};
use shared::provider::{
    DeploymentSpec, EndpointHandle, InstanceSpec, Provider, ProviderState, ScalingSpec,
};

/// The provider spec of a deployment; hardware it leaves out comes from `defaults`.
pub fn spec_of(row: &Deployment, defaults: &InstanceSpec) -> Result<DeploymentSpec, String> {
    let model_id = ModelId::parse(&row.model_id).map_err(|e| e.to_string())?;
    let scaling = row
        .metadata
        .as_ref()
        .and_then(|m| m.get("scaling"))
        .map(|s| serde_json::from_value::<ScalingSpec>(s.clone()))
        .transpose()
        .map_err(|e| format!("metadata.scaling: {e}"))?
        .unwrap_or_default();
    Ok(DeploymentSpec {
        deployment_id: DeploymentId(row.id),
        model_id,
        model_version: row.model_version.clone(),
        repository: row.repository.clone(),
        revision: row.revision.clone(),
        task: row.task.clone(),
        framework: row.framework.clone(),
        instance: InstanceSpec {
            vendor: row
                .vendor
                .clone()
                .unwrap_or_else(|| defaults.vendor.clone()),
            region: row
                .region
                .clone()
                .unwrap_or_else(|| defaults.region.clone()),
            instance_type: row.instance_type.clone(),
            instance_size: row
                .instance_size
                .clone()
                .unwrap_or_else(|| defaults.instance_size.clone()),
        },
        scaling,
        endpoint_url: row.endpoint_url.clone(),
    })
}

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
