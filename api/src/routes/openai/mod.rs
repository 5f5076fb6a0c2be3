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
//! - Errors use OpenAI's shape `{"error": {"message", "type", "param", "code"}}` (written by
//!   `crate::error::render` for these routes) with the statuses of
//!   our own API; an upstream error with a message passes its status through when it is the
//!   caller's (4xx), its message stripped of URLs. A stream cut upstream ends with an error
//!   event and is counted (`hokusai_stream_errors_total`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{Map, Value};
use shared::domain::ModelId;

use crate::auth::{Authenticated, Principal};
use crate::error::{ApiError, OpenAiErrorResponse};
use crate::extract::{Body, Path};
use crate::observe::RequestContext;
use crate::routing::{ActiveRoute, Pick, Routed};
use crate::state::AppState;

mod models;
mod schema;
mod stream;
mod upstream;

// The handler and the OpenAPI item `utoipa::path` generates beside it.
pub(crate) use models::{__path_models, models};
use upstream::{bounded, upstream_refusal};

use schema::{
    ChatCompletionRequest, Completion, CompletionRequest, EmbeddingList, EmbeddingRequest,
};
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
type Ctx = Option<Extension<RequestContext>>;

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    operation_id = "openai_chat",
    summary = "Chat completion (OpenAI-compatible)",
    description = "OpenAI-compatible; the body passes to the container with only `model` changed. Scope `predict` or `predict:{model_id}`.",
    request_body(content = ChatCompletionRequest),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The completion; with `\"stream\": true`, Server-Sent Events of `chat.completion.chunk` / `text_completion` objects ending with `data: [DONE]`", content((Completion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON, not an object, `model` missing or not a string, `stream` not a boolean, or `model` serves a task without this route (the message names the tasks that do)", body = OpenAiErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: `model` has no active deployment", body = OpenAiErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the model's container refused the request (its message, URLs removed), or a path parameter is not UTF-8", body = OpenAiErrorResponse),
        (status = 429, description = "RATE_LIMITED: the key's allowance is spent, or the model endpoint is overloaded (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent", body = OpenAiErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OpenAiErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OpenAiErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer within `PREDICT_TIMEOUT_SECONDS`", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn chat(State(s): State<AppState>, c: Ctx, a: Auth, b: Raw) -> Response {
    handle(s, c, a, None, b, Kind::Chat).await
}

#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "openai",
    operation_id = "openai_completions",
    summary = "Text completion (OpenAI-compatible)",
    description = "OpenAI-compatible; the body passes to the container with only `model` changed. Scope `predict` or `predict:{model_id}`.",
    request_body(content = CompletionRequest),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The completion; with `\"stream\": true`, Server-Sent Events of `chat.completion.chunk` / `text_completion` objects ending with `data: [DONE]`", content((Completion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON, not an object, `model` missing or not a string, `stream` not a boolean, or `model` serves a task without this route (the message names the tasks that do)", body = OpenAiErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: `model` has no active deployment", body = OpenAiErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the model's container refused the request (its message, URLs removed), or a path parameter is not UTF-8", body = OpenAiErrorResponse),
        (status = 429, description = "RATE_LIMITED: the key's allowance is spent, or the model endpoint is overloaded (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent", body = OpenAiErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OpenAiErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OpenAiErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer within `PREDICT_TIMEOUT_SECONDS`", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn completions(State(s): State<AppState>, c: Ctx, a: Auth, b: Raw) -> Response {
    handle(s, c, a, None, b, Kind::Completions).await
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    operation_id = "openai_embeddings",
    summary = "Embeddings (OpenAI-compatible)",
    description = "OpenAI-compatible; the body passes to the container with only `model` changed. Scope `predict` or `predict:{model_id}`.",
    request_body(content = EmbeddingRequest),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The embeddings", body = EmbeddingList),
        (status = 400, description = "BAD_REQUEST: malformed JSON, not an object, `model` missing or not a string, `stream` not a boolean, or `model` serves a task without this route (the message names the tasks that do)", body = OpenAiErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: `model` has no active deployment", body = OpenAiErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the model's container refused the request (its message, URLs removed), or a path parameter is not UTF-8", body = OpenAiErrorResponse),
        (status = 429, description = "RATE_LIMITED: the key's allowance is spent, or the model endpoint is overloaded (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent", body = OpenAiErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OpenAiErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OpenAiErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer within `PREDICT_TIMEOUT_SECONDS`", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn embeddings(State(s): State<AppState>, c: Ctx, a: Auth, b: Raw) -> Response {
    handle(s, c, a, None, b, Kind::Embeddings).await
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/v1/chat/completions",
    tag = "openai",
    operation_id = "model_openai_chat",
    summary = "Chat completion of the model in the path (OpenAI-compatible)",
    description = "OpenAI-compatible; the body passes to the container with only `model` changed. Scope `predict` or `predict:{model_id}`.",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)")),
    request_body(content = ChatCompletionRequest),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The completion; with `\"stream\": true`, Server-Sent Events of `chat.completion.chunk` / `text_completion` objects ending with `data: [DONE]`", content((Completion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON, not an object, `model` missing or not a string, `stream` not a boolean, or the path's model serves a task without this route (the message names the tasks that do)", body = OpenAiErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the path's model has no active deployment", body = OpenAiErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the model's container refused the request (its message, URLs removed), or a path parameter is not UTF-8", body = OpenAiErrorResponse),
        (status = 429, description = "RATE_LIMITED: the key's allowance is spent, or the model endpoint is overloaded (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent", body = OpenAiErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OpenAiErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OpenAiErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer within `PREDICT_TIMEOUT_SECONDS`", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn chat_of(
    State(s): State<AppState>,
    c: Ctx,
    a: Auth,
    p: Path<String>,
    b: Raw,
) -> Response {
    handle(s, c, a, Some(p.0), b, Kind::Chat).await
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/v1/completions",
    tag = "openai",
    operation_id = "model_openai_completions",
    summary = "Text completion of the model in the path (OpenAI-compatible)",
    description = "OpenAI-compatible; the body passes to the container with only `model` changed. Scope `predict` or `predict:{model_id}`.",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)")),
    request_body(content = CompletionRequest),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The completion; with `\"stream\": true`, Server-Sent Events of `chat.completion.chunk` / `text_completion` objects ending with `data: [DONE]`", content((Completion = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "BAD_REQUEST: malformed JSON, not an object, `model` missing or not a string, `stream` not a boolean, or the path's model serves a task without this route (the message names the tasks that do)", body = OpenAiErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the path's model has no active deployment", body = OpenAiErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the model's container refused the request (its message, URLs removed), or a path parameter is not UTF-8", body = OpenAiErrorResponse),
        (status = 429, description = "RATE_LIMITED: the key's allowance is spent, or the model endpoint is overloaded (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent", body = OpenAiErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OpenAiErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OpenAiErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer within `PREDICT_TIMEOUT_SECONDS`", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn completions_of(
    State(s): State<AppState>,
    c: Ctx,
    a: Auth,
    p: Path<String>,
    b: Raw,
) -> Response {
    handle(s, c, a, Some(p.0), b, Kind::Completions).await
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/v1/embeddings",
    tag = "openai",
    operation_id = "model_openai_embeddings",
    summary = "Embeddings of the model in the path (OpenAI-compatible)",
    description = "OpenAI-compatible; the body passes to the container with only `model` changed. Scope `predict` or `predict:{model_id}`.",
    params(("model_id" = String, Path, description = "The Hokusai model id (MLflow registered-model name)")),
    request_body(content = EmbeddingRequest),
    security(("bearer" = ["predict"]), ("bearer" = ["predict:{model_id}"]), ("api_key" = ["predict"]), ("api_key" = ["predict:{model_id}"])),
    responses(
        (status = 200, description = "The embeddings", body = EmbeddingList),
        (status = 400, description = "BAD_REQUEST: malformed JSON, not an object, `model` missing or not a string, `stream` not a boolean, or the path's model serves a task without this route (the message names the tasks that do)", body = OpenAiErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the path's model has no active deployment", body = OpenAiErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the model's container refused the request (its message, URLs removed), or a path parameter is not UTF-8", body = OpenAiErrorResponse),
        (status = 429, description = "RATE_LIMITED: the key's allowance is spent, or the model endpoint is overloaded (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent", body = OpenAiErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = OpenAiErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or was lost at the provider (`Retry-After`); AUTH_UNAVAILABLE; SERVICE_UNAVAILABLE; OVERLOADED", body = OpenAiErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer within `PREDICT_TIMEOUT_SECONDS`", body = OpenAiErrorResponse),
    ),
)]
pub(crate) async fn embeddings_of(
    State(s): State<AppState>,
    c: Ctx,
    a: Auth,
    p: Path<String>,
    b: Raw,
) -> Response {
    handle(s, c, a, Some(p.0), b, Kind::Embeddings).await
}

