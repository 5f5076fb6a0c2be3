//! Chaos and control: injected 429s (with `Retry-After`), 500s and latency on the
//! management API, and the `/_emulator` routes that change chaos at run time, list the
//! endpoints held and make one fail. The control routes are not part of HF's API.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::config::ChaosConfig;
use crate::management::base_url;
use crate::store::{ApiError, Store};

/// Middleware on the management routes: maybe a 429 or a 500 instead of the answer.
pub async fn inject_failures(State(store): State<Store>, request: Request, next: Next) -> Response {
    let retry_after = store.chaos().retry_after_secs.max(1);
    match store.chaos_for_next_request() {
        Some(error @ ApiError::Json(status, _)) if status.as_u16() == 429 => {
            let mut response = error.into_response();
            let value = retry_after
                .to_string()
                .parse()
                .expect("digits are a header value");
            response.headers_mut().insert(header::RETRY_AFTER, value);
            response
        }
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

/// Middleware on every route: the configured latency.
pub async fn add_latency(State(store): State<Store>, request: Request, next: Next) -> Response {
    let latency = store.chaos().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    next.run(request).await
}

/// `/_emulator/*`.
pub fn control() -> Router<Store> {
    Router::new()
        .route("/_emulator/chaos", get(get_chaos).post(set_chaos))
        .route("/_emulator/endpoints", get(endpoints))
        .route("/_emulator/endpoints/{namespace}/{name}/fail", post(fail))
}

async fn get_chaos(State(store): State<Store>) -> Json<ChaosConfig> {
    Json(store.chaos())
}

async fn set_chaos(
    State(store): State<Store>,
    Json(chaos): Json<ChaosConfig>,
) -> Json<ChaosConfig> {
    store.set_chaos(chaos);
    Json(store.chaos())
}

async fn endpoints(State(store): State<Store>, headers: axum::http::HeaderMap) -> Json<Value> {
    let items: Vec<Value> = store
        .list(None, &base_url(&headers))
        .into_iter()
        .map(|e| json!({"namespace": e.namespace, "name": e.name, "state": e.state, "endpoint": e.raw}))
        .collect();
    Json(json!({"items": items}))
}

async fn fail(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    store.fail(&ns, &name, "Endpoint failed: emulated failure (chaos)")?;
    Ok(Json(json!({"failed": name})))
}
