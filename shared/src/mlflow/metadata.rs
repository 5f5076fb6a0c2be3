//! Metadata extraction: from a registered model version to a [`DeployRequest`].
//!
//! Webhook payloads are thin and may be null, so everything is re-fetched: the version and
//! its tags, the registered model's tags, and the version's `MLmodel` file through the
//! artifact proxy, whose transformers flavor names the HF repository (`source_model_name`),
//! `task`, `framework` and `source_model_revision`. `hokusai.*` tags override the flavor,
//! version tags winning over registered-model tags. Whether the result can be deployed is
//! not judged here: [`crate::request::prepare`] is the one validation path.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::client::{MlflowClient, MlflowError, ModelVersion, RegisteredModel, Tag, tag_value};
use super::tags;
use crate::domain::ModelId;
use crate::provider::ScalingSpec;
use crate::request::{DeployRequest, InstanceRequest, Rejected};

/// What extraction found: a request for [`crate::request::prepare`], or a reason the
/// version cannot even be described (a bad tag value, a model name we cannot serve).
pub type Extracted = Result<DeployRequest, Rejected>;

/// The transformers flavor of an `MLmodel` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TransformersFlavor {
    /// HF Hub repository the model came from.
    pub source_model_name: Option<String>,
    /// Its revision.
    pub source_model_revision: Option<String>,
    /// Pipeline task.
    pub task: Option<String>,
    /// `pt`, `tf` or a full name.
    pub framework: Option<String>,
}

/// Everything MLflow says about one version.
#[derive(Debug, Clone)]
pub struct VersionFacts {
    /// The version.
    pub version: ModelVersion,
    /// Its registered model.
    pub model: RegisteredModel,
    /// The transformers flavor of its `MLmodel`, when it has one we can read.
    pub flavor: Option<TransformersFlavor>,
}

impl VersionFacts {
    /// A tag of the version, else of its registered model.
    pub fn tag(&self, key: &str) -> Option<&str> {
        tag_value(&self.version.tags, key).or_else(|| tag_value(&self.model.tags, key))
    }

    /// Whether the version or its registered model carries `hokusai.deploy=true`.
    pub fn wants_deploy(&self) -> bool {
        let on = |tags: &[Tag]| tag_value(tags, tags::DEPLOY).is_some_and(tags::is_true);
        on(&self.version.tags) || on(&self.model.tags)
    }
}

/// Fetches the facts of `name` version `version`.
pub async fn fetch(
    client: &MlflowClient,
    name: &str,
    version: &str,
) -> Result<VersionFacts, MlflowError> {
    let version = client.get_version(name, version).await?;
    let model = client.get_registered_model(name).await?;
    let flavor = read_flavor(client, &version).await?;
    Ok(VersionFacts {
        version,
        model,
        flavor,
    })
}

/// Fetches and describes `name` version `version`.
pub async fn extract(
    client: &MlflowClient,
    name: &str,
    version: &str,
) -> Result<Extracted, MlflowError> {
    Ok(describe(&fetch(client, name, version).await?))
}

/// The transformers flavor of the version's `MLmodel`, when MLflow serves its files
/// (`mlflow-artifacts:` or a run's artifacts); `None` for sources only the model's owner
/// can read (`s3://…`) or models without that flavor.
async fn read_flavor(
    client: &MlflowClient,
    version: &ModelVersion,
) -> Result<Option<TransformersFlavor>, MlflowError> {
    let uri = match client.download_uri(&version.name, &version.version).await {
        Ok(uri) => uri,
        Err(MlflowError::NotFound(_)) => return Ok(None),
        Err(other) => return Err(other),
    };
    let Some(path) = proxied_path(client, &uri).await? else {
        return Ok(None);
    };
    let file = format!("{}/MLmodel", path.trim_end_matches('/'));
    let Some(text) = client.artifact_text(&file).await? else {
        return Ok(None);
    };
    Ok(parse_mlmodel(&text))
}

/// The artifact-proxy path of `uri`, resolving `runs:/<id>/<path>` through the run.
async fn proxied_path(client: &MlflowClient, uri: &str) -> Result<Option<String>, MlflowError> {
    if let Some(rest) = uri.strip_prefix("runs:/") {
        let (run_id, sub) = rest
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((rest, ""));
        let root = client.run_artifact_uri(run_id).await?;
        return Ok(artifact_proxy_path(&format!(
            "{}/{sub}",
            root.trim_end_matches('/')
        )));
    }
    Ok(artifact_proxy_path(uri))
}

/// `mlflow-artifacts:/0/models/m-1/artifacts` (or with an authority,
/// `mlflow-artifacts://host:5000/0/…`) ⇒ `0/models/m-1/artifacts`.
pub fn artifact_proxy_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("mlflow-artifacts:")?;
    let path = match rest.strip_prefix("//") {
        Some(with_authority) => with_authority.split_once('/').map_or("", |(_, p)| p),
        None => rest,
    };
    Some(path.trim_start_matches('/').to_owned())
}

