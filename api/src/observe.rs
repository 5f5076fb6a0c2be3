//! Request observation (DESIGN.md §11): one middleware around every route that counts and
//! times the request (`hokusai_http_requests_total`, `hokusai_http_request_duration_seconds`,
//! labelled by route template, never by raw path), writes one structured log line for it,
//! and opens the span that carries the request id into every log line the handler writes.
//!
//! Handlers and extractors report what only they know through the request's
//! [`RequestContext`]: the authenticated principal (key id and user id, never the key), the
//! model a prediction was routed to, and the time spent upstream (so the predict overhead
//! is the request's own time minus the upstream's).
//!
//! With `LOG_PAYLOADS=true` the line also carries the request and response bodies: JSON only,
//! with the values of `LOG_REDACT_FIELDS` keys replaced, truncated to
//! `LOG_PAYLOAD_MAX_BYTES`.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::telemetry::metrics::names;
use tracing::Instrument;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody, render, request_id};

/// What the handler learned about the request, read back after the response.
#[derive(Debug, Clone)]
pub struct RequestContext(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    started: Instant,
    principal: OnceLock<Principal>,
    model: OnceLock<String>,
    upstream: OnceLock<Duration>,
}

impl RequestContext {
    fn new(started: Instant) -> Self {
        Self(Arc::new(Inner {
            started,
            principal: OnceLock::new(),
            model: OnceLock::new(),
            upstream: OnceLock::new(),
        }))
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.0.started
    }

    /// Records who the request was authenticated as (the first call wins).
    pub fn set_principal(&self, principal: &Principal) {
        let _ = self.0.principal.set(principal.clone());
    }

    /// The authenticated principal, if a key was accepted.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.principal.get()
    }

    /// Records the model the request was served for (a model with a deployment: label
    /// values stay bounded).
    pub fn set_model(&self, model_id: &str) {
        let _ = self.0.model.set(model_id.to_owned());
    }

    /// Records the time spent waiting for the upstream endpoint.
    pub fn set_upstream(&self, upstream: Duration) {
        let _ = self.0.upstream.set(upstream);
    }
}

/// What the middleware needs from the configuration.
#[derive(Debug, Clone)]
pub struct ObserveConfig {
    /// `LOG_PAYLOADS`.
    pub log_payloads: bool,
    /// `LOG_PAYLOAD_MAX_BYTES`.
    pub max_payload_bytes: usize,
    /// `LOG_REDACT_FIELDS` (lower case).
    pub redact_fields: Arc<[String]>,
    /// `MAX_BODY_BYTES`: the most a logged request body may be.
    pub max_body_bytes: usize,
}

/// The route template of the predict route.
pub const PREDICT_ROUTE: &str = "/api/v1/models/{model_id}/predict";

/// The middleware: counts, times and logs the request.
pub async fn observe(
    State(config): State<Arc<ObserveConfig>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route: Arc<str> = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| Arc::from("unmatched"), |p| Arc::from(p.as_str()));
    let request_id = request_id(request.headers());
    let context = RequestContext::new(started);
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(context.clone());
    let bytes_in = content_length(&parts.headers);
    let span = tracing::info_span!("request", request_id = %request_id);

    let (request_payload, body) = if config.log_payloads {
        match axum::body::to_bytes(body, config.max_body_bytes).await {
            Ok(bytes) => (Some(payload(&bytes, &config)), Body::from(bytes)),
            Err(_) => return render(ApiError::PayloadTooLarge.into_response(), request_id),
        }
    } else {
        (None, body)
    };
    let mut response = next
        .run(Request::from_parts(parts, body))
        .instrument(span.clone())
        .await;
    let response_payload = if config.log_payloads {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let logged = payload(&bytes, &config);
        response = Response::from_parts(parts, Body::from(bytes));
        Some(logged)
    } else {
        None
    };

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let method_label = method.as_str().to_owned();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method_label.clone(),
        "route" => route.to_string(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "method" => method_label, "route" => route.to_string())
        .record(elapsed.as_secs_f64());
    let model = context.0.model.get();
    if let (Some(model), Some(upstream)) = (model, context.0.upstream.get()) {
        metrics::histogram!(names::PREDICT_OVERHEAD, "model_id" => model.clone())
            .record(elapsed.saturating_sub(*upstream).as_secs_f64());
    }

    let principal = context.principal();
    let error = response
        .extensions()
        .get::<Arc<ErrorBody>>()
        .map(|e| e.code);
    let bytes_out = body_length(&response);
    let _entered = span.enter();
    tracing::info!(
        target: "hokusai::request",
        method = %method,
        route = %route,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        model_id = model.map(String::as_str),
        key_id = principal.map(|p| p.key_id.as_str()),
        user_id = principal.and_then(|p| p.user_id.as_deref()),
        error,
        bytes_in,
        bytes_out,
        request_payload = request_payload.as_deref(),
        response_payload = response_payload.as_deref(),
        "request"
    );
    response
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The response's size when known before it is sent (every buffered body).
fn body_length(response: &Response) -> Option<u64> {
    content_length(response.headers()).or_else(|| response.body().size_hint().exact())
}

/// A body as it may be logged: JSON with the configured keys redacted, truncated; any other
/// content only by its size (it could hold anything).
fn payload(bytes: &Bytes, config: &ObserveConfig) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return format!("<{} bytes, not JSON>", bytes.len());
    };
    redact(&mut value, &config.redact_fields);
    truncate(value.to_string(), config.max_payload_bytes)
}

/// Replaces the value of every object key named in `fields` (case-insensitively), at any
/// depth.
fn redact(value: &mut Value, fields: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if fields.iter().any(|f| f.eq_ignore_ascii_case(key)) {
                    *inner = Value::String("[redacted]".into());
                } else {
                    redact(inner, fields);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields)),
        _ => {}
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("…[truncated, {total} bytes]"));
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(max: usize) -> ObserveConfig {
        ObserveConfig {
            log_payloads: true,
            max_payload_bytes: max,
            redact_fields: vec!["password".to_owned(), "token".to_owned()].into(),
            max_body_bytes: 1 << 20,
        }
    }

    #[test]
    fn payloads_are_redacted_at_any_depth_and_truncated() {
        let body = json!({"inputs": "hi", "Password": "p@ss", "nested": [{"token": "t0k"}]});
        let logged = payload(&Bytes::from(body.to_string()), &config(1000));
        assert!(
            !logged.contains("p@ss") && !logged.contains("t0k"),
            "{logged}"
        );
        assert!(logged.contains("[redacted]") && logged.contains("\"hi\""));
        let long = json!({"inputs": "é".repeat(100)});
        let logged = payload(&Bytes::from(long.to_string()), &config(21));
        assert!(logged.ends_with("bytes]"), "{logged}");
        assert!(logged.len() < 60);
    }

    #[test]
    fn non_json_payloads_are_logged_by_size_only() {
        let logged = payload(&Bytes::from_static(b"password=hunter2"), &config(100));
        assert_eq!(logged, "<16 bytes, not JSON>");
    }
}
