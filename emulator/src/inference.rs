//! What answers at each endpoint's `status.url` (`{base}/endpoints/{namespace}/{name}`):
//! the health route and predictions, with the proxy's behaviour around them.
//!
//! Running endpoints answer; a scaled-to-zero endpoint starts waking on any request and
//! answers 503 with `Retry-After` unless the request carries `X-Scale-Up-Timeout`, in which
//! case it is held until the endpoint runs; a paused one answers 400 `Invalid state`.
//! Behind the proxy, the endpoint's `predict_error_rate` (chaos) makes its share of the
//! inference requests answer 500 `{"error"}` while the endpoint stays `running`; the health
//! route is never affected.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::endpoint::Phase;
use crate::predictions;
use crate::store::{ApiError, Store};

/// The per-endpoint routes.
pub fn router() -> Router<Store> {
    Router::new()
        .route("/endpoints/{namespace}/{name}", post(predict))
        .route("/endpoints/{namespace}/{name}/health", get(health))
}

/// Whether the endpoint can answer now, after the proxy's checks.
enum Readiness {
    /// Serving; carries the endpoint's task.
    Serving(Option<String>),
    /// Waking or not started; retry after this many seconds.
    Waking(u64),
}

/// Why the proxy answers instead of the model (also for the OpenAI routes, `openai`).
pub(crate) enum Refusal {
    /// Unknown endpoint or bad token.
    Api(ApiError),
    /// 400 `Invalid state`.
    Paused,
    /// 503: the endpoint failed.
    Failed,
    /// 503 with `Retry-After` seconds.
    Waking(u64),
    /// 500 `{"error"}`: the container failed the request (the endpoint's
    /// `predict_error_rate`, chaos).
    ContainerError,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Api(error) => error.into_response(),
            Self::Paused => (StatusCode::BAD_REQUEST, "Bad Request: Invalid state").into_response(),
            Self::Failed => (StatusCode::SERVICE_UNAVAILABLE, "Endpoint failed").into_response(),
            Self::Waking(retry) => {
                let body = "503 Service Unavailable: the endpoint is scaling up, retry later";
                let retry_after = [(header::RETRY_AFTER, retry.to_string())];
                (StatusCode::SERVICE_UNAVAILABLE, retry_after, body).into_response()
            }
            Self::ContainerError => {
                let error = "Internal server error (emulated: predict_error_rate)";
                let body = axum::Json(json!({"error": error}));
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
            }
        }
    }
}

/// Checks auth and state; starts waking a scaled-to-zero endpoint.
fn readiness(
    store: &Store,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Readiness, Refusal> {
    let token = store.config().token.clone();
    let retry = store.config().cold_start_time.as_secs().max(1);
    let outcome = store.with_endpoint(ns, name, |r| {
        if r.kind != "public" && !crate::auth::bearer_matches(headers, &token) {
            return Err(ApiError::Json(
                StatusCode::UNAUTHORIZED,
                "Unauthorized".into(),
            ));
        }
        Ok(match r.phase {
            Phase::Running | Phase::Updating => Ok(Readiness::Serving(
                r.spec["model"]["task"].as_str().map(str::to_owned),
            )),
            Phase::ScaledToZero => {
                r.enter(Phase::Waking);
                Ok(Readiness::Waking(retry))
            }
            Phase::Waking | Phase::Pending | Phase::Initializing => Ok(Readiness::Waking(retry)),
            Phase::Paused => Err(Refusal::Paused),
            Phase::Failed(_) => Err(Refusal::Failed),
        })
    });
    outcome.map_err(Refusal::Api)?
}

/// What every inference route does before its container answers: [`wait_until_serving`],
/// then count the request against the endpoint's `predict_error_rate`. The endpoint's task,
/// or the refusal (500 when the rate picks this request).
pub(crate) async fn reach_container(
    store: &Store,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, Refusal> {
    let task = wait_until_serving(store, ns, name, headers).await?;
    if store.inference_fails(ns, name).map_err(Refusal::Api)? {
        return Err(Refusal::ContainerError);
    }
    Ok(task)
}

/// Holds the request while the endpoint wakes, up to `X-Scale-Up-Timeout` seconds; the
/// endpoint's task once it serves.
async fn wait_until_serving(
    store: &Store,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, Refusal> {
    let wait = headers
        .get("x-scale-up-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let deadline = Instant::now() + Duration::from_secs(wait.unwrap_or(0));
    loop {
        match readiness(store, ns, name, headers)? {
            Readiness::Serving(task) => return Ok(task),
            Readiness::Waking(retry) if wait.is_none() || Instant::now() >= deadline => {
                return Err(Refusal::Waking(retry));
            }
            Readiness::Waking(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn health(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match wait_until_serving(&store, &ns, &name, &headers).await {
        Ok(_) => (StatusCode::OK, "").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn predict(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let task = match reach_container(&store, &ns, &name, &headers).await {
        Ok(task) => task,
        Err(refusal) => return refusal.into_response(),
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return container_error(format!("Body is not valid JSON: {e}")),
    };
    let Some(inputs) = request.get("inputs") else {
        return container_error("'inputs' is required".into());
    };
    let parameters = match task.as_deref() {
        // TEI's shape: parameters at the root.
        Some("feature-extraction") => request.clone(),
        _ => request.get("parameters").cloned().unwrap_or(Value::Null),
    };
    match predictions::predict(task.as_deref(), inputs, &parameters) {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(message) => container_error(message),
    }
}

/// The default container's error: 400 `{"error": …}`.
fn container_error(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}
