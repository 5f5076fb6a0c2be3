//! What operators do to a model (scope `model:write`, status `read`): deploy a version
//! (`POST /api/v1/models/{model_id}/deployments`, `Idempotency-Key` honoured), roll back
//! (`POST …/rollback`), undeploy the active deployment (`DELETE …/deployment`), and read
//! its status (`GET …/status`). Writes are rows plus commands in one transaction under the
//! model's operation lock (`shared::db::operations`); the worker does the provider work.
//! Accepted work answers 202 with `Location` and the model's `ETag`; `If-Match` makes a write
//! conditional (412 when stale), and an operation that cannot run beside the one in flight
//! answers 409 (docs/design/domain.md, "Concurrent operations on one model").

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use shared::db::DbError;
use shared::db::deployments::{self, Deployment, Filter};
use shared::db::model_ops;
use shared::db::operations::{self, Deployed, Rollback, Versioned};
use shared::provider::{InstanceSpec, ScalingSpec};
use shared::queue::{Envelope, MessageKind};
use shared::request::{self, DeployRequest, InstanceRequest};

use super::models::model_id;
use utoipa::ToSchema;

use crate::auth::{Authenticated, Scope};
use crate::error::{ApiError, ErrorResponse};
use crate::etag;
use crate::extract::{Body, Path, optional_json};
use crate::state::AppState;

/// The model action routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models/{model_id}/deployments", post(deploy))
        .route("/api/v1/models/{model_id}/rollback", post(rollback))
        .route("/api/v1/models/{model_id}/deployment", delete(undeploy))
        .route("/api/v1/models/{model_id}/status", get(status))
}

/// The deploy body of docs/design/http-api.md; every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// MLflow version.
    pub model_version: Option<String>,
    /// Provider (default `huggingface`).
    pub provider: Option<String>,
    /// HF Hub repository (required for HuggingFace).
    pub repository: Option<String>,
    /// Revision.
    pub revision: Option<String>,
    /// Task.
    pub task: Option<String>,
    /// Framework.
    pub framework: Option<String>,
    /// Hardware overrides.
    #[serde(default)]
    pub instance: InstanceRequest,
    /// Replica bounds.
    pub scaling: Option<ScalingSpec>,
    /// For the `http` provider: the running endpoint.
    pub endpoint_url: Option<String>,
    /// How the new version takes over from the serving one (docs/design/rollouts.md):
    /// `{"strategy": "blue_green"}` (the default: all traffic when ready) or
    /// `{"strategy": "canary", "steps": [10, 50, 100], "bake_seconds": 300,
    /// "max_error_rate": 0.02, "max_latency_p95_ms": null, "min_requests": 50}`.
    #[schema(value_type = Option<Object>)]
    pub rollout: Option<Value>,
}

/// The answer of deploy, rollback and undeploy (documentation only; written with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DeploymentAccepted {
    /// The deployment concerned.
    deployment: Deployment,
    /// Rollback only: `reactivated` or `redeploying`.
    action: Option<String>,
}

