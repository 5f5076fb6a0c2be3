//! Talking to a running endpoint: the health probe that defines readiness, and
//! predictions in the HF inference protocol (also spoken by self-hosted TGI/TEI, which is
//! why the `http` provider reuses this client).
//!
//! A prediction is `POST {url}` with `{"inputs","parameters"}` (feature-extraction puts its
//! parameters at the root). With a scale-up timeout configured, `X-Scale-Up-Timeout` makes a
//! scaled-to-zero endpoint hold the request while it wakes; without it the proxy answers 503,
//! which becomes [`ProviderError::Unavailable`] with a retry-after.
//!
//! Predictions go through [`Forwarder`] (hyper, nothing on top: the hot path); health probes
//! and the pass-through of [`InferenceClient::open`] through the providers' reqwest client.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::errors;
use crate::config::Secret;
use crate::provider::ProviderError;
use crate::provider::forward::Forwarder;
use crate::provider::types::{PredictRequest, PredictResponse};

/// Idle connections kept per endpoint host. Under a burst the pool grows to one connection
/// per concurrent request; past this many idle ones the extra are closed when they come back,
/// so memory returns after the burst instead of waiting for the idle timeout
/// (docs/design/runtime.md, "Memory"). Light traffic still finds a warm connection.
pub const IDLE_CONNECTIONS_PER_HOST: usize = 32;

/// How long an idle pooled connection stays open (under the 60 s idle timeout common to
/// load balancers, so the pool rarely hands out a connection the far side has closed).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(55);

/// The HTTP client builder every provider starts from: the pool bounds above, and direct
/// connections: `HTTP(S)_PROXY` is not read, so management calls, health probes and
/// predictions ([`Forwarder`], which has no proxy support) all reach the provider the same
/// way, and the `http` provider's egress guard sees every address it connects to
/// (docs/design/providers.md).
pub fn pooled_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
}

/// How long a client should wait when a waking endpoint does not say.
pub const DEFAULT_WAKE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Health probes and predictions against endpoint URLs.
#[derive(Debug, Clone)]
pub struct InferenceClient {
    http: reqwest::Client,
    forward: Forwarder,
    token: Option<Secret>,
    timeout: Duration,
    scale_up_timeout: Option<Duration>,
    /// The largest answer read (`MAX_UPSTREAM_BODY_BYTES`); past it the call fails.
    max_body: usize,
    /// Every prediction's headers, built once: `Accept`, the token (marked sensitive, so
    /// never printed) and the scale-up wait.
    predict_headers: HeaderMap,
    /// A prediction's deadline: the timeout, or the scale-up wait and 5 s when longer.
    predict_deadline: Duration,
}

