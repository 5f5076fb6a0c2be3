//! Dead-letter operations for operators (scope `admin`): `GET /api/v1/admin/dlq` lists them
//! (the same JSON as `hokusai-serve dlq list --json`), `POST /api/v1/admin/dlq/replay` puts
//! the chosen ones (or all) back on the queue with their attempts reset and the replaying key
//! recorded, `DELETE /api/v1/admin/dlq/{id}` drops one.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::queue::{QueueError, Selection};

use shared::queue::DeadLetter;
use utoipa::ToSchema;

use crate::auth::{Authenticated, Scope};
use crate::error::{ApiError, ErrorResponse};
use crate::extract::{Json as JsonBody, Path, Query};
use crate::state::AppState;

/// The admin routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/dlq", get(list))
        .route("/api/v1/admin/dlq/replay", post(replay))
        .route("/api/v1/admin/dlq/{id}", delete(purge))
}

fn queue_error(error: QueueError) -> ApiError {
    ApiError::Unexpected(anyhow::Error::new(error).context("dead-letter operation"))
}

/// The most dead letters one list answers, whatever `limit` asks.
const MAX_LIST: usize = 1000;

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

/// `POST /api/v1/admin/dlq/replay` answer (documentation only; written with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct Replayed {
    /// The ids put back on the queue.
    replayed: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/dlq",
    tag = "admin",
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    params(("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)")),
    security(("bearer" = ["admin"]), ("api_key" = ["admin"])),
    responses(
        (status = 200, description = "The dead letters (as `hokusai-serve dlq list --json`)", body = Vec<DeadLetter>),
        (status = 422, description = "VALIDATION_ERROR: `limit` is not a number", body = ErrorResponse),
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
    principal.require(Scope::Admin)?;
    let letters = state
        .queue
        .list(query.limit.unwrap_or(100).min(MAX_LIST))
        .await
        .map_err(queue_error)?;
    Ok(Json(
        serde_json::to_value(letters).map_err(|e| ApiError::Unexpected(e.into()))?,
    ))
}

/// `{"ids": [...]}` or `{"all": true}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    /// The dead letters to replay (non-empty unless `all`).
    #[serde(default)]
    ids: Vec<String>,
    /// Replay every dead letter.
    #[serde(default)]
    all: bool,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/dlq/replay",
    tag = "admin",
    operation_id = "replay_dead_letters",
    summary = "Put dead letters back on the queue, attempts reset",
    request_body(content = ReplayBody),
    security(("bearer" = ["admin"]), ("api_key" = ["admin"])),
    responses(
        (status = 200, description = "Replayed", body = Replayed),
        (status = 404, description = "NOT_FOUND: one of `ids` is not a dead letter", body = ErrorResponse),
        (status = 400, description = "BAD_REQUEST: the body is not readable JSON", body = ErrorResponse),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body exceeds `MAX_BODY_BYTES`", body = ErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the body does not have the documented shape (give either `ids` or `all: true`)", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn replay(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonBody(body): JsonBody<ReplayBody>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Admin)?;
    let selection = match (body.all, body.ids.is_empty()) {
        (true, true) => Selection::All,
        (false, false) => Selection::Ids(body.ids),
        _ => {
            return Err(ApiError::Validation(
                "give either `ids` (non-empty) or `all: true`".into(),
            ));
        }
    };
    let by = format!("api:{}", principal.key_id);
    let replayed = state
        .queue
        .replay(&selection, &by)
        .await
        .map_err(queue_error)?;
    if let Selection::Ids(wanted) = &selection
        && let Some(missing) = wanted.iter().find(|id| !replayed.contains(id))
    {
        return Err(ApiError::NotFound(format!(
            "no dead letter with id {missing}"
        )));
    }
    Ok(Json(json!({"replayed": replayed})))
}

#[utoipa::path(
    delete,
    path = "/api/v1/admin/dlq/{id}",
    tag = "admin",
    operation_id = "delete_dead_letter",
    summary = "Drop one dead letter",
    params(("id" = String, Path, description = "Dead letter id, as listed")),
    security(("bearer" = ["admin"]), ("api_key" = ["admin"])),
    responses(
        (status = 204, description = "Dropped"),
        (status = 404, description = "NOT_FOUND: no dead letter with this id", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn purge(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Scope::Admin)?;
    let purged = state
        .queue
        .purge(&Selection::Ids(vec![id.clone()]))
        .await
        .map_err(queue_error)?;
    if purged.is_empty() {
        return Err(ApiError::NotFound(format!("no dead letter with id {id}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
