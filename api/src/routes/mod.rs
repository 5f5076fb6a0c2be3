//! Routes, one module per resource, each with its own `router()`; [`router`] merges them.

mod deployments;
mod health;
mod models;
mod webhooks;

use axum::Router;
use axum::http::Uri;

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(models::router())
        .merge(deployments::router())
        .merge(webhooks::router())
        .fallback(not_found)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
