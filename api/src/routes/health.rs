//! Liveness (`GET /health`: the process answers) and readiness (`GET /ready`: the database
//! answers too). Neither needs a key; load balancers and ECS call them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::state::AppState;

/// `/health` and `/ready`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

/// `GET /health` answer (documentation only; the handler writes it with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: String,
    /// The service version.
    version: String,
}

/// `GET /ready` answer (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(example = "ready")]
    status: String,
    /// Each dependency: `{"database": "ok" | "unreachable"}`.
    #[schema(value_type = Object)]
    checks: Value,
}

#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    operation_id = "health",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "Alive", body = Health)),
)]
async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    operation_id = "ready",
    summary = "Readiness: the database answers too",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The database is unreachable", body = Readiness),
    ),
)]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.db.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": {"database": "ok"}})),
        ),
        Err(error) => {
            tracing::warn!(%error, "readiness check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "checks": {"database": "unreachable"}})),
            )
        }
    }
}