/// `GET /api/v1/models/{model_id}/status` answer (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ModelStatus {
    /// The model.
    model_id: String,
    /// `serving` when a deployment is active, else the latest deployment's status.
    status: String,
    /// The latest deployment's status.
    database_status: String,
    /// The provider's own state.
    provider_status: Option<String>,
    /// The deployment described.
    deployment_id: uuid::Uuid,
    /// Where predictions go.
    endpoint_url: Option<String>,
    /// Last failure reason.
    error_message: Option<String>,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/deployments",
    tag = "model actions",
    operation_id = "deploy_model",
    summary = "Deploy a model version (the worker does the provider work)",
    params(("model_id" = String, Path, description = "MLflow registered-model name"), ("If-Match" = Option<String>, Header, description = "The model's `ETag` (from `GET /api/v1/models/{model_id}` or a previous write): the operation runs only if the model has not changed since; `*` or no header: unconditional"), ("Idempotency-Key" = Option<String>, Header, description = "1-255 characters; a repeated key answers the first deployment with 200")),
    request_body(content = Option<DeployBody>, description = "Every field optional; missing ones come from MLflow metadata and config defaults"),
    security(("bearer" = ["model:write"]), ("api_key" = ["model:write"])),
    responses(
        (status = 200, description = "Idempotent replay: the deployment created by the first request with this key, or the identical deploy already in flight", body = DeploymentAccepted, headers(("Location" = String, description = "`/api/v1/deployments/{id}`"), ("ETag" = String, description = "The model's version after the operation, for `If-Match`"))),
        (status = 202, description = "Accepted: the deployment is pending", body = DeploymentAccepted, headers(("Location" = String, description = "`/api/v1/deployments/{id}`"), ("ETag" = String, description = "The model's version after the operation, for `If-Match`"))),
        (status = 404, description = "NOT_FOUND: the model id cannot exist", body = ErrorResponse),
        (status = 400, description = "BAD_REQUEST: the body is not readable JSON, or `If-Match` is not an entity tag", body = ErrorResponse),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body exceeds `MAX_BODY_BYTES`", body = ErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the body does not have the documented shape (the message names the field and the rule; a canary `rollout` needs a stable, active deployment of the model)", body = ErrorResponse),
        (status = 409, description = "CONFLICT: another operation on the model is in flight (the detail names it and its deployment) or raced this one", body = ErrorResponse),
        (status = 412, description = "PRECONDITION_FAILED: `If-Match` names a version of the model that is no longer current", body = ErrorResponse, headers(("ETag" = String, description = "The model's current version"))),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key has neither `model:write` nor `model:write:{model_id}` (checked before the model is looked up)", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn deploy(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    principal.require_model_write(&raw)?;
    let model = model_id(&raw)?;
    let body: DeployBody = optional_json(&body)?;
    check_replicas(&state, body.scaling.as_ref())?;
    let rollout = match &body.rollout {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            shared::domain::RolloutSpec::parse(value)
                .map_err(|e| ApiError::Validation(e.to_string()))?,
        ),
    };
    if rollout.as_ref().is_some_and(|r| r.is_progressive())
        && deployments::find_active(&state.db, &model).await?.is_none()
    {
        return Err(ApiError::Validation(format!(
            "rollout: model `{model}` has no stable (active) deployment to roll out against; \
             deploy it without a rollout first"
        )));
    }
    let key = idempotency_key(&headers)?;
    let if_match = etag::if_match(&headers)?;
    if let Some(key) = &key
        && let Some(existing) = deployments::find_by_idempotency_key(&state.db, &model, key).await?
    {
        let version = model_ops::version(&state.db, model.as_str()).await?;
        return Ok(accepted(StatusCode::OK, existing, None, version));
    }
    let mut metadata = Map::new();
    metadata.insert("source".into(), json!("api"));
    metadata.insert("requested_by".into(), json!(principal.key_id));
    let request = DeployRequest {
        model_id: Some(model.clone()),
        model_version: body.model_version,
        provider: body.provider,
        repository: body.repository,
        revision: body.revision,
        task: body.task,
        framework: body.framework,
        instance: body.instance,
        scaling: body.scaling,
        rollout,
        endpoint_url: body.endpoint_url,
        metadata,
    };
    let mut new = request::prepare(request, &state.providers, &default_instance(&state))
        .map_err(|rejected| ApiError::Validation(rejected.0))?;
    new.idempotency_key = key.clone();
    let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
    match operations::deploy(&state.db, state.route, new, &command, if_match).await {
        Ok(Versioned {
            value: Deployed::Created(created),
            version,
        }) => Ok(accepted(StatusCode::ACCEPTED, created, None, version)),
        // The same deploy is already in flight: answered like a repeated Idempotency-Key.
        Ok(Versioned {
            value: Deployed::InFlight(existing),
            version,
        }) => Ok(accepted(StatusCode::OK, existing, None, version)),
        // The same key raced us: the database kept the first; answer with it.
        Err(DbError::Database(error)) if key.is_some() && is_unique_violation(&error) => {
            let key = key.unwrap_or_default();
            let existing = deployments::find_by_idempotency_key(&state.db, &model, &key)
                .await?
                .ok_or_else(|| ApiError::Unexpected(error.into()))?;
            let version = model_ops::version(&state.db, model.as_str()).await?;
            Ok(accepted(StatusCode::OK, existing, None, version))
        }
        Err(error) => Err(error.into()),
    }
}