/// The transformers flavor of an `MLmodel` YAML document, if it has one.
pub fn parse_mlmodel(text: &str) -> Option<TransformersFlavor> {
    #[derive(Deserialize)]
    struct MlModel {
        #[serde(default)]
        flavors: std::collections::BTreeMap<String, serde_norway::Value>,
    }
    let model: MlModel = match serde_norway::from_str(text) {
        Ok(model) => model,
        Err(error) => {
            tracing::warn!(%error, "MLmodel is not readable YAML; ignoring it");
            return None;
        }
    };
    let flavor = model.flavors.get("transformers")?.clone();
    serde_norway::from_value(flavor).ok()
}

/// The deploy request the facts describe (pure: no I/O).
pub fn describe(facts: &VersionFacts) -> Extracted {
    let name = &facts.version.name;
    let model_id = ModelId::parse(name)
        .map_err(|e| Rejected(format!("model name `{name}` cannot be served: {e}")))?;
    let flavor = facts.flavor.clone().unwrap_or_default();
    let pick = |key: &str, fallback: Option<String>| {
        facts.tag(key).map(|v| v.trim().to_owned()).or(fallback)
    };
    Ok(DeployRequest {
        model_id: Some(model_id),
        model_version: Some(facts.version.version.clone()),
        provider: pick(tags::PROVIDER, None),
        repository: pick(tags::HF_REPOSITORY, flavor.source_model_name),
        revision: pick(tags::REVISION, flavor.source_model_revision),
        task: pick(tags::TASK, flavor.task),
        framework: pick(
            tags::FRAMEWORK,
            flavor.framework.map(|f| framework_name(&f)),
        ),
        instance: InstanceRequest {
            vendor: pick(tags::VENDOR, None),
            region: pick(tags::REGION, None),
            instance_type: pick(tags::INSTANCE_TYPE, None),
            size: pick(tags::INSTANCE_SIZE, None),
        },
        scaling: scaling(facts)?,
        rollout: rollout(facts)?,
        endpoint_url: None,
        metadata: provenance(facts),
    })
}

/// MLflow writes `pt`/`tf`; HF names the frameworks in full.
fn framework_name(raw: &str) -> String {
    match raw {
        "pt" => "pytorch".into(),
        "tf" => "tensorflow".into(),
        other => other.to_owned(),
    }
}

/// The `hokusai.rollout` tag: JSON, validated like the deploy body's `rollout`.
fn rollout(facts: &VersionFacts) -> Result<Option<crate::domain::RolloutSpec>, Rejected> {
    let Some(raw) = facts.tag(tags::ROLLOUT) else {
        return Ok(None);
    };
    let value: serde_json::Value = serde_json::from_str(raw.trim())
        .map_err(|e| Rejected(format!("{}: not JSON: {e}", tags::ROLLOUT)))?;
    crate::domain::RolloutSpec::parse(&value)
        .map(Some)
        .map_err(|e| Rejected(format!("{}: {e}", tags::ROLLOUT)))
}

/// Replica bounds from `hokusai.min_replica` / `max_replica` / `scale_to_zero_timeout`.
fn scaling(facts: &VersionFacts) -> Result<Option<ScalingSpec>, Rejected> {
    let number = |key: &str| -> Result<Option<u32>, Rejected> {
        facts
            .tag(key)
            .map(|raw| {
                raw.trim()
                    .parse()
                    .map_err(|_| Rejected(format!("{key}: `{raw}` is not a whole number")))
            })
            .transpose()
    };
    let min = number(tags::MIN_REPLICA)?;
    let max = number(tags::MAX_REPLICA)?;
    let idle = number(tags::SCALE_TO_ZERO_TIMEOUT)?;
    if min.is_none() && max.is_none() && idle.is_none() {
        return Ok(None);
    }
    let default = ScalingSpec::default();
    let min_replica = min.unwrap_or(default.min_replica);
    Ok(Some(ScalingSpec {
        min_replica,
        max_replica: max.unwrap_or(default.max_replica.max(min_replica)),
        scale_to_zero_timeout: idle,
    }))
}

/// Where the deployment came from, kept in its metadata.
fn provenance(facts: &VersionFacts) -> Map<String, Value> {
    let v = &facts.version;
    let mut metadata = Map::new();
    metadata.insert("source".into(), json!("mlflow"));
    metadata.insert(
        "mlflow".into(),
        json!({"name": v.name, "version": v.version, "source": v.source,
               "run_id": v.run_id.as_deref().filter(|r| !r.is_empty())}),
    );
    metadata
}

#[cfg(test)]
mod tests;
