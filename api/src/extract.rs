//! Extractors whose rejections are [`ApiError`]s, so malformed JSON, wrong types, missing
//! fields, oversized bodies and bad path parameters all answer the documented error body.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;

use crate::error::ApiError;

/// `axum::Json` with our rejection: 400 for unreadable JSON, 422 naming the field path for
/// well-formed JSON of the wrong shape, 413 above `MAX_BODY_BYTES`.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// `axum::extract::Path` with our rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with our rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The raw body with our rejection: 413 `PAYLOAD_TOO_LARGE` above `MAX_BODY_BYTES`, 400
/// when it cannot be read.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(ApiError::from)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::Validation(clean(&e.body_text())),
            JsonRejection::JsonSyntaxError(e) => {
                Self::BadRequest(format!("malformed JSON: {}", clean(&e.body_text())))
            }
            JsonRejection::MissingJsonContentType(_) => Self::BadRequest(
                "expected a JSON body with `Content-Type: application/json`".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Validation(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Validation(format!("invalid query string: {}", rejection.body_text()))
    }
}

/// A JSON body that may be absent (an empty body is `T::default()`), with the same error
/// answers as [`Json`]: 400 for unreadable JSON, 422 naming the field path.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    // No body, or JSON `null` (what the document's optional body allows): the defaults.
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            ApiError::Validation(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        } else {
            ApiError::BadRequest(format!("malformed JSON: {inner}"))
        }
    })
}

/// axum's texts start with "Failed to deserialize the JSON body into the target type: ";
/// the rest (field path and serde's reason) is what the client needs.
fn clean(text: &str) -> String {
    text.split_once("target type: ")
        .map_or(text, |(_, rest)| rest)
        .to_owned()
}
