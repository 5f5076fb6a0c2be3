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

use crate::auth::{Authenticated, Scope};
use crate::error::ApiError;
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

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Admin)?;
    let letters = state
        .queue
        .list(query.limit.unwrap_or(100))
        .await
        .map_err(queue_error)?;
    Ok(Json(
        serde_json::to_value(letters).map_err(|e| ApiError::Unexpected(e.into()))?,
    ))
}

/// `{"ids": [...]}` or `{"all": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

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
