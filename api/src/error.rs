//! The API's one error type. HTTP status codes exist only here: [`ApiError::status_code`]
//! maps each variant, and [`IntoResponse`] renders the stable body of DESIGN.md §9,
//! `{"detail": "<sentence>", "error": "<CODE>", "request_id": "…"}`. Internal causes are
//! logged once and never sent.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The header carrying the request id (taken from the request or generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route or resource.
    #[error("{0}")]
    NotFound(String),
    /// Something we did not expect; the cause is logged, not sent.
    #[error("internal error")]
    Unexpected(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status of each variant.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of each variant.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NOT_FOUND",
            Self::Unexpected(_) => "INTERNAL",
        }
    }

    /// Renders the error for a request, logging internal causes once.
    pub fn into_response_for(self, headers: &HeaderMap) -> Response {
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Self::Unexpected(cause) = &self {
            tracing::error!(request_id, error = ?cause, "request failed");
        }
        let body =
            json!({"detail": self.to_string(), "error": self.code(), "request_id": request_id});
        (self.status_code(), Json(body)).into_response()
    }
}
