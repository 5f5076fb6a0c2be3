//! `POST /api/v1/webhooks/mlflow`: the MLflow listener (docs/contracts/mlflow.md).
//!
//! It answers fast and never calls MLflow or a provider: it checks the v1 signature against
//! `MLFLOW_WEBHOOK_SECRET` and the timestamp's freshness (401 otherwise), parses the body
//! (400 when malformed), and records the delivery id together with the event in one
//! transaction. A repeated delivery id answers 200 and does nothing; events that cannot
//! lead to a deployment (unknown events, tags the service writes itself) answer 200
//! `ignored`. Handled events answer 202: the worker's intake fetches the model's metadata,
//! validates it and deploys.

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::db::mlflow::{self as repo, NewEvent, Recorded};
use shared::mlflow::metrics;
use shared::mlflow::webhook::{self, Decision, DeliveryHeaders, Event};

use utoipa::ToSchema;

use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

/// The largest webhook body read: MLflow's payloads are a few KiB (model name, version,
/// tags), and the body is read before its signature can be checked.
pub const WEBHOOK_MAX_BYTES: usize = 256 * 1024;

/// The webhook route.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/webhooks/mlflow",
        post(receive).layer(DefaultBodyLimit::max(WEBHOOK_MAX_BYTES)),
    )
}

/// The listener's answer (documentation only; written with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct WebhookAnswer {
    /// `accepted`, `ignored` or `duplicate`.
    status: String,
    /// The MLflow event name.
    event: String,
    /// The delivery id.
    delivery_id: String,
    /// Why it was not handled.
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/mlflow",
    tag = "webhooks",
    operation_id = "mlflow_webhook",
    summary = "MLflow webhook listener (HMAC-signed)",
    description = "No API key: MLflow signs each delivery with HMAC-SHA256 of the shared secret `MLFLOW_WEBHOOK_SECRET` (v1 signature header over the delivery id, timestamp and body; docs/contracts/mlflow.md). A bad signature or a stale timestamp answers 401.",
    params(
        ("X-MLflow-Delivery-Id" = String, Header, description = "Delivery id; a repeat answers 200 `duplicate`"),
        ("X-MLflow-Timestamp" = String, Header, description = "Unix seconds; must be fresh"),
        ("X-MLflow-Signature" = String, Header, description = "`v1,<base64 HMAC-SHA256>`"),
    ),
    request_body(content = Object, description = "An MLflow webhook payload (docs/contracts/mlflow.md)"),
    responses(
        (status = 200, description = "Duplicate delivery or ignored event", body = WebhookAnswer),
        (status = 202, description = "Accepted: the worker will handle the event", body = WebhookAnswer),
        (status = 400, description = "BAD_REQUEST: the payload is malformed", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: bad or missing signature, or a stale timestamp", body = ErrorResponse),
        (status = 404, description = "NOT_FOUND: the listener is disabled (`MLFLOW_WEBHOOK_SECRET` unset)", body = ErrorResponse),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body exceeds 256 KiB", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
        (status = 503, description = "SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
    ),
)]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    let Some(secret) = state.settings.mlflow.webhook_secret.as_ref() else {
        return Err(ApiError::NotFound(
            "the MLflow listener is disabled: MLFLOW_WEBHOOK_SECRET is not set".into(),
        ));
    };
    let delivery_id = webhook::authenticate(
        secret,
        &delivery_headers(&headers),
        &body,
        chrono::Utc::now(),
    )
    .map_err(|error| {
        metrics::webhook("unknown", "unauthorized");
        ApiError::Unauthorized(format!("MLflow webhook refused: {error}"))
    })?;
    let event = webhook::parse(&body).map_err(|error| {
        metrics::webhook("unknown", "malformed");
        ApiError::BadRequest(error.to_string())
    })?;
    let decision = event.decision();
    let recorded = repo::record_delivery(&state.db, &delivery_id, work_of(&event, &decision))
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    Ok(answer(&event, &decision, recorded, &delivery_id))
}

fn delivery_headers(headers: &HeaderMap) -> DeliveryHeaders {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    DeliveryHeaders {
        delivery_id: text(webhook::DELIVERY_ID_HEADER),
        timestamp: text(webhook::TIMESTAMP_HEADER),
        signature: text(webhook::SIGNATURE_HEADER),
    }
}

/// The event to hand to the worker, when the decision is to handle it.
fn work_of(event: &Event, decision: &Decision) -> Option<NewEvent> {
    match decision {
        Decision::Ignore(_) => None,
        Decision::Handle => Some(NewEvent {
            event: event.name.clone(),
            model_name: event.model_name.clone().unwrap_or_default(),
            version: event.version.clone(),
            payload: json!({"key": event.key, "value": event.value, "alias": event.alias}),
        }),
    }
}

fn answer(
    event: &Event,
    decision: &Decision,
    recorded: Recorded,
    delivery_id: &str,
) -> (StatusCode, Json<Value>) {
    let (status, outcome, reason) = match (recorded, decision) {
        (Recorded::Duplicate, _) => (
            StatusCode::OK,
            "duplicate",
            Some("delivery already received"),
        ),
        (Recorded::New, Decision::Ignore(reason)) => (StatusCode::OK, "ignored", Some(*reason)),
        (Recorded::New, Decision::Handle) => (StatusCode::ACCEPTED, "accepted", None),
    };
    metrics::webhook(&event.name, outcome);
    let body = json!({"status": outcome, "event": event.name, "delivery_id": delivery_id,
                      "reason": reason});
    (status, Json(body))
}
