//! `GET /api/v1/models` (the active or latest deployment per model, filters `status` and
//! `provider`) and `GET /api/v1/models/{model_id}` (its active deployment and history),
//! scope `read`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::deployments::{self, Deployment, Filter};
use shared::domain::{DeploymentStatus, ModelId};

use crate::auth::{Authenticated, Scope};
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::AppState;

/// The model listing routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models", get(list))
        .route("/api/v1/models/{model_id}", get(show))
}

/// Parses a model id from a path; an id that cannot exist is a 404.
pub fn model_id(raw: &str) -> Result<ModelId, ApiError> {
    ModelId::parse(raw).map_err(|_| ApiError::NotFound(format!("model `{raw}` not found")))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    provider: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let status = match query.status.as_deref() {
        Some(raw) => Some(DeploymentStatus::parse(raw).ok_or_else(|| {
            ApiError::Validation(format!("status: `{raw}` is not a deployment status"))
        })?),
        None => None,
    };
    let filter = Filter {
        status,
        provider: query.provider,
        limit: Some(10_000),
        ..Filter::default()
    };
    let models = representative_per_model(deployments::list(&state.db, &filter).await?);
    Ok(Json(json!({"total": models.len(), "models": models})))
}

/// For each model, its active deployment, else its newest one (input is newest first).
fn representative_per_model(rows: Vec<Deployment>) -> Vec<Deployment> {
    let mut by_model: BTreeMap<String, Deployment> = BTreeMap::new();
    for row in rows {
        match by_model.get(&row.model_id) {
            Some(kept) if kept.is_active || !row.is_active => {}
            _ => {
                by_model.insert(row.model_id.clone(), row);
            }
        }
    }
    by_model.into_values().collect()
}

async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let model = model_id(&raw)?;
    let filter = Filter {
        model_id: Some(model.clone()),
        limit: Some(1_000),
        ..Filter::default()
    };
    let history = deployments::list(&state.db, &filter).await?;
    if history.is_empty() {
        return Err(ApiError::NotFound(format!(
            "model `{model}` has no deployments"
        )));
    }
    let active = history.iter().find(|d| d.is_active).cloned();
    Ok(Json(
        json!({"model_id": model, "active": active, "deployments": history}),
    ))
}
