//! Request observation (docs/design/observability.md): one middleware around every route that
//! counts and times the request (`hokusai_http_requests_total`,
//! `hokusai_http_request_duration_seconds`, labelled by route template, never by raw path),
//! writes one structured log line for it, and opens the span that carries the request id into
//! every log line the handler writes.
//!
//! Handlers and extractors report what only they know through the request's
//! [`RequestContext`]: the authenticated principal (key id and user id, never the key), the
//! model a prediction was routed to, and the time spent upstream (so the predict overhead
//! is the request's own time minus the upstream's).
//!
//! With `LOG_PAYLOADS=true` the line also carries the request and response bodies: JSON only,
//! with the values of `LOG_REDACT_FIELDS` keys replaced, truncated to
//! `LOG_PAYLOAD_MAX_BYTES`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use shared::telemetry::metrics::names;
use tracing::Instrument;

use crate::auth::Principal;
use crate::error::{ErrorBody, REQUEST_ID_HEADER, Shape, render};
use crate::limits::Allowance;

mod payload;
use crate::routing::ActiveRoute;
use payload::{CAPTURE_BYTES, Captured, payload, tee};

/// What the handler learned about the request, read back after the response.
#[derive(Debug, Clone)]
pub struct RequestContext(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    started: Instant,
    principal: OnceLock<Arc<Principal>>,
    route: OnceLock<Arc<ActiveRoute>>,
    upstream: OnceLock<Duration>,
    allowance: OnceLock<Allowance>,
    tokens: OnceLock<Tokens>,
}

/// The token counts of a generation (the `usage` of an OpenAI-shaped answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `usage.prompt_tokens`.
    pub prompt: Option<u64>,
    /// `usage.completion_tokens`.
    pub completion: Option<u64>,
}

impl RequestContext {
    fn new(started: Instant) -> Self {
        Self(Arc::new(Inner {
            started,
            principal: OnceLock::new(),
            route: OnceLock::new(),
            upstream: OnceLock::new(),
            allowance: OnceLock::new(),
            tokens: OnceLock::new(),
        }))
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.0.started
    }

    /// Records who the request was authenticated as (the first call wins).
    pub fn set_principal(&self, principal: &Arc<Principal>) {
        let _ = self.0.principal.set(principal.clone());
    }

    /// The authenticated principal, if a key was accepted.
    pub fn principal(&self) -> Option<&Principal> {
        self.0.principal.get().map(|p| &**p)
    }

    /// Records the route (model and deployment) the request was served by: a model with a
    /// deployment, so label values stay bounded.
    pub fn set_route(&self, route: Arc<ActiveRoute>) {
        let _ = self.0.route.set(route);
    }

    /// Records the key's allowance after this request (the `RateLimit-*` headers).
    pub fn set_allowance(&self, allowance: Allowance) {
        let _ = self.0.allowance.set(allowance);
    }

    /// Records the time spent waiting for the upstream endpoint.
    pub fn set_upstream(&self, upstream: Duration) {
        let _ = self.0.upstream.set(upstream);
    }

    /// Records the answer's token counts (the first call wins: an answer has one `usage`).
    pub fn set_tokens(&self, tokens: Tokens) {
        let _ = self.0.tokens.set(tokens);
    }