impl InferenceClient {
    /// A client sending `token` as Bearer (when set), each call bounded by `timeout`;
    /// predictions through `forward`. The error: the token cannot be a header value.
    pub fn new(
        http: reqwest::Client,
        forward: Forwarder,
        token: Option<Secret>,
        timeout: Duration,
        scale_up_timeout: Option<Duration>,
    ) -> Result<Self, String> {
        let mut predict_headers = HeaderMap::new();
        predict_headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        if let Some(token) = &token {
            let mut bearer = HeaderValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| "the token has characters an HTTP header cannot carry".to_owned())?;
            bearer.set_sensitive(true);
            predict_headers.insert(header::AUTHORIZATION, bearer);
        }
        let mut predict_deadline = timeout;
        if let Some(wait) = scale_up_timeout {
            predict_headers.insert("x-scale-up-timeout", HeaderValue::from(wait.as_secs()));
            predict_deadline = timeout.max(wait + Duration::from_secs(5));
        }
        Ok(Self {
            http,
            forward,
            token,
            timeout,
            scale_up_timeout,
            max_body: usize::MAX,
            predict_headers,
            predict_deadline,
        })
    }

    /// Caps the answers read at `max_body` bytes.
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// Whether `GET {url}/{health_route}` answers 200 (joined like the official client).
    pub async fn is_healthy(&self, url: &str, health_route: &str) -> bool {
        let probe = format!(
            "{}/{}",
            url.trim_end_matches('/'),
            health_route.trim_start_matches('/')
        );
        let request = self.authorised(self.http.get(probe).timeout(self.timeout));
        match request.send().await {
            Ok(response) => response.status() == StatusCode::OK,
            Err(err) => {
                tracing::debug!(error = %errors::from_transport(&err), "health probe failed");
                false
            }
        }
    }

    /// Sends one prediction to `uri` exactly (the URI may contain a path).
    pub async fn predict(
        &self,
        uri: &hyper::Uri,
        req: &PredictRequest,
    ) -> Result<PredictResponse, ProviderError> {
        let body = serde_json::to_vec(&WireBody(req))
            .map_err(|e| ProviderError::invalid(format!("inputs cannot be sent: {e}")))?;
        let answer = self
            .forward
            .post(
                uri.clone(),
                &self.predict_headers,
                body,
                self.predict_deadline,
                self.max_body,
            )
            .await?;
        if !answer.status.is_success() {
            let text = String::from_utf8_lossy(&answer.body);
            return Err(classify(answer.status, &answer.headers, &text));
        }
        // The inference protocol is JSON (UTF-8); an answer that is not is passed on as text.
        let value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()));
        Ok(PredictResponse {
            predictions: normalize(&req.inputs, value),
        })
    }

    /// [`Self::predict`] to an endpoint URL given as text (a handle whose URL did not parse
    /// into its cache); a URL that is not one is a transient failure naming it.
    pub async fn predict_to(
        &self,
        url: &str,
        req: &PredictRequest,
    ) -> Result<PredictResponse, ProviderError> {
        let uri = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| hyper::Uri::try_from(u.as_str()).ok())
            .ok_or_else(|| {
                ProviderError::transient(format!(
                    "endpoint URL {} is not a URL",
                    crate::config::redact_url_password(url)
                ))
            })?;
        self.predict(&uri, req).await
    }
}

impl InferenceClient {
    /// `POST {url}/{path}` with the JSON `body` as it is; the answer once its headers arrived
    /// (within the call timeout, or the scale-up wait when configured), whatever its status.
    /// The body is not read here: a streamed answer is the caller's to read chunk by chunk,
    /// under its own idle bound.
    pub async fn open(
        &self,
        url: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, ProviderError> {
        let target = format!(
            "{}/{}",
            url.trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        let mut request = self
            .authorised(self.http.post(target))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
        let mut timeout = self.timeout;
        if let Some(wait) = self.scale_up_timeout {
            request = request.header("X-Scale-Up-Timeout", wait.as_secs().to_string());
            timeout = timeout.max(wait + Duration::from_secs(5));
        }
        match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => Err(ProviderError::Timeout {
                message: format!("no answer headers within {} s", timeout.as_secs()),
            }),
            Ok(sent) => sent.map_err(|e| errors::from_transport(&e)),
        }
    }
}

/// The request body: `{"inputs", "parameters"}`, or parameters at the root for
/// feature-extraction (TEI's shape, `inputs` kept when a parameter has its name).
/// Serialized from the request's own values, without a copy of the inputs.
pub struct WireBody<'a>(pub &'a PredictRequest);

impl Serialize for WireBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let req = self.0;
        let mut root = serializer.serialize_map(None)?;
        root.serialize_entry("inputs", &req.inputs)?;
        match (&req.parameters, req.task.as_deref()) {
            (Some(Value::Object(params)), Some("feature-extraction")) => {
                for (k, v) in params.iter().filter(|(k, _)| *k != "inputs") {
                    root.serialize_entry(k, v)?;
                }
            }
            (Some(params), _) if !params.is_null() => {
                root.serialize_entry("parameters", params)?;
            }
            _ => {}
        }
        root.end()
    }
}

/// Unwraps the serverless `[[{…}]]` answer to a single input into the container's `[{…}]`.
pub fn normalize(inputs: &Value, value: Value) -> Value {
    match value {
        Value::Array(mut outer) if !inputs.is_array() && outer.len() == 1 => {
            let inner_is_objects = matches!(&outer[0], Value::Array(inner)
                if inner.iter().all(Value::is_object) && !inner.is_empty());
            if inner_is_objects {
                outer.remove(0)
            } else {
                Value::Array(outer)
            }
        }
        other => other,
    }
}

