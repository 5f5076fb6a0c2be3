//! The values that cross the [`Provider`](super::Provider) boundary: what to deploy
//! ([`DeploymentSpec`]), how to find it again ([`EndpointHandle`]), what the provider says about
//! it ([`EndpointStatus`]) and predictions ([`PredictRequest`], [`PredictResponse`]).
//!
//! They are provider-neutral: the HuggingFace adapter maps them to its wire format, and the
//! worker builds them from `deployed_models` rows.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{DeploymentId, ModelId};

/// The hardware an endpoint runs on (HF: `provider` + `compute`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Cloud vendor (`aws`, `azure`, `gcp`).
    pub vendor: String,
    /// Cloud region (`us-east-1`).
    pub region: String,
    /// Instance type (`intel-spr`).
    pub instance_type: String,
    /// Instance size (`x1` … `x16`).
    pub instance_size: String,
}

/// Replica bounds of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScalingSpec {
    /// Fewest replicas; 0 allows scale to zero.
    pub min_replica: u32,
    /// Most replicas.
    pub max_replica: u32,
    /// Minutes without traffic before scaling to zero (provider default when `None`).
    pub scale_to_zero_timeout: Option<u32>,
}

impl Default for ScalingSpec {
    fn default() -> Self {
        Self {
            min_replica: 1,
            max_replica: 1,
            scale_to_zero_timeout: None,
        }
    }
}

/// Everything a provider needs to create an endpoint for one deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentSpec {
    /// The deployment this endpoint serves; its id makes the endpoint name deterministic.
    pub deployment_id: DeploymentId,
    /// The MLflow registered-model name.
    pub model_id: ModelId,
    /// The MLflow model version.
    pub model_version: Option<String>,
    /// The model repository (HF Hub `org/name`); required by HuggingFace.
    pub repository: Option<String>,
    /// Repository revision (commit, branch or tag).
    pub revision: Option<String>,
    /// Model task (`text-classification`); omitted from requests when unknown.
    pub task: Option<String>,
    /// Model framework (`pytorch`).
    pub framework: Option<String>,
    /// The hardware.
    pub instance: InstanceSpec,
    /// Replica bounds.
    pub scaling: ScalingSpec,
    /// For providers that serve an already-running URL (`http`): that URL.
    pub endpoint_url: Option<String>,
}

/// How to find a deployed endpoint again: the `provider_model_id` and `endpoint_url` columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointHandle {
    /// The provider's own name for the endpoint (HF endpoint name).
    pub provider_model_id: String,
    /// Where predictions go, once known.
    pub endpoint_url: Option<String>,
    /// `endpoint_url` parsed by the first prediction and kept: the routing cache holds the
    /// handle, and parsing a URL (IDNA host processing) on every prediction was ~5 % of the
    /// gateway's time.
    #[serde(skip)]
    parsed: ParsedUrl,
}

impl EndpointHandle {
    /// The handle of endpoint `provider_model_id`, served at `endpoint_url` once known.
    pub fn new(provider_model_id: impl Into<String>, endpoint_url: Option<String>) -> Self {
        Self {
            provider_model_id: provider_model_id.into(),
            endpoint_url,
            parsed: ParsedUrl::default(),
        }
    }

    /// The same endpoint served at `endpoint_url`.
    #[must_use]
    pub fn with_url(self, endpoint_url: Option<String>) -> Self {
        Self::new(self.provider_model_id, endpoint_url)
    }

    /// `endpoint_url` parsed (once per handle; `None` without a URL or when it does not
    /// parse, which the caller reports with the text).
    pub fn parsed_url(&self) -> Option<&reqwest::Url> {
        self.parsed().map(|(url, _)| url)
    }

    /// `endpoint_url` as the predict path's client takes it ([`super::forward::Forwarder`]),
    /// from the parsed URL's text; parsed once with [`Self::parsed_url`].
    pub fn parsed_uri(&self) -> Option<&hyper::Uri> {
        self.parsed().map(|(_, uri)| uri)
    }

    fn parsed(&self) -> Option<&(reqwest::Url, hyper::Uri)> {
        let raw = self.endpoint_url.as_deref()?;
        let (source, parsed) = self.parsed.0.get_or_init(|| {
            let both = reqwest::Url::parse(raw).ok().and_then(|url| {
                let uri = hyper::Uri::try_from(url.as_str()).ok()?;
                Some((url, uri))
            });
            (raw.to_owned(), both)
        });
        // The fields are public: a URL changed after the first parse is not the one cached.
        if source == raw { parsed.as_ref() } else { None }
    }
}

/// A URL parsed from a handle's text, not part of the handle's identity.
#[derive(Debug, Clone, Default)]
#[allow(clippy::type_complexity)]
struct ParsedUrl(std::sync::OnceLock<(String, Option<(reqwest::Url, hyper::Uri)>)>);

