//! The API's one error type. HTTP status codes exist only here: [`ApiError::status_code`]
//! maps each variant, and the stable body of docs/design/http-api.md is rendered in one place,
//! `{"detail": "<sentence>", "error": "<CODE>", "request_id": "…"}` — or, on the protocol
//! routes, the protocol's own shape of the same error ([`Shape`]: OpenAI's
//! `{"error": {"message", "type", "param", "code"}}`, the Open Inference Protocol's
//! `{"error": "<sentence>"}`).
//!
//! A handler returns `Err(ApiError)`; [`IntoResponse`] stores the error in the response's
//! extensions and [`render`] (called by the observation middleware, which knows the request id
//! and the route) writes the body. Internal causes are logged once and never sent.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The header carrying the request id (taken from the request or generated).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No usable API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key lacks a scope.
    #[error("this API key lacks the required scope `{0}`")]
    Forbidden(String),
    /// No route or resource.
    #[error("{0}")]
    NotFound(String),
    /// The model has no active deployment.
    #[error("model `{0}` has no active deployment")]
    ModelNotDeployed(String),
    /// The request is well-formed JSON but its content is not acceptable.
    #[error("{0}")]
    Validation(String),
    /// The request cannot be read at all.
    #[error("{0}")]
    BadRequest(String),
    /// The body exceeds `MAX_BODY_BYTES`.
    #[error("the request body exceeds the configured size limit (MAX_BODY_BYTES)")]
    PayloadTooLarge,
    /// Too many requests (ours or upstream's).
    #[error("{detail}")]
    RateLimited {
        /// Sentence for the client.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The key's monthly prediction quota is used up.
    #[error("this API key's monthly prediction quota is used up")]
    QuotaExceeded {
        /// Until the quota starts again (next month).
        retry_after: Duration,
    },
    /// More requests in flight than `MAX_CONCURRENT_REQUESTS`: shed, retry shortly.
    #[error("the server is overloaded; retry shortly")]
    Overloaded,
    /// The request took longer than `REQUEST_TIMEOUT_SECONDS`.
    #[error("the request did not complete within {0} s")]
    RequestTimeout(u64),
    /// The model's endpoint is waking up or provisioning.
    #[error("{detail}")]
    ModelNotReady {
        /// Sentence for the client.
        detail: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The auth service cannot answer.
    #[error("the authentication service is unavailable; retry shortly")]
    AuthUnavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// The database cannot be reached (connections refused, dropped or exhausted).
    #[error("the database is unavailable; retry shortly")]
    ServiceUnavailable,
    /// The upstream endpoint failed.
    #[error("{0}")]
    Upstream(String),
    /// The upstream endpoint did not answer in time.
    #[error("the model endpoint did not answer within {0} s")]
    UpstreamTimeout(u64),
    /// The path exists but does not take this method (axum adds `Allow`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Another operation on the model stands in the way (docs/design/domain.md,
    /// "Concurrent operations on one model").
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` names a version of the model that is no longer current; the answer carries
    /// the current one in `ETag`.
    #[error("the model changed since you read it; its current ETag is \"{current}\"")]
    PreconditionFailed {
        /// The model's current version.
        current: i64,
    },
    /// Something we did not expect; the cause is logged, not sent.
    #[error("internal error")]
    Unexpected(#[source] anyhow::Error),
}

impl ApiError {
    /// The HTTP status of each variant.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::ModelNotDeployed(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } | Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::ModelNotReady { .. }
            | Self::AuthUnavailable { .. }
            | Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Self::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code of each variant (docs/design/http-api.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::ModelNotDeployed(_) => "MODEL_NOT_DEPLOYED",
            Self::Validation(_) => "VALIDATION_ERROR",
            Self::BadRequest(_) => "BAD_REQUEST",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            Self::Overloaded => "OVERLOADED",
            Self::RequestTimeout(_) => "TIMEOUT",
            Self::ModelNotReady { .. } => "MODEL_NOT_READY",
            Self::AuthUnavailable { .. } => "AUTH_UNAVAILABLE",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::Upstream(_) => "UPSTREAM_ERROR",
            Self::UpstreamTimeout(_) => "UPSTREAM_TIMEOUT",
            Self::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            Self::Conflict(_) => "CONFLICT",
            Self::PreconditionFailed { .. } => "PRECONDITION_FAILED",
            Self::Unexpected(_) => "INTERNAL",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. }
            | Self::ModelNotReady { retry_after, .. }
            | Self::AuthUnavailable { retry_after }
            | Self::QuotaExceeded { retry_after } => Some(*retry_after),
            Self::ServiceUnavailable | Self::Overloaded => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// An unexpected error whose cause is the database being unreachable becomes
    /// [`ApiError::ServiceUnavailable`]: a client may retry it, and it is not a bug.
    fn classified(self) -> Self {
        match self {
            Self::Unexpected(cause) if database_unreachable(&cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::ServiceUnavailable
            }
            other => other,
        }
    }
}

/// The one mapping of a provider failure (no answer from the model's endpoint) to an API
/// error, for every route that calls a model (predict, OIP `infer`, the OpenAI routes): a
/// waking or vanished endpoint is 503 with a `Retry-After` (the reconciler heals a vanished
/// one), an overloaded one 429, a timeout 504 naming `timeout_secs`, a request the model
/// rejected 400 with `rejected` (what the route tells its caller), the rest 502. The
/// provider's own message is logged, never sent: it may name internal URLs.
pub fn from_provider(
    error: shared::provider::ProviderError,
    timeout_secs: u64,
    rejected: &str,
) -> ApiError {
    use shared::provider::ProviderError;
    tracing::warn!(kind = error.kind(), error = %error.message(), "the model endpoint failed");
    match error {
        ProviderError::Unavailable { retry_after, .. } => ApiError::ModelNotReady {
            detail: "the model endpoint is not ready (waking up or scaling)".into(),
            retry_after,
        },
        ProviderError::NotFound { .. } => ApiError::ModelNotReady {
            detail: "the model endpoint is gone at the provider".into(),
            retry_after: Duration::from_secs(30),
        },
        ProviderError::RateLimited { retry_after, .. } => ApiError::RateLimited {
            detail: "the model endpoint is overloaded".into(),
            retry_after,
        },
        ProviderError::Invalid { .. } => ApiError::BadRequest(rejected.to_owned()),
        ProviderError::Timeout { .. } => ApiError::UpstreamTimeout(timeout_secs),
        _ => ApiError::Upstream("the model endpoint failed".into()),
    }
}

/// Whether any error in `cause`'s chain says the database could not be reached.
fn database_unreachable(cause: &anyhow::Error) -> bool {
    cause.chain().any(|e| {
        e.downcast_ref::<sea_orm::DbErr>()
            .is_some_and(shared::db::is_unavailable)
            || e.downcast_ref::<shared::db::DbError>()
                .is_some_and(shared::db::DbError::is_unavailable)
    })
}

impl From<shared::db::DbError> for ApiError {
    fn from(error: shared::db::DbError) -> Self {
        use shared::db::DbError;
        if error.is_unavailable() {
            tracing::warn!(%error, "database unavailable");
            return Self::ServiceUnavailable;
        }
        match error {
            DbError::PreconditionFailed { current } => Self::PreconditionFailed { current },
            DbError::OperationInFlight {
                operation,
                deployment,
            } => Self::Conflict(format!(
                "the {operation} of deployment {deployment} is in flight; try again once it ended"
            )),
            // Lost races the model's lock did not cover: a client may simply retry.
            DbError::ActiveConflict(_)
            | DbError::StaleTransition { .. }
            | DbError::StaleRollout(_) => Self::Conflict(format!(
                "{error}; another operation changed the model at the same time"
            )),
            error if is_unique_violation(&error) => Self::Conflict(
                "another request created the same row at the same time; read the model and retry"
                    .into(),
            ),
            other => Self::Unexpected(other.into()),
        }
    }
}

fn is_unique_violation(error: &shared::db::DbError) -> bool {
    matches!(error, shared::db::DbError::Database(e) if matches!(e.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_))))
}

/// The JSON body of every error response (docs/design/http-api.md); also its OpenAPI schema.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// A sentence for humans.
    #[schema(example = "model `fraud-detector` has no active deployment")]
    pub detail: String,
    /// The stable code: `UNAUTHORIZED` 401, `FORBIDDEN` 403, `NOT_FOUND` 404,
    /// `MODEL_NOT_DEPLOYED` 404, `VALIDATION_ERROR` 422, `BAD_REQUEST` 400,
    /// `PAYLOAD_TOO_LARGE` 413, `RATE_LIMITED` 429, `QUOTA_EXCEEDED` 429, `MODEL_NOT_READY`
    /// 503, `AUTH_UNAVAILABLE` 503, `SERVICE_UNAVAILABLE` 503 (the database is unreachable),
    /// `OVERLOADED` 503, `UPSTREAM_ERROR` 502, `UPSTREAM_TIMEOUT` 504, `TIMEOUT` 504,
    /// `METHOD_NOT_ALLOWED` 405 (with `Allow`), `CONFLICT` 409 (another operation on the model
    /// is in flight), `PRECONDITION_FAILED` 412
    /// (a stale `If-Match`; `ETag` holds the current tag), `INTERNAL` 500.
    #[schema(example = "MODEL_NOT_DEPLOYED")]
    pub error: String,
    /// The request's `X-Request-Id`.
    pub request_id: String,
}

/// What [`render`] needs to write the body.
#[derive(Debug, Clone)]
pub(crate) struct ErrorBody {
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = self.classified();
        if let Self::Unexpected(cause) = &this {
            tracing::error!(error = ?cause, "request failed unexpectedly");
        }
        let mut response = this.status_code().into_response();
        if let Self::PreconditionFailed { current } = &this
            && let Ok(value) = HeaderValue::from_str(&crate::etag::format(*current))
        {
            response.headers_mut().insert(header::ETAG, value);
        }
        if let Some(after) = this.retry_after() {
            let rounded_up = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            let seconds = rounded_up.max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        let body = ErrorBody {
            code: this.code(),
            detail: this.to_string(),
        };
        response.extensions_mut().insert(Arc::new(body));
        response
    }
}

/// The error body's shape: each protocol answers errors the way its clients parse them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Our own routes: [`ErrorResponse`].
    Hokusai,
    /// The OpenAI-compatible routes: [`OpenAiErrorResponse`].
    OpenAi,
    /// The Open Inference Protocol routes: [`OipErrorResponse`].
    Oip,
}

impl Shape {
    /// The shape of the route `template` (a matched route, `None` when nothing matched):
    /// `/v2` and `/v2/...` are the Open Inference Protocol, `/v1/...` and `/api/v1/models/{model_id}/v1/...`
    /// are OpenAI's.
    pub(crate) fn of(template: Option<&str>) -> Self {
        match template {
            Some(t) if t == "/v2" || t.starts_with("/v2/") => Self::Oip,
            Some(t) if t.starts_with("/v1/") || t.starts_with("/api/v1/models/{model_id}/v1/") => {
                Self::OpenAi
            }
            _ => Self::Hokusai,
        }
    }
}

/// The body of an error on the OpenAI-compatible routes (OpenAI's own shape, which its SDKs
/// turn into typed exceptions); the request id is in the `X-Request-Id` header.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorResponse {
    /// The error.
    pub error: OpenAiError,
}

/// OpenAI's error object.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiError {
    /// A sentence for humans (our `detail`, or the upstream's message with URLs removed).
    #[schema(example = "model `fraud-detector` has no active deployment")]
    pub message: String,
    /// OpenAI's class of the error: `authentication_error` 401, `permission_error` 403,
    /// `not_found_error` 404, `rate_limit_error` 429, `invalid_request_error` other 4xx,
    /// `api_error` 5xx.
    #[serde(rename = "type")]
    #[schema(example = "not_found_error")]
    pub kind: &'static str,
    /// Always null (OpenAI names the offending parameter here; the message does).
    pub param: Option<String>,
    /// Our stable code ([`ErrorResponse::error`]) in lower case.
    #[schema(example = "model_not_deployed")]
    pub code: String,
}

/// The body of an error on the Open Inference Protocol routes (the protocol's shape); the
/// request id is in the `X-Request-Id` header.
#[derive(Debug, Serialize, ToSchema)]
pub struct OipErrorResponse {
    /// A sentence for humans.
    #[schema(example = "model `fraud-detector` has no active deployment")]
    pub error: String,
}

fn openai_kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_client_error() => "invalid_request_error",
        _ => "api_error",
    }
}

/// An [`ApiError`] response with its JSON body written in the route's [`Shape`] (the Hokusai
/// body carries `request_id`); other responses unchanged. The observation middleware calls it
/// for every response, so errors from the layers (overload, timeouts) take the shape too.
pub(crate) fn render(response: Response, request_id: &str, shape: Shape) -> Response {
    let Some(body) = response.extensions().get::<Arc<ErrorBody>>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut rendered = match shape {
        Shape::Hokusai => Json(ErrorResponse {
            detail: body.detail.clone(),
            error: body.code.to_owned(),
            request_id: request_id.to_owned(),
        })
        .into_response(),
        Shape::OpenAi => Json(OpenAiErrorResponse {
            error: OpenAiError {
                message: body.detail.clone(),
                kind: openai_kind(parts.status),
                param: None,
                code: body.code.to_lowercase(),
            },
        })
        .into_response(),
        Shape::Oip => Json(OipErrorResponse {
            error: body.detail.clone(),
        })
        .into_response(),
    };
    *rendered.status_mut() = parts.status;
    rendered.extensions_mut().insert(body);
    for (name, value) in parts.headers.iter() {
        rendered
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    rendered
}
