//! Providers: where model endpoints run (docs/design/providers.md).
//!
//! The [`Provider`] trait is the whole contract between the worker/API and a hosting
//! service: deploy, status, undeploy, predict. Its values live in [`types`], its failures
//! in [`ProviderError`] (whose variant decides retry, compensation and HTTP mapping), its
//! configuration in [`config`]. [`ProviderRegistry`] maps names to configured instances,
//! built once at start-up. Implementations: [`huggingface`] (Inference Endpoints) and
//! [`http`] (an endpoint already running at a URL). Adding one is a module plus one line
//! in [`registry`].

pub mod config;
pub mod egress;
pub mod error;
pub mod forward;
pub mod http;
pub mod huggingface;
pub mod instrumented;
pub mod registry;
pub mod types;

#[cfg(test)]
mod fake;

use async_trait::async_trait;

pub use config::{HttpProviderConfig, HuggingFaceConfig, ProviderConfigError, ProvidersConfig};
pub use error::ProviderError;
pub use registry::ProviderRegistry;
pub use types::{
    DeploymentSpec, EndpointHandle, EndpointStatus, InstanceSpec, ListedEndpoint, PredictRequest,
    PredictResponse, ProviderState, ScalingSpec,
};

/// A hosting service for model endpoints.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The registry name (`deployed_models.provider`).
    fn name(&self) -> &'static str;

    /// Creates the endpoint for `spec`, idempotently: calling it again for the same
    /// deployment returns the same endpoint.
    async fn deploy(&self, spec: &DeploymentSpec) -> Result<EndpointHandle, ProviderError>;

    /// What the provider says about the endpoint now.
    async fn get_status(&self, handle: &EndpointHandle) -> Result<EndpointStatus, ProviderError>;

    /// Deletes the endpoint; an endpoint already gone is success.
    async fn undeploy(&self, handle: &EndpointHandle) -> Result<(), ProviderError>;

    /// Sends one prediction to the endpoint.
    async fn predict(
        &self,
        handle: &EndpointHandle,
        req: PredictRequest,
    ) -> Result<PredictResponse, ProviderError>;

    /// Opens `POST {endpoint url}/{path}` with a JSON `body`, passed through untouched (the
    /// OpenAI-compatible routes of the TGI/TEI containers, `v1/chat/completions` and
    /// friends), and returns the answer once its headers arrived, whatever its status: the
    /// caller reads (or streams) the body and maps the status. Providers that cannot pass a
    /// request through refuse with [`ProviderError::Invalid`].
    async fn open(
        &self,
        _handle: &EndpointHandle,
        _path: &str,
        _body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        Err(ProviderError::invalid(format!(
            "the {} provider does not pass requests through",
            self.name()
        )))
    }

    /// Start-up work after the registry is built (HF: refresh the hardware catalogue from
    /// `GET /v2/provider`). Best effort: the built-in data stands in when it fails.
    async fn refresh(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Checks `spec` without any network call: what `deploy` would refuse as
    /// [`ProviderError::Invalid`] is refused here first, so a bad request never reaches the
    /// queue.
    fn validate(&self, _spec: &DeploymentSpec) -> Result<(), ProviderError> {
        Ok(())
    }

    /// The handle `deploy` returns for `spec`, known without calling the provider when its
    /// names are deterministic (HF). Compensation uses it to delete an endpoint whose create
    /// may have succeeded although we never saw the answer. `None`: nothing to clean up.
    fn handle_for(&self, _spec: &DeploymentSpec) -> Option<EndpointHandle> {
        None
    }

    /// Every endpoint this provider's account holds, ours or not (the reconciler's orphan
    /// sweep). Providers that never create endpoints (an endpoint someone else runs)
    /// hold none.
    async fn list_endpoints(&self) -> Result<Vec<ListedEndpoint>, ProviderError> {
        Ok(Vec::new())
    }

    /// Price per hour of `spec` at its largest, when the provider bills by the hour
    /// (`None`: not billed by us, e.g. an endpoint someone else runs).
    fn hourly_cost_usd(&self, _spec: &DeploymentSpec) -> Result<Option<f64>, ProviderError> {
        Ok(None)
    }
}