impl PartialEq for ParsedUrl {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ParsedUrl {}

/// The provider's lifecycle states (HF names; other providers map onto them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProviderState {
    /// Accepted, not provisioning yet.
    Pending,
    /// Provisioning (billed on HF).
    Initializing,
    /// Applying an update; the previous revision still serves.
    Updating,
    /// An update failed (terminal until the next update).
    UpdateFailed,
    /// Serving.
    Running,
    /// Stopped by request; not billed.
    Paused,
    /// Failed to deploy (terminal).
    Failed,
    /// No replica; the next request wakes it. Not billed.
    ScaledToZero,
    /// A state this code does not know; kept verbatim.
    Unknown(String),
}

impl ProviderState {
    /// Parses the provider's string (HF spelling).
    pub fn parse(raw: &str) -> Self {
        match raw {
            "pending" => Self::Pending,
            "initializing" => Self::Initializing,
            "updating" => Self::Updating,
            "updateFailed" => Self::UpdateFailed,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "failed" => Self::Failed,
            "scaledToZero" => Self::ScaledToZero,
            other => Self::Unknown(other.to_owned()),
        }
    }

    /// The string stored in `deployed_models.provider_status`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Initializing => "initializing",
            Self::Updating => "updating",
            Self::UpdateFailed => "updateFailed",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Failed => "failed",
            Self::ScaledToZero => "scaledToZero",
            Self::Unknown(raw) => raw,
        }
    }

    /// Whether time in this state is billed (HF bills `initializing` and `running`).
    pub fn is_billable(&self) -> bool {
        matches!(self, Self::Initializing | Self::Running | Self::Updating)
    }

    /// Whether the endpoint will not get better by waiting.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed | Self::UpdateFailed)
    }

    /// Whether the provider is still working towards `running`.
    pub fn is_provisioning(&self) -> bool {
        matches!(self, Self::Pending | Self::Initializing | Self::Updating)
    }
}

/// One endpoint of a provider's listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedEndpoint {
    /// The provider's name for it ([`EndpointHandle::provider_model_id`]).
    pub name: String,
    /// Its state.
    pub state: ProviderState,
    /// When the provider created it, if it says.
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What the provider says about an endpoint now.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointStatus {
    /// The provider's state.
    pub state: ProviderState,
    /// Where predictions go (absent while pending, paused or failed).
    pub url: Option<String>,
    /// Replicas ready to serve.
    pub ready_replicas: u32,
    /// Replicas the provider aims for.
    pub target_replicas: u32,
    /// The provider's status message (failure reason, progress).
    pub message: Option<String>,
    /// Ready as the official HF client defines it: `running`, a URL, and the health route
    /// answered 200.
    pub ready: bool,
}

/// A prediction request, as received by the API (docs/design/http-api.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictRequest {
    /// The model inputs (any JSON).
    pub inputs: Value,
    /// Task parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// The deployment's task, when known: some tasks shape the body differently
    /// (feature-extraction puts its parameters at the root).
    #[serde(skip)]
    pub task: Option<String>,
}

/// A prediction, normalised to one shape whatever the serving container returned.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictResponse {
    /// The predictions (the serverless `[[…]]` form is unwrapped to the container's `[…]`).
    pub predictions: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_parses_its_url_once_and_never_serves_a_stale_one() {
        let handle = EndpointHandle::new("e", Some("https://e.example.cloud/v1".into()));
        let first = handle.parsed_url().expect("parses");
        assert_eq!(first.as_str(), "https://e.example.cloud/v1");
        assert!(std::ptr::eq(first, handle.parsed_url().expect("cached")));
        let uri = handle.parsed_uri().expect("the same text as a URI");
        assert_eq!(
            (uri.scheme_str(), uri.host(), uri.path()),
            (Some("https"), Some("e.example.cloud"), "/v1")
        );
        // Equality and the stored form ignore the cache.
        assert_eq!(
            handle,
            EndpointHandle::new("e", Some("https://e.example.cloud/v1".into()))
        );
        let stored = serde_json::to_value(&handle).expect("serializes");
        assert_eq!(
            stored,
            serde_json::json!({"provider_model_id": "e", "endpoint_url": "https://e.example.cloud/v1"})
        );

        let mut moved = handle.clone();
        moved.endpoint_url = Some("https://other.example.cloud".into());
        assert!(
            moved.parsed_url().is_none(),
            "a changed URL is not the cached one"
        );
        assert_eq!(
            handle
                .with_url(Some("https://other.example.cloud".into()))
                .parsed_url()
                .map(reqwest::Url::as_str),
            Some("https://other.example.cloud/")
        );
        assert!(EndpointHandle::new("e", None).parsed_url().is_none());
        assert!(
            EndpointHandle::new("e", Some("not a url".into()))
                .parsed_url()
                .is_none()
        );
    }
}
