//! The `http` provider: an endpoint someone already runs at a URL (self-hosted TGI, TEI,
//! KServe, a container on a VM) that speaks the HF inference protocol.
//!
//! There is nothing to provision: deploy validates and records the URL, status is `running`
//! (and ready) when `{url}{health_route}` answers 200, undeploy forgets the endpoint without
//! touching it (we do not own it), and predictions reuse the HF inference client. It exists
//! to keep the [`Provider`] abstraction honest: a second provider is this module plus one
//! line in the registry.
//!
//! Endpoint URLs are an SSRF vector: [`super::egress`] decides where this provider may
//! connect (`HTTP_PROVIDER_ALLOWED_HOSTS`), on the URL when the deploy is accepted and
//! before every call, and on resolved addresses at connect time; redirects are not followed.

use std::sync::Arc;

use async_trait::async_trait;

use super::config::{HttpProviderConfig, ProviderConfigError};
use super::egress::{AllowList, GuardedResolver, Resolver};
use super::forward::Forwarder;
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
    allow: Arc<AllowList>,
}

impl HttpProvider {
    /// The registry name.
    pub const NAME: &'static str = "http";

    /// A provider with one pooled HTTP client.
    pub fn new(config: &HttpProviderConfig) -> Result<Self, ProviderConfigError> {
        let allow = Arc::new(config.allowed_hosts.clone());
        let guarded = GuardedResolver::new(allow.clone(), config.lookup.clone());
        let cannot = |e: String| ProviderConfigError {
            variable: "PREDICT_TIMEOUT_SECONDS",
            reason: format!("cannot build the HTTP client: {e}"),
        };
        let http = crate::provider::huggingface::inference::pooled_client()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(guarded.clone()))
            .build()
            .map_err(|e| cannot(e.to_string()))?;
        let forward = Forwarder::new(
            Resolver::Guarded(guarded),
            config.timeout,
            config.connections_per_host,
        )
        .map_err(cannot)?;
        let inference = InferenceClient::new(http, forward, None, config.timeout, None)
            .map_err(cannot)?
            .with_max_body(config.max_body_bytes);
        Ok(Self {
            inference,
            health_route: config.health_route.clone(),
            allow,
        })
    }

    fn url_of(handle: &EndpointHandle) -> &str {
        handle
            .endpoint_url
            .as_deref()
            .unwrap_or(&handle.provider_model_id)
    }

    /// Checks `raw` against the allow-list; the error names `endpoint_url` and the rule.
    fn parse_url(&self, raw: &str) -> Result<String, ProviderError> {
        let url = reqwest::Url::parse(raw)
            .map_err(|e| ProviderError::invalid(format!("endpoint_url: not a URL ({e})")))?;
        self.allow
            .check_url(&url)
            .map_err(|why| ProviderError::invalid(format!("endpoint_url: {why}")))?;
        Ok(raw.to_owned())
    }
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
        self.parse_url(raw).map(drop)
    }

    async fn deploy(&self, spec: &DeploymentSpec) -> Result<EndpointHandle, ProviderError> {
        let raw = spec
            .endpoint_url
            .as_deref()
            .ok_or_else(|| ProviderError::invalid("the http provider needs an endpoint URL"))?;
        let url = self.parse_url(raw)?;
        Ok(EndpointHandle::new(url.clone(), Some(url)))
    }

    async fn get_status(&self, handle: &EndpointHandle) -> Result<EndpointStatus, ProviderError> {
        let url = Self::url_of(handle);
        // Checked before every call too: the list may have changed since the deploy.
        let healthy = match self.parse_url(url) {
            Ok(_) => self.inference.is_healthy(url, &self.health_route).await,
            Err(refused) => {
                tracing::warn!(reason = %refused.message(), "endpoint refused by the egress allow-list");
                false
            }
        };
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

    async fn open(
        &self,
        handle: &EndpointHandle,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        let url = self
            .parse_url(Self::url_of(handle))
            .map_err(|e| ProviderError::transient(e.message()))?;
        self.inference.open(url.as_str(), path, body).await
    }

    async fn predict(
        &self,
        handle: &EndpointHandle,
        req: PredictRequest,
    ) -> Result<PredictResponse, ProviderError> {
        match (handle.parsed_url(), handle.parsed_uri()) {
            (Some(url), Some(uri)) => {
                self.allow
                    .check_url(url)
                    .map_err(|why| ProviderError::transient(format!("endpoint_url: {why}")))?;
                self.inference.predict(uri, &req).await
            }
            _ => {
                let url = self
                    .parse_url(Self::url_of(handle))
                    .map_err(|e| ProviderError::transient(e.message()))?;
                self.inference.predict_to(&url, &req).await
            }
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
        let loopback = AllowList::parse(AllowList::DEVELOPMENT_DEFAULT).expect("list");
        HttpProvider::new(&HttpProviderConfig::new(Duration::from_secs(2), loopback))
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
            .deploy(&spec(Some("https://localhost/generate")))
            .await
            .expect("deploy");
        assert_eq!(
            handle.endpoint_url.as_deref(),
            Some("https://localhost/generate")
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

    /// Connections to `port` in state ESTABLISHED on the server's side (`/proc/net/tcp`).
    fn established_to(port: u16) -> usize {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
        table
            .lines()
            .skip(1)
            .filter(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields[1].rsplit(':').next().unwrap_or_default();
                u16::from_str_radix(local_port, 16).ok() == Some(port) && fields[3] == "01"
            })
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_leaves_at_most_the_idle_bound_of_pooled_connections() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use crate::provider::huggingface::inference::IDLE_CONNECTIONS_PER_HOST;

        let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let app = {
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            axum::Router::new().route(
                "/model",
                axum::routing::post(move || {
                    let (in_flight, peak) = (in_flight.clone(), peak.clone());
                    async move {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        axum::Json(json!([{"label": "ok"}]))
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        let provider = provider();
        let handle = provider
            .deploy(&spec(Some(&format!("http://127.0.0.1:{port}/model"))))
            .await
            .expect("deploy");

        let burst = 3 * IDLE_CONNECTIONS_PER_HOST;
        let calls = (0..burst).map(|_| {
            let (provider, handle) = (&provider, &handle);
            async move {
                let request = PredictRequest {
                    inputs: json!("hi"),
                    parameters: None,
                    task: None,
                };
                provider.predict(handle, request).await
            }
        });
        let answers = futures_util::future::join_all(calls).await;

        assert!(answers.iter().all(Result::is_ok), "every call answered");
        let peak = peak.load(Ordering::SeqCst);
        assert!(
            peak > IDLE_CONNECTIONS_PER_HOST,
            "the burst must open more connections than the bound: {peak} at once"
        );
        let mut open = established_to(port);
        for _ in 0..50 {
            if open <= IDLE_CONNECTIONS_PER_HOST {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            open = established_to(port);
        }
        println!("burst of {burst}: {peak} requests at once, {open} connections kept");
        assert!(
            open <= IDLE_CONNECTIONS_PER_HOST,
            "{open} connections stay open after the burst, bound {IDLE_CONNECTIONS_PER_HOST}"
        );
        assert!(
            open > 0,
            "the pool keeps warm connections for the next calls"
        );
    }
}
