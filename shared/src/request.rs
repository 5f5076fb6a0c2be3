//! Deploy requests: what an operator (`POST /api/v1/models/{id}/deployments`) or an MLflow
//! registration asks for, turned into a validated [`NewDeployment`] — provider known,
//! hardware filled from the defaults and found in the provider's catalogue, task supported,
//! price known — before anything is written or queued. Both entry points share this one
//! path, so a model is judged deployable by the same rules wherever it comes from.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::db::deployments::{Deployment, NewDeployment};
use crate::domain::{DeploymentId, ModelId, RolloutSpec};
use crate::provider::{DeploymentSpec, InstanceSpec, ProviderRegistry, ScalingSpec};

/// Tasks the serving containers answer (docs/contracts/huggingface-endpoints.md).
pub const SUPPORTED_TASKS: [&str; 12] = [
    "text-classification",
    "token-classification",
    "text-generation",
    "feature-extraction",
    "sentence-embeddings",
    "sentence-similarity",
    "fill-mask",
    "summarization",
    "translation",
    "zero-shot-classification",
    "question-answering",
    "image-classification",
];

/// The provider used when a request names none.
pub const DEFAULT_PROVIDER: &str = "huggingface";

/// Hardware overrides; each missing field comes from the configured default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InstanceRequest {
    /// Cloud vendor.
    pub vendor: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Instance type (`intel-spr`).
    #[serde(rename = "type")]
    pub instance_type: Option<String>,
    /// Instance size (`x2`).
    pub size: Option<String>,
}

/// A request to deploy a model version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeployRequest {
    /// The model.
    pub model_id: Option<ModelId>,
    /// MLflow version.
    pub model_version: Option<String>,
    /// Provider name (default `huggingface`).
    pub provider: Option<String>,
    /// HF Hub repository.
    pub repository: Option<String>,
    /// Repository revision.
    pub revision: Option<String>,
    /// Task.
    pub task: Option<String>,
    /// Framework.
    pub framework: Option<String>,
    /// Hardware overrides.
    pub instance: InstanceRequest,
    /// Replica bounds.
    pub scaling: Option<ScalingSpec>,
    /// How the new version takes over (blue/green when absent).
    pub rollout: Option<RolloutSpec>,
    /// For the `http` provider: the running endpoint's URL.
    pub endpoint_url: Option<String>,
    /// Extra metadata to keep with the deployment (source, MLflow tags…).
    pub metadata: Map<String, Value>,
}

/// Why a request cannot be deployed; the sentence is meant for the requester.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// Validates `request` and returns the deployment to create (status `pending`).
pub fn prepare(
    request: DeployRequest,
    providers: &ProviderRegistry,
    defaults: &InstanceSpec,
) -> Result<NewDeployment, Rejected> {
    let model_id = request
        .model_id
        .clone()
        .ok_or_else(|| Rejected("model_id is required".into()))?;
    let provider_name = request
        .provider
        .clone()
        .unwrap_or_else(|| DEFAULT_PROVIDER.to_owned());
    let provider = providers.get(&provider_name).map_err(|_| {
        Rejected(format!(
            "provider: unknown `{provider_name}`; known: {}",
            providers.names().join(", ")
        ))
    })?;
    if let Some(task) = request.task.as_deref()
        && !SUPPORTED_TASKS.contains(&task)
    {
        return Err(Rejected(format!(
            "task: `{task}` is not supported; supported: {}",
            SUPPORTED_TASKS.join(", ")
        )));
    }
    let scaling = request.scaling.unwrap_or_default();
    if scaling.max_replica == 0 || scaling.min_replica > scaling.max_replica {
        return Err(Rejected(
            "scaling: need 1 <= max_replica and min_replica <= max_replica".into(),
        ));
    }
    let instance = InstanceSpec {
        vendor: request
            .instance
            .vendor
            .clone()
            .unwrap_or_else(|| defaults.vendor.clone()),
        region: request
            .instance
            .region
            .clone()
            .unwrap_or_else(|| defaults.region.clone()),
        instance_type: request
            .instance
            .instance_type
            .clone()
            .unwrap_or_else(|| defaults.instance_type.clone()),
        instance_size: request
            .instance
            .size
            .clone()
            .unwrap_or_else(|| defaults.instance_size.clone()),
    };
    let id = DeploymentId::new();
    let spec = DeploymentSpec {
        deployment_id: id,
        model_id: model_id.clone(),
        model_version: request.model_version.clone(),
        repository: request.repository.clone(),
        revision: request.revision.clone(),
        task: request.task.clone(),
        framework: request.framework.clone(),
        instance: instance.clone(),
        scaling,
        endpoint_url: request.endpoint_url.clone(),
    };
    provider
        .validate(&spec)
        .map_err(|e| Rejected(e.message().to_owned()))?;
    let hourly_cost_usd = provider
        .hourly_cost_usd(&spec)
        .map_err(|e| Rejected(e.message().to_owned()))?;
    let mut metadata = request.metadata;
    metadata.insert(
        "scaling".into(),
        serde_json::to_value(scaling).unwrap_or(Value::Null),
    );
    if let Some(url) = &request.endpoint_url {
        metadata.insert("endpoint_url".into(), Value::String(url.clone()));
    }
    if let Some(rollout) = request.rollout.filter(RolloutSpec::is_progressive) {
        metadata.insert(
            ROLLOUT_KEY.into(),
            serde_json::to_value(rollout).unwrap_or(Value::Null),
        );
    }
    Ok(NewDeployment {
        id,
        model_id,
        model_version: request.model_version,
        provider: provider_name,
        instance_type: instance.instance_type,
        instance_size: Some(instance.instance_size),
        vendor: Some(instance.vendor),
        region: Some(instance.region),
        task: request.task,
        framework: request.framework,
        repository: request.repository,
        revision: request.revision,
        metadata: Some(Value::Object(metadata)),
        hourly_cost_usd,
        idempotency_key: None,
    })
}

/// Where a progressive rollout's spec is kept in the deployment's metadata.
pub const ROLLOUT_KEY: &str = "rollout";

/// The progressive rollout a stored deployment asked for, if any (an unreadable one counts as
/// none: it was validated before it was written).
pub fn rollout_of(row: &Deployment) -> Option<RolloutSpec> {
    let value = row.metadata.as_ref()?.get(ROLLOUT_KEY)?;
    serde_json::from_value::<RolloutSpec>(value.clone())
        .ok()
        .filter(RolloutSpec::is_progressive)
}

/// The provider spec of a stored deployment (the worker's view of what [`prepare`] wrote);
/// hardware the row leaves out comes from `defaults`.
pub fn spec_of(row: &Deployment, defaults: &InstanceSpec) -> Result<DeploymentSpec, String> {
    let model_id = ModelId::parse(&row.model_id).map_err(|e| e.to_string())?;
    let meta = row.metadata.as_ref();
    let scaling = meta
        .and_then(|m| m.get("scaling"))
        .map(|s| serde_json::from_value::<ScalingSpec>(s.clone()))
        .transpose()
        .map_err(|e| format!("metadata.scaling: {e}"))?
        .unwrap_or_default();
    let requested_url = meta
        .and_then(|m| m.get("endpoint_url"))
        .and_then(Value::as_str)
        .map(str::to_owned);
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
        endpoint_url: row.endpoint_url.clone().or(requested_url),
    })
}
