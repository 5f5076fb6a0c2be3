//! `GET /api/v1/deployments/{id}` and `GET /api/v1/deployments/{id}/events`: one deployment
//! and its event log (scope `read`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::db::deployments::{self, Deployment};
use shared::domain::DeploymentId;

use crate::auth::{Authenticated, Scope};
use crate::error::ApiError;
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

async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Deployment>, ApiError> {
    principal.require(Scope::Read)?;
    Ok(Json(load(&state, &id).await?))
}

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
