//! Bearer tokens, checked like the real API: management routes always, inference routes
//! unless the endpoint is `public`.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::store::{ApiError, Store};

/// Whether `Authorization: Bearer {token}` is present.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| given.trim() == token)
}

/// Middleware refusing requests without the token (401 `{"error"}`).
pub async fn require_token(State(store): State<Store>, request: Request, next: Next) -> Response {
    if bearer_matches(request.headers(), &store.config().token) {
        next.run(request).await
    } else {
        ApiError::Json(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header".into(),
        )
        .into_response()
    }
}
