//! `GET /dashboard`: the operators' page (deployments by status, active versions, recent
//! events, failures and their reasons, dead letters with replay, hourly burn and accrued
//! cost), one static page and its script and stylesheet, no build step. The page needs no
//! key; it asks for one, keeps it in the tab's session storage and calls the JSON API with it.
//!
//! Every response carries a strict Content-Security-Policy: scripts and styles only from this
//! origin (no inline code), requests only to this origin, no framing.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

/// What the page may load and call: its own script and stylesheet, the API, nothing else.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `/dashboard` and its two assets under `/dashboard/` (the paths the ALB routes to the API).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/app.css", get(stylesheet))
}

/// A static asset with the security headers; never cached (a deploy changes it).
fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "ops",
    operation_id = "dashboard",
    summary = "The operators' dashboard (the page needs no key; its data does)",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
pub(super) async fn page() -> impl IntoResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    )
}

#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "ops",
    operation_id = "dashboard_js",
    summary = "The dashboard's script",
    responses((status = 200, description = "The script", content_type = "text/javascript", body = String)),
)]
pub(super) async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard/app.js"),
    )
}

#[utoipa::path(
    get,
    path = "/dashboard/app.css",
    tag = "ops",
    operation_id = "dashboard_css",
    summary = "The dashboard's stylesheet",
    responses((status = 200, description = "The stylesheet", content_type = "text/css", body = String)),
)]
pub(super) async fn stylesheet() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("dashboard/app.css"))
}
