//! Routes, one module per resource; [`router`] merges them.

mod health;

use axum::Router;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the API.
pub fn router() -> Router<AppState> {
    Router::new().merge(health::router()).fallback(not_found)
}

async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    ApiError::NotFound(format!("no route for {}", uri.path())).into_response_for(&headers)
}
