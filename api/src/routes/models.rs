//! `GET /api/v1/models` (the active or latest deployment per model, filters `status` and
//! `provider`) and `GET /api/v1/models/{model_id}` (its active deployment and history),
//! scope `read`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::db::deployments::{self, Deployment, Filter};
use shared::db::model_ops;
use shared::domain::{DeploymentStatus, ModelId};

use utoipa::ToSchema;

use crate::auth::{Authenticated, Scope};
use crate::error::{ApiError, ErrorResponse};
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

/// `GET /api/v1/models` answer (documentation only; the handler writes it with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ModelList {
    /// The active, else the newest, deployment of each model.
    models: Vec<Deployment>,
    /// How many models.
    total: usize,
}

/// `GET /api/v1/models/{model_id}` answer (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ModelDetail {
    /// The model.
    model_id: String,
    /// Its active deployment, if any.
    active: Option<Deployment>,
    /// Every deployment, newest first.
    deployments: Vec<Deployment>,
}

#[utoipa::path(
    get,
    path = "/api/v1/models",
    tag = "models",
    operation_id = "list_models",
    summary = "Deployed models: the active or latest deployment per model",
    params(("status" = Option<String>, Query, description = "Only deployments in this status"), ("provider" = Option<String>, Query, description = "Only this provider")),
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 422, description = "VALIDATION_ERROR: `status` is not a deployment status", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
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
        limit: Some(MAX_MODELS),
        ..Filter::default()
    };
    let models = deployments::per_model(&state.db, &filter).await?;
    Ok(Json(json!({"total": models.len(), "models": models})))
}

/// The most models one list answers (ordered by model id).
const MAX_MODELS: u64 = 10_000;

#[utoipa::path(
    get,
    path = "/api/v1/models/{model_id}",
    tag = "models",
    operation_id = "get_model",
    summary = "One model: its active deployment and history",
    params(("model_id" = String, Path, description = "MLflow registered-model name")),
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The model", body = ModelDetail, headers(("ETag" = String, description = "The model's operation version, for `If-Match` on deploy, rollback and undeploy"))),
        (status = 404, description = "NOT_FOUND: the model has no deployments", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(Scope::Read)?;
    let model = model_id(&raw)?;
    let filter = Filter {
        model_id: Some(model.clone()),
        limit: Some(1_000),
        ..Filter::default()
    };
    // The version first: a tag older than the body only makes a conditional write fail.
    let version = model_ops::version(&state.db, model.as_str()).await?;
    let history = deployments::list(&state.db, &filter).await?;
    if history.is_empty() {
        return Err(ApiError::NotFound(format!(
            "model `{model}` has no deployments"
        )));
    }
    let active = history.iter().find(|d| d.is_active).cloned();
    let body = json!({"model_id": model, "active": active, "deployments": history});
    let mut response = Json(body).into_response();
    crate::etag::set(&mut response, version);
    Ok(response)
}
