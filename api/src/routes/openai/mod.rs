//! OpenAI-compatible routes in front of the models whose containers speak them (HF's TGI for
//! text-generation, TEI for feature-extraction), so the official `openai` SDKs and the tools
//! built on them work with a Hokusai key (docs/integration-guide.md, "With an OpenAI client"):
//!
//! - `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `GET /v1/models`;
//!   the same under `/api/v1/models/{model_id}/v1/...` (the path names the model, `model`
//!   may then be anything).
//! - `"model"` is the Hokusai `model_id`; the key needs `predict` or `predict:{model_id}`.
//! - The body passes to the active deployment's endpoint untouched except `model` (the
//!   container's name for itself); the answer comes back with our `model`. `"stream": true`
//!   answers Server-Sent Events chunk by chunk as they arrive, each wait between chunks
//!   bounded by `STREAM_IDLE_TIMEOUT_SECONDS` (no total bound); a client that goes away drops
//!   the stream and with it the upstream call.
//! - Token usage (`usage` of the answer, or of the stream's last chunk) feeds
//!   `hokusai_tokens_total{model_id,kind}`.
//! - Errors use OpenAI's shape `{"error": {"message", "type", "code"}}` with the statuses of
//!   our own API; an upstream error with a message passes its status through when it is the
//!   caller's (4xx), its message stripped of URLs. A stream cut upstream ends with an error
//!   event and is counted (`hokusai_stream_errors_total`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use shared::domain::ModelId;
use shared::provider::ProviderError;

use crate::auth::{Authenticated, Principal};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, Path};
use crate::routing::{ActiveRoute, Routed};
use crate::state::AppState;

mod stream;

use stream::{count_tokens, sse};

/// The routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route(
            "/api/v1/models/{model_id}/v1/chat/completions",
            post(chat_of),
        )
        .route(
            "/api/v1/models/{model_id}/v1/completions",
            post(completions_of),
        )
        .route(
            "/api/v1/models/{model_id}/v1/embeddings",
            post(embeddings_of),
        )
}

/// Which OpenAI route, and the tasks whose containers serve it.
#[derive(Clone, Copy)]
enum Kind {
    Chat,
    Completions,
    Embeddings,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "v1/chat/completions",
            Self::Completions => "v1/completions",
            Self::Embeddings => "v1/embeddings",
        }
    }

    fn tasks(self) -> &'static [&'static str] {
        match self {
            Self::Chat | Self::Completions => &["text-generation"],
            Self::Embeddings => &["feature-extraction", "sentence-embeddings"],
        }
    }
}

type Auth = Result<Authenticated, ApiError>;
type Raw = Result<Body, ApiError>;

async fn chat(State(s): State<AppState>, a: Auth, b: Raw) -> Response {
    handle(s, a, None, b, Kind::Chat).await
}
async fn completions(State(s): State<AppState>, a: Auth, b: Raw) -> Response {
    handle(s, a, None, b, Kind::Completions).await
}
async fn embeddings(State(s): State<AppState>, a: Auth, b: Raw) -> Response {
    handle(s, a, None, b, Kind::Embeddings).await
}
async fn chat_of(State(s): State<AppState>, a: Auth, p: Path<String>, b: Raw) -> Response {
    handle(s, a, Some(p.0), b, Kind::Chat).await
}
async fn completions_of(State(s): State<AppState>, a: Auth, p: Path<String>, b: Raw) -> Response {
    handle(s, a, Some(p.0), b, Kind::Completions).await
}
async fn embeddings_of(State(s): State<AppState>, a: Auth, p: Path<String>, b: Raw) -> Response {
    handle(s, a, Some(p.0), b, Kind::Embeddings).await
}

