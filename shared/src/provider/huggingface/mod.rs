//! The HuggingFace Inference Endpoints adapter (docs/design/providers.md,
//! docs/contracts/huggingface-endpoints.md).
//!
//! Files by concern: [`client`] (management routes), [`wire`] (their JSON), [`names`]
//! (deterministic endpoint names), [`catalogue`] (hardware and prices), [`retry`] (backon
//! policy), [`errors`] (answers to [`ProviderError`]), [`inference`] (health and predictions).
//! [`HuggingFaceProvider`] ties them into a [`Provider`]: deploy validates the spec against
//! the catalogue before any call, then creates (or adopts) the endpoint named after the
//! deployment; status is ready only when `running`, with a URL, and its health route says 200.

pub mod catalogue;
pub mod client;
pub mod errors;
pub mod inference;
pub mod names;
pub mod retry;
pub mod wire;

#[cfg(test)]
mod tests;

use std::sync::RwLock;

use async_trait::async_trait;

use self::catalogue::Catalogue;
use self::client::ManagementClient;
use self::inference::InferenceClient;
use self::names::EndpointName;
use self::retry::{RetryPolicy, RetrySleeper};
use self::wire::{CreateEndpoint, Endpoint};
use super::config::{HuggingFaceConfig, ProviderConfigError};
use super::egress::Resolver;
use super::forward::Forwarder;
use super::{
    DeploymentSpec, EndpointHandle, EndpointStatus, ListedEndpoint, PredictRequest,
    PredictResponse, Provider, ProviderError,
};

/// The health route assumed when an Endpoint object has none.
const DEFAULT_HEALTH_ROUTE: &str = "/health";

/// HuggingFace Inference Endpoints as a [`Provider`].
#[derive(Debug)]
pub struct HuggingFaceProvider {
    management: ManagementClient,
    inference: InferenceClient,
    catalogue: RwLock<Catalogue>,
}

impl HuggingFaceProvider {
    /// The registry name.
    pub const NAME: &'static str = "huggingface";

    /// A provider waiting retries with tokio's clock.
    pub fn new(config: &HuggingFaceConfig) -> Result<Self, ProviderConfigError> {
        Self::with_sleeper(config, RetrySleeper::Tokio)
    }