/// 422 when the body asks for more replicas than `MAX_REPLICAS_PER_DEPLOYMENT` (one
/// request must not be able to order an expensive fleet).
fn check_replicas(state: &AppState, scaling: Option<&ScalingSpec>) -> Result<(), ApiError> {
    let cap = state.settings.api.max_replicas_per_deployment;
    match scaling {
        Some(s) if s.max_replica > cap => Err(ApiError::Validation(format!(
            "scaling.max_replica: {} exceeds the limit of {cap} (MAX_REPLICAS_PER_DEPLOYMENT)",
            s.max_replica
        ))),
        _ => Ok(()),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    if key.is_empty() || key.len() > 255 {
        return Err(ApiError::Validation(
            "Idempotency-Key: must be 1-255 characters".into(),
        ));
    }
    Ok(Some(key.to_owned()))
}

fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

fn default_instance(state: &AppState) -> InstanceSpec {
    let hf = &state.settings.huggingface;
    InstanceSpec {
        vendor: hf.default_vendor.clone(),
        region: hf.default_region.clone(),
        instance_type: hf.default_instance_type.clone(),
        instance_size: hf.default_instance_size.clone(),
    }
}

/// `{"deployment": …}` with `Location: /api/v1/deployments/{id}` and the model's `ETag` (and
/// an action, if any).
fn accepted(
    status: StatusCode,
    deployment: Deployment,
    action: Option<&str>,
    version: i64,
) -> Response {
    let location = format!("/api/v1/deployments/{}", deployment.id);
    let mut body = json!({"deployment": deployment});
    if let Some(action) = action {
        body["action"] = json!(action);
    }
    let mut response = (status, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    etag::set(&mut response, version);
    response
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/rollback",
    tag = "model actions",
    operation_id = "rollback_model",
    summary = "Reactivate the previous deployed version (or redeploy it)",
    params(("model_id" = String, Path, description = "MLflow registered-model name"), ("If-Match" = Option<String>, Header, description = "The model's `ETag` (from `GET /api/v1/models/{model_id}` or a previous write): the operation runs only if the model has not changed since; `*` or no header: unconditional")),
    security(("bearer" = ["model:write"]), ("api_key" = ["model:write"])),
    responses(
        (status = 200, description = "Reactivated (`action: reactivated`)", body = DeploymentAccepted, headers(("Location" = String, description = "`/api/v1/deployments/{id}`"), ("ETag" = String, description = "The model's version after the operation, for `If-Match`"))),
        (status = 202, description = "Redeploying (`action: redeploying`)", body = DeploymentAccepted, headers(("Location" = String, description = "`/api/v1/deployments/{id}`"), ("ETag" = String, description = "The model's version after the operation, for `If-Match`"))),
        (status = 404, description = "NOT_FOUND: no previous version to roll back to", body = ErrorResponse),
        (status = 400, description = "BAD_REQUEST: `If-Match` is not an entity tag", body = ErrorResponse),
        (status = 409, description = "CONFLICT: another operation on the model is in flight (the detail names it and its deployment) or raced this one, or a canary rollout is open (abort or promote it instead)", body = ErrorResponse),
        (status = 412, description = "PRECONDITION_FAILED: `If-Match` names a version of the model that is no longer current", body = ErrorResponse, headers(("ETag" = String, description = "The model's current version"))),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key has neither `model:write` nor `model:write:{model_id}` (checked before the model is looked up)", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn rollback(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require_model_write(&raw)?;
    let model = model_id(&raw)?;
    let if_match = etag::if_match(&headers)?;
    if let Some(rollout) = shared::db::rollouts::open_for(&state.db, model.as_str()).await? {
        // The rollout's canary is a deployed, inactive version: a rollback would activate it.
        return Err(ApiError::Conflict(format!(
            "rollout {} of deployment {} is open: end it with POST \
             /api/v1/models/{model}/rollout/abort (back to the stable version) or /promote",
            rollout.id, rollout.canary_id
        )));
    }
    let retire_after = state.settings.worker.retire_after;
    let done = operations::rollback(&state.db, state.route, &model, retire_after, if_match).await?;
    match done {
        Some(Versioned {
            value: Rollback::Reactivated(d),
            version,
        }) => Ok(accepted(StatusCode::OK, d, Some("reactivated"), version)),
        Some(Versioned {
            value: Rollback::Redeploying(d),
            version,
        }) => Ok(accepted(
            StatusCode::ACCEPTED,
            d,
            Some("redeploying"),
            version,
        )),
        None => Err(ApiError::NotFound(format!(
            "model `{model}` has no previous version to roll back to"
        ))),
    }
}

#[utoipa::path(
    delete,
    path = "/api/v1/models/{model_id}/deployment",
    tag = "model actions",
    operation_id = "undeploy_model",
    summary = "Undeploy the active deployment",
    params(("model_id" = String, Path, description = "MLflow registered-model name"), ("If-Match" = Option<String>, Header, description = "The model's `ETag` (from `GET /api/v1/models/{model_id}` or a previous write): the operation runs only if the model has not changed since; `*` or no header: unconditional")),
    security(("bearer" = ["model:write"]), ("api_key" = ["model:write"])),
    responses(
        (status = 202, description = "Accepted: the deployment is undeploying", body = DeploymentAccepted, headers(("Location" = String, description = "`/api/v1/deployments/{id}`"), ("ETag" = String, description = "The model's version after the operation, for `If-Match`"))),
        (status = 404, description = "NOT_FOUND: the model id cannot exist; MODEL_NOT_DEPLOYED: the model has no active deployment", body = ErrorResponse),
        (status = 400, description = "BAD_REQUEST: `If-Match` is not an entity tag", body = ErrorResponse),
        (status = 409, description = "CONFLICT: another operation on the model is in flight (the detail names it and its deployment) or raced this one", body = ErrorResponse),
        (status = 412, description = "PRECONDITION_FAILED: `If-Match` names a version of the model that is no longer current", body = ErrorResponse, headers(("ETag" = String, description = "The model's current version"))),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key has neither `model:write` nor `model:write:{model_id}` (checked before the model is looked up)", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn undeploy(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require_model_write(&raw)?;
    let model = model_id(&raw)?;
    let if_match = etag::if_match(&headers)?;
    let done = operations::undeploy(&state.db, state.route, &model, if_match)
        .await?
        .ok_or_else(|| ApiError::ModelNotDeployed(model.to_string()))?;
    Ok(accepted(
        StatusCode::ACCEPTED,
        done.value,
        None,
        done.version,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/models/{model_id}/status",
    tag = "model actions",
    operation_id = "model_status",
    summary = "Active deployment, database and provider status",
    params(("model_id" = String, Path, description = "MLflow registered-model name")),
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The status", body = ModelStatus),
        (status = 404, description = "NOT_FOUND: the model has no deployments", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn status(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let model = model_id(&raw)?;
    let filter = Filter {
        model_id: Some(model.clone()),
        limit: Some(1),
        ..Filter::default()
    };
    let current = match deployments::find_active(&state.db, &model).await? {
        Some(active) => Some(active),
        None => deployments::list(&state.db, &filter)
            .await?
            .into_iter()
            .next(),
    };
    let d =
        current.ok_or_else(|| ApiError::NotFound(format!("model `{model}` has no deployments")))?;
    let overall = if d.is_active {
        "serving"
    } else {
        d.status.as_str()
    };
    Ok(Json(json!({
        "model_id": model,
        "status": overall,
        "database_status": d.status,
        "provider_status": d.provider_status,
        "deployment_id": d.id,
        "endpoint_url": d.endpoint_url,
        "error_message": d.error_message,
    })))
}