/// `GET /v1/models`: the models with an active deployment this key may call.
async fn models(State(state): State<AppState>, auth: Auth) -> Response {
    let answer = async {
        let Authenticated(principal) = auth?;
        let filter = shared::db::deployments::Filter {
            status: Some(shared::domain::DeploymentStatus::Deployed),
            limit: Some(1000),
            ..Default::default()
        };
        let deployed = shared::db::deployments::list(&state.db, &filter).await?;
        let data: Vec<Value> = deployed
            .into_iter()
            .filter(|d| d.is_active)
            .filter(|d| ModelId::parse(&d.model_id).is_ok_and(|m| principal.require_predict(&m).is_ok()))
            .map(|d| {
                json!({"id": d.model_id, "object": "model", "created": d.created_at.timestamp(), "owned_by": "hokusai"})
            })
            .collect();
        Ok::<_, ApiError>(json!({"object": "list", "data": data}))
    };
    match answer.await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => openai_error(error),
    }
}

async fn handle(
    state: AppState,
    auth: Auth,
    path_model: Option<String>,
    body: Raw,
    kind: Kind,
) -> Response {
    match forward(&state, auth, path_model, body, kind).await {
        Ok(response) => response,
        Err(error) => openai_error(error),
    }
}

/// The checks, then the pass-through.
async fn forward(
    state: &AppState,
    auth: Auth,
    path_model: Option<String>,
    body: Raw,
    kind: Kind,
) -> Result<Response, ApiError> {
    let Authenticated(principal) = auth?;
    let Body(bytes) = body?;
    let mut request: Map<String, Value> = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        Err(e) => return Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
    };
    let stream = match request.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(stream)) => *stream,
        Some(_) => return Err(ApiError::BadRequest("`stream` must be a boolean".into())),
    };
    if stream && matches!(kind, Kind::Embeddings) {
        return Err(ApiError::BadRequest("embeddings cannot be streamed".into()));
    }
    let raw = match (path_model, request.get("model")) {
        (Some(model), _) => model,
        (None, Some(Value::String(model))) => model.clone(),
        (None, None | Some(Value::Null)) => {
            return Err(ApiError::BadRequest(
                "`model` is required: the Hokusai model id".into(),
            ));
        }
        (None, Some(_)) => return Err(ApiError::BadRequest("`model` must be a string".into())),
    };
    let route = serving(state, &principal, &raw).await?;
    if let Some(task) = route.task.as_deref()
        && !kind.tasks().contains(&task)
    {
        return Err(ApiError::BadRequest(format!(
            "model `{raw}` serves the task `{task}`, which has no /{} route; the tasks that do: {}",
            kind.path(),
            kind.tasks().join(", ")
        )));
    }
    request.insert("model".into(), Value::String("tgi".into()));
    let body = serde_json::to_vec(&request).map_err(|e| ApiError::Unexpected(e.into()))?;
    let provider = state
        .providers
        .get(&route.provider)
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let timeout = state.settings.api.predict_timeout;
    let started = Instant::now();
    let upstream = provider
        .open(&route.handle, kind.path(), body)
        .await
        .map_err(|e| upstream_failure(e, timeout.as_secs()))?;
    route
        .series
        .upstream
        .record(started.elapsed().as_secs_f64());
    let status = upstream.status();
    if !status.is_success() {
        let bytes = bounded(upstream, state.settings.api.max_upstream_body_bytes).await?;
        return Err(upstream_refusal(status.as_u16(), &bytes));
    }
    state.activity.note(route.deployment_id);
    if stream {
        let idle = state.settings.api.stream_idle_timeout;
        return Ok(sse(upstream, idle, route));
    }
    let read = bounded(upstream, state.settings.api.max_upstream_body_bytes);
    let bytes = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::UpstreamTimeout(timeout.as_secs()))??;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::Upstream("the model endpoint answered something other than JSON".into())
    })?;
    if let Some(usage) = answer.get("usage") {
        count_tokens(&route.model_id, usage);
    }
    if let Some(object) = answer.as_object_mut() {
        object.insert("model".into(), Value::String(raw));
    }
    route.series.ok.increment(1);
    Ok(axum::Json(answer).into_response())
}

