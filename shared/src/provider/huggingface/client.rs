//! The HF v2 management API: one pooled `reqwest` client, one method per route of
//! docs/contracts/huggingface-endpoints.md, each retried by [`RetryPolicy`].
//!
//! Create is the exception to blind retries: a create that may have happened (409, a
//! timeout, a 5xx) is reconciled by reading the endpoint back and adopting it when it matches
//! what we asked for ([`ManagementClient::create_or_adopt`]).

use reqwest::{Method, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors;
use super::retry::RetryPolicy;
use super::wire::{CreateEndpoint, Endpoint, EndpointList};
use crate::config::Secret;
use crate::provider::ProviderError;

/// Management calls for one namespace.
#[derive(Debug, Clone)]
pub struct ManagementClient {
    http: reqwest::Client,
    /// `{api_base}/v2`.
    base: String,
    namespace: String,
    token: Secret,
    retry: RetryPolicy,
}

impl ManagementClient {
    /// A client of `api_base` (with or without the trailing `/v2`).
    pub fn new(
        http: reqwest::Client,
        api_base: &str,
        namespace: &str,
        token: Secret,
        retry: RetryPolicy,
    ) -> Self {
        let trimmed = api_base.trim_end_matches('/');
        let base = if trimmed.ends_with("/v2") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/v2")
        };
        Self {
            http,
            base,
            namespace: namespace.to_owned(),
            token,
            retry,
        }
    }

    fn url(&self, name: Option<&str>, action: Option<&str>) -> String {
        let mut url = format!("{}/endpoint/{}", self.base, self.namespace);
        for part in [name, action].into_iter().flatten() {
            url.push('/');
            url.push_str(part);
        }
        url
    }

    /// One request; a non-2xx answer becomes its [`ProviderError`].
    async fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose())
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| errors::from_transport(&e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(errors::from_response(response).await)
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<T, ProviderError> {
        let response = self.send_once(method, url, body).await?;
        response
            .json()
            .await
            .map_err(|e| errors::from_transport(&e))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        url: String,
        body: Option<&Value>,
    ) -> Result<T, ProviderError> {
        self.retry
            .run(operation, || self.once(method.clone(), &url, body))
            .await
    }

    /// `GET /v2/endpoint/{ns}/{name}`.
    pub async fn get(&self, name: &str) -> Result<Endpoint, ProviderError> {
        self.call("get", Method::GET, self.url(Some(name), None), None)
            .await
    }

    /// `GET /v2/endpoint/{ns}`.
    pub async fn list(&self) -> Result<Vec<Endpoint>, ProviderError> {
        let list: EndpointList = self
            .call("list", Method::GET, self.url(None, None), None)
            .await?;
        Ok(list.items)
    }

    /// `PUT /v2/endpoint/{ns}/{name}` with a partial spec.
    pub async fn update(&self, name: &str, patch: &Value) -> Result<Endpoint, ProviderError> {
        let url = self.url(Some(name), None);
        self.call("update", Method::PUT, url, Some(patch)).await
    }

    /// `DELETE /v2/endpoint/{ns}/{name}`; the body (any JSON) is ignored.
    pub async fn delete(&self, name: &str) -> Result<(), ProviderError> {
        let url = self.url(Some(name), None);
        self.retry
            .run("delete", || async {
                self.send_once(Method::DELETE, &url, None).await.map(drop)
            })
            .await
    }

    /// `POST /v2/endpoint/{ns}/{name}/pause`.
    pub async fn pause(&self, name: &str) -> Result<Endpoint, ProviderError> {
        let url = self.url(Some(name), Some("pause"));
        self.call("pause", Method::POST, url, None).await
    }

    /// `POST /v2/endpoint/{ns}/{name}/resume`; "already running" counts as success.
    pub async fn resume(&self, name: &str) -> Result<Endpoint, ProviderError> {
        let url = self.url(Some(name), Some("resume"));
        match self.call("resume", Method::POST, url, None).await {
            Err(ProviderError::Invalid { message }) if message.contains("already running") => {
                self.get(name).await
            }
            other => other,
        }
    }

    /// `POST /v2/endpoint/{ns}/{name}/scale-to-zero`.
    pub async fn scale_to_zero(&self, name: &str) -> Result<Endpoint, ProviderError> {
        let url = self.url(Some(name), Some("scale-to-zero"));
        self.call("scale_to_zero", Method::POST, url, None).await
    }

    /// `GET /v2/provider`: hardware and prices (no retry: the built-in table stands in).
    pub async fn provider_listing(&self) -> Result<Value, ProviderError> {
        self.once(Method::GET, &format!("{}/provider", self.base), None)
            .await
    }

    /// `POST /v2/endpoint/{ns}`, idempotent: when the create may have happened, the
    /// endpoint is read back and adopted if it matches `body`.
    pub async fn create_or_adopt(&self, body: &CreateEndpoint) -> Result<Endpoint, ProviderError> {
        let json = serde_json::to_value(body).map_err(|e| ProviderError::invalid(e.to_string()))?;
        let url = self.url(None, None);
        self.retry
            .run("create", || async {
                match self.once(Method::POST, &url, Some(&json)).await {
                    Err(err) if may_have_created(&err) => self.adopt(body, err).await,
                    other => other,
                }
            })
            .await
    }

    /// After an ambiguous create: the endpoint if it exists as asked, else why not.
    async fn adopt(
        &self,
        body: &CreateEndpoint,
        cause: ProviderError,
    ) -> Result<Endpoint, ProviderError> {
        match self
            .once::<Endpoint>(Method::GET, &self.url(Some(&body.name), None), None)
            .await
        {
            Ok(existing) if existing.matches(body) => {
                tracing::info!(endpoint = %body.name, "adopted the endpoint of an earlier create");
                Ok(existing)
            }
            Ok(_) => Err(ProviderError::conflict(format!(
                "endpoint {} exists with a different model or hardware",
                body.name
            ))),
            // Nothing was created: a transient cause is retried, a conflict is reported.
            Err(ProviderError::NotFound { .. }) => Err(cause),
            Err(read_error) => Err(read_error),
        }
    }
}

/// Whether a failed create may nevertheless have created the endpoint.
fn may_have_created(err: &ProviderError) -> bool {
    matches!(
        err,
        ProviderError::Conflict { .. }
            | ProviderError::Transient { .. }
            | ProviderError::Timeout { .. }
    )
}