    /// The answer's token counts, once known (a stream's come with its last events).
    pub fn tokens(&self) -> Option<Tokens> {
        self.0.tokens.get().copied()
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

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up), as
/// the IETF httpapi draft names them.
fn rate_limit_headers(headers: &mut axum::http::HeaderMap, allowance: &Allowance) {
    let reset = allowance.reset.as_secs() + u64::from(allowance.reset.subsec_nanos() > 0);
    for (name, value) in [
        ("ratelimit-limit", u64::from(allowance.limit)),
        ("ratelimit-remaining", u64::from(allowance.remaining)),
        ("ratelimit-reset", reset),
    ] {
        headers.insert(name, axum::http::HeaderValue::from(value));
    }
}

/// The route template of the predict route.
pub const PREDICT_ROUTE: &str = "/api/v1/models/{model_id}/predict";

/// The route templates that forward a prediction: predict, the Open Inference Protocol's
/// `infer` and the OpenAI-compatible generation routes (each in both forms). They count
/// against the key's monthly prediction quota and are bounded by their own upstream timeouts
/// (`PREDICT_TIMEOUT_SECONDS`; between stream chunks `STREAM_IDLE_TIMEOUT_SECONDS`) rather
/// than `REQUEST_TIMEOUT_SECONDS`.
pub const PREDICTION_ROUTES: [&str; 9] = [
    PREDICT_ROUTE,
    "/v2/models/{model_id}/infer",
    "/v2/models/{model_id}/versions/{version}/infer",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/api/v1/models/{model_id}/v1/chat/completions",
    "/api/v1/models/{model_id}/v1/completions",
    "/api/v1/models/{model_id}/v1/embeddings",
];

/// Whether `matched` (a route template) forwards a prediction ([`PREDICTION_ROUTES`]).
pub fn is_prediction(matched: Option<&axum::extract::MatchedPath>) -> bool {
    matched.is_some_and(|p| PREDICTION_ROUTES.contains(&p.as_str()))
}

/// The middleware, outermost on every route: gives the request its id (the client's
/// `X-Request-Id` when usable, else a fresh UUID), echoes it on the response, writes the JSON
/// body of every [`ApiError`] answer, counts, times and logs the request. One layer does all
/// of it: each `from_fn` layer clones the service below it and boxes a future per request.
pub async fn observe(
    State(config): State<Arc<ObserveConfig>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = assign_request_id(request.headers_mut());
    let id_text = request_id.to_str().unwrap_or_default();
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let template = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let context = RequestContext::new(started);
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(context.clone());
    let bytes_in = content_length(&parts.headers);
    let span = tracing::info_span!("request", request_id = %id_text);

    // With payload logging the body is not read here (that would read it before the
    // request is authenticated): a copy of its first bytes is kept as the handler reads it.
    let (seen, body) = if config.log_payloads {
        let (seen, body) = tee(body, config.max_payload_bytes.max(CAPTURE_BYTES));
        (Some(seen), body)
    } else {
        (None, body)
    };
    let response = next
        .run(Request::from_parts(parts, body))
        .instrument(span.clone())
        .await;
    let request_payload = seen.map(|seen| {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        match &*seen {
            Captured::Whole(bytes) => payload(&Bytes::copy_from_slice(bytes), &config),
            Captured::Cut(n) => format!("<more than {n} bytes, not logged>"),
        }
    });
    let shape = Shape::of(matched.as_ref().map(MatchedPath::as_str));
    let mut response = render(response, id_text, shape);
    response
        .headers_mut()
        .insert(REQUEST_ID_HEADER, request_id.clone());
    if let Some(allowance) = context.0.allowance.get() {
        rate_limit_headers(response.headers_mut(), allowance);
    }
    let streamed = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let response_payload = if config.log_payloads && streamed {
        // Reading a stream here would hold every chunk back until it ended.
        Some("<a stream, not logged>".to_owned())
    } else if config.log_payloads {
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
    http_metrics(&method, template, status).record(elapsed);
    let served = context.0.route.get();
    if let (Some(route), Some(upstream)) = (served, context.0.upstream.get()) {
        let overhead = elapsed.saturating_sub(*upstream);
        route.series.overhead.record(overhead.as_secs_f64());
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
        route = %template,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        model_id = served.map(|r| r.model_id.as_str()),
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

/// The longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` when there is exactly one and it is 1–128
/// visible ASCII characters, otherwise a fresh UUID (v4), written back into the request so
/// the id in logs, in the response header and in error bodies is always the same text.
fn assign_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let usable = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_graphic())
    };
    let mut given = headers.get_all(REQUEST_ID_HEADER).iter();
    if let (Some(value), None) = (given.next(), given.next())
        && usable(value)
    {
        return value.clone();
    }
    let mut buffer = uuid::Uuid::encode_buffer();
    let fresh = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    let value = HeaderValue::from_str(fresh).expect("a UUID is a valid header value");
    headers.insert(REQUEST_ID_HEADER, value.clone());
    value
}

/// The HTTP series of one method, route template and status.
struct HttpMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpMetrics {
    fn record(&self, elapsed: Duration) {
        self.requests.increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// The handles of the HTTP series for `method`, `route`, `status`, registered on first use
/// and kept: routes and statuses are few, and a handle skips building and hashing the
/// labels on every request. Methods other than the standard ones are labelled `OTHER`.
fn http_metrics(method: &Method, route: &str, status: u16) -> Arc<HttpMetrics> {
    type PerRoute = Vec<(Method, u16, Arc<HttpMetrics>)>;
    static HANDLES: OnceLock<RwLock<HashMap<Box<str>, PerRoute>>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let standard = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    let method = if standard.contains(method) {
        method.clone()
    } else {
        Method::from_bytes(b"OTHER").expect("a valid method token")
    };
    let find = |per_route: &PerRoute| {
        per_route
            .iter()
            .find(|(m, s, _)| *m == method && *s == status)
            .map(|(_, _, found)| found.clone())
    };
    if let Some(found) = handles
        .read()
        .expect("metric handles")
        .get(route)
        .and_then(find)
    {
        return found;
    }
    let mut handles = handles.write().expect("metric handles");
    let per_route = handles.entry(route.into()).or_default();
    if let Some(found) = find(per_route) {
        return found;
    }
    let label = method.as_str().to_owned();
    let created = Arc::new(HttpMetrics {
        requests: metrics::counter!(names::HTTP_REQUESTS, "method" => label.clone(),
            "route" => route.to_owned(), "status" => status.to_string()),
        duration: metrics::histogram!(names::HTTP_DURATION, "method" => label,
            "route" => route.to_owned()),
    });
    per_route.push((method, status, created.clone()));
    created
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