/// The active route of `raw` after the key's scope is checked.
async fn serving(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> Result<Arc<ActiveRoute>, ApiError> {
    let not_deployed = || ApiError::ModelNotDeployed(raw.to_owned());
    let model = ModelId::parse(raw).map_err(|_| not_deployed())?;
    principal.require_predict(&model)?;
    match state.routing.resolve(&state.db, &model).await? {
        Routed::Active(route) => Ok(route),
        Routed::Replacing(_) | Routed::Lost(_) => Err(ApiError::ModelNotReady {
            detail: "the model's endpoint was lost at the provider".into(),
            retry_after: Duration::from_secs(30),
        }),
        Routed::Nowhere => Err(not_deployed()),
    }
}

/// The body of a non-streamed answer, at most `limit` bytes.
async fn bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                return Err(ApiError::Upstream(
                    "the model endpoint's answer is too large".into(),
                ));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(ApiError::Upstream(
                    "the model endpoint broke off its answer".into(),
                ));
            }
        }
    }
}

/// A provider failure before any answer, as predict maps it.
fn upstream_failure(error: ProviderError, timeout_secs: u64) -> ApiError {
    tracing::warn!(kind = error.kind(), error = %error.message(), "the model endpoint failed");
    match error {
        ProviderError::Timeout { .. } => ApiError::UpstreamTimeout(timeout_secs),
        ProviderError::Unavailable { retry_after, .. } => ApiError::ModelNotReady {
            detail: "the model endpoint is not ready (waking up or scaling)".into(),
            retry_after,
        },
        ProviderError::Invalid { .. } => {
            ApiError::BadRequest("this model's provider has no OpenAI-compatible routes".into())
        }
        _ => ApiError::Upstream("the model endpoint failed".into()),
    }
}

/// An upstream answer with an error status: the caller's mistakes (4xx) keep their status and
/// the container's message (URLs removed); waking is 503, overload 429, the rest 502.
fn upstream_refusal(status: u16, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match &v["error"] {
            Value::String(message) => Some(message.clone()),
            Value::Object(error) => error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        });
    tracing::warn!(status, "the model endpoint refused an OpenAI request");
    match (status, message) {
        (503, _) => ApiError::ModelNotReady {
            detail: "the model endpoint is not ready (waking up or scaling)".into(),
            retry_after: Duration::from_secs(5),
        },
        (429 | 424, _) => ApiError::RateLimited {
            detail: "the model endpoint is overloaded".into(),
            retry_after: Duration::from_secs(1),
        },
        (413, _) => ApiError::PayloadTooLarge,
        (404, _) => ApiError::BadRequest("the model endpoint has no such route".into()),
        (400..=499, Some(message)) => ApiError::Validation(without_urls(&message)),
        (400..=499, None) => ApiError::BadRequest("the model rejected the request".into()),
        _ => ApiError::Upstream("the model endpoint failed".into()),
    }
}

/// `text` with every `http://` or `https://` word replaced: a container's message must not
/// reveal internal addresses.
fn without_urls(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains("http://") || word.contains("https://") {
                "<url>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error in OpenAI's shape: our status and headers (`Retry-After`), our sentence as
/// `message`, the OpenAI `type` of its class, our code (lower case) as `code`.
fn openai_error(error: ApiError) -> Response {
    let (mut parts, _) = error.into_response().into_parts();
    let body = parts.extensions.remove::<Arc<ErrorBody>>();
    let (code, message) = body.map_or(("internal", "request failed".to_owned()), |b| {
        (b.code, b.detail.clone())
    });
    let kind = match parts.status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        s if s.is_client_error() => "invalid_request_error",
        _ => "api_error",
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let error = json!({"error": {"message": message, "type": kind, "param": null, "code": code.to_lowercase()}});
    let mut rendered = axum::Json(error).into_response();
    *rendered.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        rendered
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    rendered
}
