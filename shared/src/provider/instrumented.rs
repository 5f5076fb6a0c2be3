//! [`Instrumented`]: a [`Provider`] that counts and times every management call of the one
//! it wraps (`hokusai_provider_requests_total{provider,operation,outcome}`,
//! `hokusai_provider_request_duration_seconds{provider,operation}`). The registry wraps
//! every provider, so no call escapes. Predictions are measured by the predict route
//! itself (`hokusai_predict_*`), with the model as label.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{
    DeploymentSpec, EndpointHandle, EndpointStatus, ListedEndpoint, PredictRequest,
    PredictResponse, Provider, ProviderError,
};
use crate::telemetry::metrics::names;

/// Wraps a provider with metrics.
pub struct Instrumented(pub Arc<dyn Provider>);

impl Instrumented {
    async fn measure<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let result = call.await;
        let provider = self.0.name();
        metrics::counter!(names::PROVIDER_REQUESTS, "provider" => provider,
            "operation" => operation, "outcome" => outcome(&result))
        .increment(1);
        metrics::histogram!(names::PROVIDER_DURATION, "provider" => provider, "operation" => operation)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// The outcome label of a call.
fn outcome<T>(result: &Result<T, ProviderError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProviderError::Transient { .. }) => "transient",
        Err(ProviderError::Timeout { .. }) => "timeout",
        Err(ProviderError::RateLimited { .. }) => "rate_limited",
        Err(ProviderError::Unavailable { .. }) => "unavailable",
        Err(ProviderError::NotFound { .. }) => "not_found",
        Err(ProviderError::Conflict { .. }) => "conflict",
        Err(ProviderError::Invalid { .. }) => "invalid",
        Err(ProviderError::Unauthorized { .. }) => "unauthorized",
    }
}

#[async_trait]
impl Provider for Instrumented {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn deploy(&self, spec: &DeploymentSpec) -> Result<EndpointHandle, ProviderError> {
        self.measure("deploy", self.0.deploy(spec)).await
    }

    async fn get_status(&self, handle: &EndpointHandle) -> Result<EndpointStatus, ProviderError> {
        self.measure("get_status", self.0.get_status(handle)).await
    }

    async fn undeploy(&self, handle: &EndpointHandle) -> Result<(), ProviderError> {
        self.measure("undeploy", self.0.undeploy(handle)).await
    }

    async fn list_endpoints(&self) -> Result<Vec<ListedEndpoint>, ProviderError> {
        self.measure("list_endpoints", self.0.list_endpoints())
            .await
    }

    async fn predict(
        &self,
        handle: &EndpointHandle,
        req: PredictRequest,
    ) -> Result<PredictResponse, ProviderError> {
        self.0.predict(handle, req).await
    }

    async fn open(
        &self,
        handle: &EndpointHandle,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        self.0.open(handle, path, body).await
    }

    async fn refresh(&self) -> Result<(), ProviderError> {
        self.measure("refresh", self.0.refresh()).await
    }

    fn validate(&self, spec: &DeploymentSpec) -> Result<(), ProviderError> {
        self.0.validate(spec)
    }

    fn handle_for(&self, spec: &DeploymentSpec) -> Option<EndpointHandle> {
        self.0.handle_for(spec)
    }

    fn hourly_cost_usd(&self, spec: &DeploymentSpec) -> Result<Option<f64>, ProviderError> {
        self.0.hourly_cost_usd(spec)
    }
}
