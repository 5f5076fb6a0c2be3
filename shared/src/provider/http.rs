//! The `http` provider: an endpoint someone already runs at a URL (self-hosted TGI, TEI,
//! KServe, a container on a VM) that speaks the HF inference protocol.
//!
//! There is nothing to provision: deploy validates and records the URL, status is `running`
//! (and ready) when `{url}{health_route}` answers 200, undeploy forgets the endpoint without
//! touching it (we do not own it), and predictions reuse the HF inference client. It exists
//! to keep the [`Provider`] abstraction honest: a second provider is this module plus one
//! line in the registry.

use async_trait::async_trait;

use super::config::{HttpProviderConfig, ProviderConfigError};
use super::huggingface::inference::InferenceClient;
use super::{
    DeploymentSpec, EndpointHandle, EndpointStatus, PredictRequest, PredictResponse, Provider,
    ProviderError, ProviderState,
};

/// Endpoints already running at a URL.
#[derive(Debug)]
pub struct HttpProvider {
    inference: InferenceClient,
    health_route: String,
}

impl HttpProvider {
    /// The registry name.
    pub const NAME: &'static str = "http";

    /// A provider with one pooled HTTP client.
    pub fn new(config: &HttpProviderConfig) -> Result<Self, ProviderConfigError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| ProviderConfigError {
                variable: "PREDICT_TIMEOUT_SECONDS",
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            inference: InferenceClient::new(http, None, config.timeout, None),
            health_route: config.health_route.clone(),
        })
    }

    fn url_of(handle: &EndpointHandle) -> &str {
        handle
            .endpoint_url
            .as_deref()
            .unwrap_or(&handle.provider_model_id)
    }
}

/// Checks that `raw` is an absolute http(s) URL with a host.
fn parse_url(raw: &str) -> Result<String, ProviderError> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ProviderError::invalid(format!("endpoint URL `{raw}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ProviderError::invalid(format!(
            "endpoint URL `{raw}` must be http(s) with a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ProviderError::invalid(
            "endpoint URL must not carry credentials",
        ));
    }
    Ok(raw.to_owned())
}

#[async_trait]
impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn validate(&self, spec: &DeploymentSpec) -> Result<(), ProviderError> {
        let raw = spec
            .endpoint_url
            .as_deref()
            .ok_or_else(|| ProviderError::invalid("the http provider needs an endpoint URL"))?;
        parse_url(raw).map(drop)
    }

    async fn deploy(&self, spec: &DeploymentSpec) -> Result<EndpointHandle, ProviderError> {
        let raw = spec
            .endpoint_url
            .as_deref()
            .ok_or_else(|| ProviderError::invalid("the http provider needs an endpoint URL"))?;
        let url = parse_url(raw)?;
        Ok(EndpointHandle::new(url.clone(), Some(url)))
    }

    async fn get_status(&self, handle: &EndpointHandle) -> Result<EndpointStatus, ProviderError> {
        let url = Self::url_of(handle);
        let healthy = self.inference.is_healthy(url, &self.health_route).await;
        let (state, message) = if healthy {
            (ProviderState::Running, None)
        } else {
            let why = format!("{} did not answer 200", self.health_route);
            (ProviderState::Initializing, Some(why))
        };
        Ok(EndpointStatus {
            state,
            url: Some(url.to_owned()),
            ready_replicas: u32::from(healthy),
            target_replicas: 1,
            message,
            ready: healthy,
        })
    }

    async fn undeploy(&self, _handle: &EndpointHandle) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn predict(
        &self,
        handle: &EndpointHandle,
        req: PredictRequest,
    ) -> Result<PredictResponse, ProviderError> {
        match handle.parsed_url() {
            Some(url) => self.inference.predict(url.clone(), &req).await,
            None => self.inference.predict(Self::url_of(handle), &req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::domain::{DeploymentId, ModelId};
    use crate::provider::fake::{Fake, Reply};
    use crate::provider::types::{InstanceSpec, ScalingSpec};

    fn provider() -> HttpProvider {
        HttpProvider::new(&HttpProviderConfig {
            timeout: Duration::from_secs(2),
            health_route: "/health".into(),
        })
        .expect("provider")
    }

    fn spec(url: Option<&str>) -> DeploymentSpec {
        DeploymentSpec {
            deployment_id: DeploymentId::new(),
            model_id: ModelId::parse("tgi-model").expect("model id"),
            model_version: None,
            repository: None,
            revision: None,
            task: Some("text-generation".into()),
            framework: None,
            instance: InstanceSpec {
                vendor: "self".into(),
                region: "local".into(),
                instance_type: "vm".into(),
                instance_size: "x1".into(),
            },
            scaling: ScalingSpec::default(),
            endpoint_url: url.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn deploy_validates_and_records_the_url() {
        let provider = provider();
        let handle = provider
            .deploy(&spec(Some("https://tgi.internal/generate")))
            .await
            .expect("deploy");
        assert_eq!(
            handle.endpoint_url.as_deref(),
            Some("https://tgi.internal/generate")
        );
        for bad in [
            None,
            Some("not a url"),
            Some("ftp://x/y"),
            Some("http://u:p@x/"),
        ] {
            let err = provider.deploy(&spec(bad)).await.unwrap_err();
            assert_eq!(err.kind(), "invalid", "{bad:?}");
        }
        assert_eq!(provider.hourly_cost_usd(&spec(None)).unwrap(), None);
    }

    #[tokio::test]
    async fn status_is_running_only_while_the_health_route_answers() {
        let fake = Fake::start(|_, seen| match seen.len() {
            0 => Reply::text(200, "ok"),
            _ => Reply::text(500, "down"),
        })
        .await;
        let provider = provider();
        let handle = provider
            .deploy(&spec(Some(&format!("{}/model", fake.base))))
            .await
            .expect("deploy");

        let up = provider.get_status(&handle).await.expect("status");
        let down = provider.get_status(&handle).await.expect("status");

        assert_eq!((up.state, up.ready), (ProviderState::Running, true));
        assert_eq!((down.state.as_str(), down.ready), ("initializing", false));
        assert_eq!(fake.requests()[0].path, "/model/health");
        provider
            .undeploy(&handle)
            .await
            .expect("undeploy is a no-op");
        assert_eq!(fake.requests().len(), 2);
    }

    #[tokio::test]
    async fn predictions_use_the_hf_inference_protocol() {
        let fake = Fake::start(|_, _| Reply::json(200, json!([{"generated_text": "hello"}]))).await;
        let provider = provider();
        let handle = provider
            .deploy(&spec(Some(&format!("{}/model", fake.base))))
            .await
            .expect("deploy");
        let request = PredictRequest {
            inputs: json!("hi"),
            parameters: Some(json!({"max_new_tokens": 5})),
            task: Some("text-generation".into()),
        };

        let response = provider.predict(&handle, request).await.expect("predict");

        assert_eq!(response.predictions, json!([{"generated_text": "hello"}]));
        let sent = &fake.requests()[0];
        assert_eq!(
            sent.json(),
            json!({"inputs": "hi", "parameters": {"max_new_tokens": 5}})
        );
        assert_eq!(sent.header("authorization"), None);
    }
}