    /// A provider whose retries wait with `sleeper` (tests record delays instead).
    pub fn with_sleeper(
        config: &HuggingFaceConfig,
        sleeper: RetrySleeper,
    ) -> Result<Self, ProviderConfigError> {
        let http = inference::pooled_client()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ProviderConfigError {
                variable: "HUGGINGFACE_API_BASE",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let retry = RetryPolicy {
            max_retries: config.max_retries,
            max_wait: config.timeout,
            sleeper,
        };
        let management = ManagementClient::new(
            http.clone(),
            &config.api_base,
            &config.namespace,
            config.token.clone(),
            retry,
        );
        let forward = Forwarder::new(
            Resolver::System,
            config.predict_timeout,
            config.connections_per_host,
        )
        .map_err(|e| ProviderConfigError {
            variable: "HUGGINGFACE_API_BASE",
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
        let inference = InferenceClient::new(
            http,
            forward,
            Some(config.token.clone()),
            config.predict_timeout,
            config.scale_up_timeout,
        )
        .map_err(|e| ProviderConfigError {
            variable: "HUGGINGFACE_API_KEY",
            reason: e,
        })?
        .with_max_body(config.max_body_bytes);
        Ok(Self {
            management,
            inference,
            catalogue: RwLock::new(Catalogue::builtin()),
        })
    }

    /// The management client, for operations outside the [`Provider`] trait (pause, list…).
    pub fn management(&self) -> &ManagementClient {
        &self.management
    }

    /// A copy of the current catalogue.
    pub fn catalogue(&self) -> Catalogue {
        self.catalogue
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|_| Catalogue::builtin())
    }

    /// Replaces the catalogue with `GET /v2/provider`; returns the number of CPU offers.
    /// On failure the current catalogue stays.
    pub async fn refresh_catalogue(&self) -> Result<usize, ProviderError> {
        let listing = self.management.provider_listing().await?;
        let fresh = Catalogue::from_provider_listing(&listing)
            .ok_or_else(|| ProviderError::transient("GET /v2/provider listed no CPU offer"))?;
        let count = fresh.offers().len();
        if let Ok(mut current) = self.catalogue.write() {
            *current = fresh;
        }
        Ok(count)
    }

    /// Price per hour of `spec` (price × `max_replica`); `Invalid` for unknown hardware.
    pub fn hourly_cost_usd(&self, spec: &DeploymentSpec) -> Result<f64, ProviderError> {
        self.catalogue().hourly_cost_usd(spec)
    }

    /// The create body for `spec`, validated before any network call.
    pub fn create_body(&self, spec: &DeploymentSpec) -> Result<CreateEndpoint, ProviderError> {
        let repository = spec
            .repository
            .as_deref()
            .filter(|r| !r.trim().is_empty())
            .ok_or_else(|| ProviderError::invalid("a HuggingFace deployment needs a repository"))?;
        self.catalogue().lookup(&spec.instance)?;
        let name = EndpointName::for_deployment(&spec.model_id, spec.deployment_id);
        Ok(CreateEndpoint::from_spec(&name, spec, repository))
    }

    /// The status of `endpoint`, probing its health route when it claims to run.
    async fn status_of(&self, endpoint: &Endpoint) -> EndpointStatus {
        let mut status = endpoint.to_status();
        if let (super::ProviderState::Running, Some(url)) = (&status.state, &status.url) {
            let route = endpoint
                .health_route
                .as_deref()
                .unwrap_or(DEFAULT_HEALTH_ROUTE);
            status.ready = self.inference.is_healthy(url, route).await;
        }
        status
    }
}

#[async_trait]
impl Provider for HuggingFaceProvider {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    async fn deploy(&self, spec: &DeploymentSpec) -> Result<EndpointHandle, ProviderError> {
        let body = self.create_body(spec)?;
        let endpoint = self.management.create_or_adopt(&body).await?;
        Ok(EndpointHandle::new(endpoint.name, endpoint.status.url))
    }

    async fn get_status(&self, handle: &EndpointHandle) -> Result<EndpointStatus, ProviderError> {
        let endpoint = self.management.get(&handle.provider_model_id).await?;
        Ok(self.status_of(&endpoint).await)
    }

    fn validate(&self, spec: &DeploymentSpec) -> Result<(), ProviderError> {
        self.create_body(spec).map(drop)
    }

    fn handle_for(&self, spec: &DeploymentSpec) -> Option<EndpointHandle> {
        let name = EndpointName::for_deployment(&spec.model_id, spec.deployment_id);
        Some(EndpointHandle::new(name.as_str(), None))
    }

    async fn undeploy(&self, handle: &EndpointHandle) -> Result<(), ProviderError> {
        match self.management.delete(&handle.provider_model_id).await {
            Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }

    async fn predict(
        &self,
        handle: &EndpointHandle,
        req: PredictRequest,
    ) -> Result<PredictResponse, ProviderError> {
        if let Some(uri) = handle.parsed_uri() {
            return self.inference.predict(uri, &req).await;
        }
        let url = match &handle.endpoint_url {
            Some(url) => url.clone(),
            None => self.url_of(&handle.provider_model_id).await?,
        };
        self.inference.predict_to(&url, &req).await
    }

    async fn open(
        &self,
        handle: &EndpointHandle,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = match &handle.endpoint_url {
            Some(url) => url.clone(),
            None => self.url_of(&handle.provider_model_id).await?,
        };
        self.inference.open(&url, path, body).await
    }

    async fn refresh(&self) -> Result<(), ProviderError> {
        self.refresh_catalogue().await.map(drop)
    }

    async fn list_endpoints(&self) -> Result<Vec<ListedEndpoint>, ProviderError> {
        let endpoints = self.management.list().await?;
        Ok(endpoints.iter().map(Endpoint::to_listed).collect())
    }

    fn hourly_cost_usd(&self, spec: &DeploymentSpec) -> Result<Option<f64>, ProviderError> {
        HuggingFaceProvider::hourly_cost_usd(self, spec).map(Some)
    }
}

impl HuggingFaceProvider {
    /// The inference URL of an endpoint whose handle does not record one yet.
    async fn url_of(&self, name: &str) -> Result<String, ProviderError> {
        let endpoint = self.management.get(name).await?;
        endpoint
            .status
            .url
            .ok_or_else(|| ProviderError::Unavailable {
                message: format!("endpoint {name} has no URL yet ({})", endpoint.status.state),
                retry_after: inference::DEFAULT_WAKE_RETRY_AFTER,
            })
    }
}