/// Errors of an inference call: waking and paused endpoints are `Unavailable`,
/// an overloaded container is `RateLimited`.
fn classify(status: StatusCode, headers: &header::HeaderMap, body: &str) -> ProviderError {
    let message = errors::message_of(status, headers, body);
    let retry_after = errors::retry_after(headers);
    match status.as_u16() {
        503 => ProviderError::Unavailable {
            message,
            retry_after: retry_after.unwrap_or(DEFAULT_WAKE_RETRY_AFTER),
        },
        400 if message.to_lowercase().contains("invalid state") => ProviderError::Unavailable {
            message,
            retry_after: retry_after.unwrap_or(DEFAULT_WAKE_RETRY_AFTER),
        },
        // No redirect is followed (forward.rs): one is the endpoint's failure, not the caller's.
        300..=399 => ProviderError::transient(message),
        424 | 429 => ProviderError::RateLimited {
            message,
            retry_after: retry_after.unwrap_or(errors::DEFAULT_RETRY_AFTER),
        },
        _ => errors::classify(status, headers, body),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The bytes sent, as text: a repeated key would show here (a `Value` would merge it).
    fn body(req: &PredictRequest) -> String {
        serde_json::to_string(&WireBody(req)).expect("serializes")
    }

    fn req(inputs: Value, parameters: Option<Value>, task: Option<&str>) -> PredictRequest {
        PredictRequest {
            inputs,
            parameters,
            task: task.map(str::to_owned),
        }
    }

    #[test]
    fn bodies_follow_the_task() {
        let params = Some(json!({"top_k": 2}));
        let classification = req(
            json!("I love you"),
            params.clone(),
            Some("text-classification"),
        );
        assert_eq!(
            body(&classification),
            r#"{"inputs":"I love you","parameters":{"top_k":2}}"#
        );
        let features = req(
            json!(["a"]),
            Some(json!({"normalize": true})),
            Some("feature-extraction"),
        );
        assert_eq!(body(&features), r#"{"inputs":["a"],"normalize":true}"#);
        assert_eq!(body(&req(json!("x"), None, None)), r#"{"inputs":"x"}"#);
        // A parameter called `inputs` does not replace the inputs, nor repeat the key.
        let clash = req(
            json!("a"),
            Some(json!({"inputs": "b", "truncate": true})),
            Some("feature-extraction"),
        );
        assert_eq!(body(&clash), r#"{"inputs":"a","truncate":true}"#);
    }

    #[test]
    fn serverless_and_container_shapes_become_one() {
        let container = json!([{"label":"POSITIVE","score":0.99}]);
        let serverless = json!([[{"label":"POSITIVE","score":0.99}]]);
        assert_eq!(normalize(&json!("I love you"), serverless), container);
        assert_eq!(
            normalize(&json!("I love you"), container.clone()),
            container
        );
        let batch = json!([[{"label":"A","score":0.5}],[{"label":"B","score":0.5}]]);
        assert_eq!(normalize(&json!(["a", "b"]), batch.clone()), batch);
        let embedding = json!([[0.1, 0.2]]);
        assert_eq!(normalize(&json!("a"), embedding.clone()), embedding);
    }

    #[test]
    fn waking_and_paused_endpoints_are_unavailable() {
        let none = header::HeaderMap::new();
        let waking = classify(StatusCode::SERVICE_UNAVAILABLE, &none, "");
        assert_eq!(waking.retry_after(), Some(DEFAULT_WAKE_RETRY_AFTER));
        let paused = classify(StatusCode::BAD_REQUEST, &none, "Bad Request: Invalid state");
        assert_eq!(paused.kind(), "unavailable");
        let overloaded = classify(StatusCode::TOO_MANY_REQUESTS, &none, r#"{"error":"busy"}"#);
        assert_eq!(overloaded.kind(), "rate_limited");
        let moved = classify(StatusCode::MOVED_PERMANENTLY, &none, "");
        assert_eq!(
            moved.kind(),
            "transient",
            "a redirect is the endpoint's failure"
        );
        let bad = classify(StatusCode::BAD_REQUEST, &none, r#"{"error":"bad inputs"}"#);
        assert_eq!((bad.kind(), bad.message()), ("invalid", "bad inputs"));
    }
}
