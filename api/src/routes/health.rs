//! Liveness (`GET /health`: the process answers), readiness (`GET /ready`: the database
//! answers too) and the Prometheus metrics (`GET /metrics`). None needs a key; load
//! balancers, ECS and Prometheus call them.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::state::AppState;

/// `/health`, `/ready` and `/metrics`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    summary = "Prometheus metrics (text exposition format)",
    responses((status = 200, description = "Every `hokusai_*` series of this process", body = String, content_type = "text/plain")),
)]
pub(super) async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            shared::telemetry::metrics::CONTENT_TYPE,
        )],
        shared::telemetry::metrics::render(),
    )
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
    /// What makes the process unready: `database` and the names of loops that are not
    /// running and beating.
    failing: Vec<String>,
    /// Each background loop of the process (`dev`: the worker's too) by name: `state`
    /// (`running`, `stalled`, `restarting`, `stopped`), `seconds_since_heartbeat`,
    /// `period_seconds`, `restarts`, `beats`, `skipped` (leader-only loops on a follower). A
    /// loop is stalled after missing its heartbeat by 3× its period.
    #[schema(value_type = Object)]
    tasks: Value,
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

/// A database that does not answer a ping within this counts as unreachable.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    operation_id = "ready",
    summary = "Readiness: the database answers and every background loop runs",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The database is unreachable, or a loop is stalled or restarting", body = Readiness),
    ),
)]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let ping = shared::runtime::within("the readiness ping", PING_TIMEOUT, state.db.ping());
    let database = match ping.await.map_err(|t| t.to_string()) {
        Ok(Ok(())) => "ok",
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness check: database unreachable");
            "unreachable"
        }
        Err(error) => {
            tracing::warn!(%error, "readiness check: database unreachable");
            "unreachable"
        }
    };
    let readiness = state.tasks.readiness();
    let ready = database == "ok" && readiness.ready;
    let mut failing: Vec<&str> = readiness.failing();
    if database != "ok" {
        failing.insert(0, "database");
    }
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": {"database": database},
        "failing": failing,
        "tasks": readiness.tasks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
