//! `GET /api/v1/deployments/{id}` and `GET /api/v1/deployments/{id}/events`: one deployment
//! and its event log (scope `read`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::db::deployments::{self, Deployment};
use shared::domain::DeploymentId;

use utoipa::ToSchema;

use crate::auth::{Authenticated, Scope};
use crate::error::{ApiError, ErrorResponse};
use crate::extract::Path;
use crate::state::AppState;

/// The deployment routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/deployments/{id}", get(show))
        .route("/api/v1/deployments/{id}/events", get(events))
}

/// Loads a deployment by the id in a path, 404 when it is not a known id.
pub async fn load(state: &AppState, raw_id: &str) -> Result<Deployment, ApiError> {
    let not_found = || ApiError::NotFound(format!("deployment `{raw_id}` not found"));
    let id = uuid::Uuid::parse_str(raw_id).map_err(|_| not_found())?;
    deployments::get(&state.db, DeploymentId(id))
        .await?
        .ok_or_else(not_found)
}

/// One entry of a deployment's event log (documentation only; written with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DeploymentEvent {
    /// Event id.
    id: uuid::Uuid,
    /// What happened (`transition`, `provider_error`, …).
    kind: String,
    /// Status before, for transitions.
    from_status: Option<String>,
    /// Status after, for transitions.
    to_status: Option<String>,
    /// A sentence.
    message: Option<String>,
    /// Structured details.
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    created_at: String,
}

/// `GET /api/v1/deployments/{id}/events` answer (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct EventLog {
    /// The deployment.
    deployment_id: uuid::Uuid,
    /// Its events, oldest first.
    events: Vec<DeploymentEvent>,
}

#[utoipa::path(
    get,
    path = "/api/v1/deployments/{id}",
    tag = "deployments",
    operation_id = "get_deployment",
    summary = "One deployment",
    params(("id" = String, Path, description = "Deployment id (UUID)")),
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The deployment", body = Deployment),
        (status = 404, description = "NOT_FOUND: no deployment with this id", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    principal.require(Scope::Read)?;
    Ok(Json(load(&state, &id).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/deployments/{id}/events",
    tag = "deployments",
    operation_id = "list_deployment_events",
    summary = "A deployment's event log, oldest first",
    params(("id" = String, Path, description = "Deployment id (UUID)")),
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The events", body = EventLog),
        (status = 404, description = "NOT_FOUND: no deployment with this id", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn events(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let deployment = load(&state, &id).await?;
    let events = deployments::events(&state.db, DeploymentId(deployment.id)).await?;
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({"id": e.id, "kind": e.kind, "from_status": e.from_status, "to_status": e.to_status,
                   "message": e.message, "details": e.details, "created_at": e.created_at})
        })
        .collect();
    Ok(Json(
        json!({"deployment_id": deployment.id, "events": events}),
    ))
}
