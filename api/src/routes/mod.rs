//! Routes, one module per resource, each with its own `router()`; [`router`] merges them.

mod admin;
mod costs;
mod dashboard;
mod deployments;
mod health;
mod model_deployments;
mod models;
mod openapi;
mod predict;
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
        .merge(model_deployments::router())
        .merge(predict::router())
        .merge(deployments::router())
        .merge(costs::router())
        .merge(admin::router())
        .merge(webhooks::router())
        .merge(openapi::router())
        .merge(dashboard::router())
        .fallback(not_found)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
