//! The JSON of the HF v2 management API (docs/contracts/huggingface-endpoints.md): the create
//! body we send and the Endpoint object we read.
//!
//! The create body mirrors what the official client sends (nested `provider`, `compute`,
//! `model`); `task` is omitted rather than sent as `null`, which the server refuses.
//! Reading is lenient: unknown fields are ignored and optional ones default.

use serde::{Deserialize, Serialize};

use super::names::EndpointName;
use crate::provider::types::{DeploymentSpec, EndpointStatus, ListedEndpoint, ProviderState};

/// `POST /v2/endpoint/{namespace}` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateEndpoint {
    /// The endpoint name.
    pub name: String,
    /// Access type: `authenticated` (Bearer token required), the client's default.
    #[serde(rename = "type")]
    pub kind: String,
    /// Vendor and region.
    pub provider: WireProvider,
    /// Hardware and scaling.
    pub compute: WireCompute,
    /// What to serve.
    pub model: WireModel,
}

/// `provider` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireProvider {
    /// Cloud vendor.
    pub vendor: String,
    /// Cloud region.
    pub region: String,
}

/// `compute` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireCompute {
    /// `cpu` (the only accelerator hokusai-serve deploys on).
    pub accelerator: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance size.
    pub instance_size: String,
    /// Replica bounds.
    pub scaling: WireScaling,
}

/// `compute.scaling` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireScaling {
    /// Fewest replicas.
    pub min_replica: u32,
    /// Most replicas.
    pub max_replica: u32,
    /// Minutes before scaling to zero (`null`: the provider's default).
    pub scale_to_zero_timeout: Option<u32>,
}

/// `model` object of the create body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WireModel {
    /// HF Hub repository.
    pub repository: String,
    /// Revision (`null` accepted: the default branch).
    pub revision: Option<String>,
    /// Framework.
    pub framework: String,
    /// Task; omitted when unknown (never `null`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// `{"huggingface": {}}`: the default serving container.
    pub image: serde_json::Value,
}

impl CreateEndpoint {
    /// The body creating `name` for `spec` (the repository must have been checked).
    pub fn from_spec(name: &EndpointName, spec: &DeploymentSpec, repository: &str) -> Self {
        Self {
            name: name.as_str().to_owned(),
            kind: "authenticated".to_owned(),
            provider: WireProvider {
                vendor: spec.instance.vendor.clone(),
                region: spec.instance.region.clone(),
            },
            compute: WireCompute {
                accelerator: "cpu".to_owned(),
                instance_type: spec.instance.instance_type.clone(),
                instance_size: spec.instance.instance_size.clone(),
                scaling: WireScaling {
                    min_replica: spec.scaling.min_replica,
                    max_replica: spec.scaling.max_replica,
                    scale_to_zero_timeout: spec.scaling.scale_to_zero_timeout,
                },
            },
            model: WireModel {
                repository: repository.to_owned(),
                revision: spec.revision.clone(),
                framework: spec
                    .framework
                    .clone()
                    .unwrap_or_else(|| "pytorch".to_owned()),
                task: spec.task.clone(),
                image: serde_json::json!({"huggingface": {}}),
            },
        }
    }
}

/// An Endpoint object as returned by get, create, list, pause, resume and scale-to-zero.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// The name.
    pub name: String,
    /// The route probed for readiness (e.g. `/health`).
    #[serde(default)]
    pub health_route: Option<String>,
    /// Model block.
    pub model: EndpointModel,
    /// Vendor and region (absent in some old responses).
    #[serde(default)]
    pub provider: Option<WireProvider>,
    /// Hardware (absent in some old responses).
    #[serde(default)]
    pub compute: Option<EndpointCompute>,
    /// Lifecycle block.
    pub status: WireStatus,
}

/// `model` block of an Endpoint object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EndpointModel {
    /// Repository.
    pub repository: String,
    /// Revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// Task.
    #[serde(default)]
    pub task: Option<String>,
    /// Framework.
    #[serde(default)]
    pub framework: Option<String>,
}

/// `compute` block of an Endpoint object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointCompute {
    /// Instance type.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Instance size.
    #[serde(default)]
    pub instance_size: Option<String>,
}

/// `status` block of an Endpoint object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireStatus {
    /// The state string.
    pub state: String,
    /// Progress or failure message.
    #[serde(default)]
    pub message: Option<String>,
    /// The inference URL once provisioned.
    #[serde(default)]
    pub url: Option<String>,
    /// Ready replicas.
    #[serde(default)]
    pub ready_replica: Option<u32>,
    /// Target replicas.
    #[serde(default)]
    pub target_replica: Option<u32>,
    /// When the endpoint was created (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `GET /v2/endpoint/{namespace}` body.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointList {
    /// The endpoints.
    pub items: Vec<Endpoint>,
}

impl Endpoint {
    /// Whether this endpoint is what `body` asks for: same model and hardware, so a create
    /// that may have happened (409, timeout, 5xx) can be adopted instead of duplicated.
    pub fn matches(&self, body: &CreateEndpoint) -> bool {
        let model = &self.model;
        let same_model = model.repository == body.model.repository
            && (body.model.revision.is_none() || model.revision == body.model.revision)
            && (body.model.task.is_none() || model.task == body.model.task);
        let same_provider = self.provider.as_ref().is_none_or(|p| *p == body.provider);
        let same_compute = self.compute.as_ref().is_none_or(|c| {
            c.instance_type.as_deref() == Some(&body.compute.instance_type)
                && c.instance_size.as_deref() == Some(&body.compute.instance_size)
        });
        self.name == body.name && same_model && same_provider && same_compute
    }

    /// The listing entry of this endpoint (the orphan sweep's view).
    pub fn to_listed(&self) -> ListedEndpoint {
        ListedEndpoint {
            name: self.name.clone(),
            state: ProviderState::parse(&self.status.state),
            created_at: self
                .status
                .created_at
                .as_deref()
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&chrono::Utc)),
        }
    }

    /// The status in provider-neutral terms; `ready` is filled by the health probe.
    pub fn to_status(&self) -> EndpointStatus {
        EndpointStatus {
            state: ProviderState::parse(&self.status.state),
            url: self.status.url.clone(),
            ready_replicas: self.status.ready_replica.unwrap_or(0),
            target_replicas: self.status.target_replica.unwrap_or(0),
            message: self.status.message.clone().filter(|m| !m.is_empty()),
            ready: false,
        }
    }
}
