//! Routes, one module per resource, each with its own `router()`; [`router`] merges them.

mod admin;
mod costs;
mod dashboard;
mod deployments;
mod health;
mod model_deployments;
mod models;
mod oip;
mod openai;
mod openapi;
mod predict;
mod rollouts;
mod webhooks;

use axum::Router;
use axum::http::{Method, Uri};

use crate::error::ApiError;
use crate::state::AppState;

/// Every route of the API.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(models::router())
        .merge(model_deployments::router())
        .merge(predict::router())
        .merge(oip::router())
        .merge(openai::router())
        .merge(rollouts::router())
        .merge(deployments::router())
        .merge(costs::router())
        .merge(admin::router())
        .merge(webhooks::router())
        .merge(openapi::router())
        .merge(dashboard::router())
        .fallback(not_found)
        .method_not_allowed_fallback(no_such_method)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}

/// A known path with a method it does not take: 405 `METHOD_NOT_ALLOWED` with the documented
/// error body; axum adds the `Allow` header listing the methods the path takes (RFC 9110
/// §15.5.6), which schema-driven clients and HTTP tooling expect.
async fn no_such_method(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} does not take {method}; the Allow header lists the methods it takes",
        uri.path()
    ))
}