async fn handle(
    state: AppState,
    context: Ctx,
    auth: Auth,
    path_model: Option<String>,
    body: Raw,
    kind: Kind,
) -> Response {
    let context = context.map(|Extension(c)| c);
    match forward(&state, context, auth, path_model, body, kind).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// The checks, then the pass-through.
async fn forward(
    state: &AppState,
    context: Option<RequestContext>,
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
    // `X-Hokusai-Track` is predict's and infer's; here the share is drawn (or sticky).
    let how = if state.settings.api.rollout_sticky {
        Pick::Sticky(&principal.key_id)
    } else {
        Pick::Random
    };
    let (route, track) = serving(state, &principal, &raw).await?.pick(how);
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
    let upstream = provider.open(&route.handle, kind.path(), body).await;
    let waited = started.elapsed();
    let upstream = upstream.map_err(|e| {
        crate::error::from_provider(
            e,
            timeout.as_secs(),
            "this model's provider has no OpenAI-compatible routes",
        )
    });
    if let Some(track) = track {
        // Judged by the answer's status: what a stream does later is not the canary's record.
        // As predict counts: a 5xx-class outcome fails, the model refusing the input or its
        // endpoint's rate limit (4xx to the caller) does not.
        let failed = match &upstream {
            Ok(answer) => answer.status().is_server_error(),
            Err(error) => error.status_code().is_server_error(),
        };
        state.rollouts.record(&route, track, failed, waited);
    }
    let upstream = upstream?;
    route.series.upstream.record(waited.as_secs_f64());
    if let Some(context) = &context {
        context.set_route(route.clone());
        context.set_upstream(waited);
    }
    let status = upstream.status();
    if !status.is_success() {
        let bytes = bounded(upstream, state.settings.api.max_upstream_body_bytes).await?;
        return Err(upstream_refusal(status.as_u16(), &bytes));
    }
    state.activity.note(route.deployment_id);
    if stream {
        let idle = state.settings.api.stream_idle_timeout;
        return Ok(sse(upstream, idle, route, context));
    }
    let read = bounded(upstream, state.settings.api.max_upstream_body_bytes);
    let bytes = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::UpstreamTimeout(timeout.as_secs()))??;
    let mut answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::Upstream("the model endpoint answered something other than JSON".into())
    })?;
    if let Some(usage) = answer.get("usage") {
        count_tokens(&route.model_id, usage, context.as_ref());
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
