//! `POST /api/v1/models/{model_id}/predict` (scope `predict` or `predict:{model_id}`): the
//! hot path. The active deployment comes from the routing cache (no database query when
//! warm); the request is forwarded with the provider's `predict`; the answer is wrapped in
//! Hokusai's response shape. Provider errors map to the documented codes: a waking endpoint
//! is 503 MODEL_NOT_READY with Retry-After, throttling 429, an upstream 4xx 400 with the
//! upstream message, an upstream 5xx or 3xx (redirects are not followed) 502, no answer in
//! time 504.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::domain::ModelId;
use shared::provider::PredictRequest;
use shared::telemetry::cloudwatch::{self, Metric};
use shared::telemetry::metrics::names;

use utoipa::ToSchema;

use crate::auth::{Authenticated, Principal};
use crate::error::{ApiError, ErrorResponse, from_provider};
use crate::extract::{self, Path};
use crate::observe::RequestContext;
use crate::routing::{ActiveRoute, Pick, Routed, Track};
use crate::state::AppState;

/// The predict route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/models/{model_id}/predict", post(predict))
}

/// The request body of docs/design/http-api.md.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// The model inputs: a string, a number, a boolean, an object, or an array whose elements
    /// are not null (never null itself).
    #[schema(schema_with = inputs_schema)]
    pub inputs: Value,
    /// Task parameters.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Map<String, Value>>,
    /// Serving options of Hokusai's old API (`wait_for_model`, `use_cache`): must be an
    /// object; not forwarded, as dedicated endpoints take none (a scaled-to-zero endpoint is
    /// woken by `X-Scale-Up-Timeout` instead).
    #[serde(rename = "options")]
    #[schema(value_type = Option<Object>)]
    pub _options: Option<Map<String, Value>>,
}

/// The schema of `inputs`, exactly what [`predict`] accepts: any JSON value but null, and no
/// null element in an array.
fn inputs_schema() -> utoipa::openapi::Schema {
    use utoipa::openapi::Schema;
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let of = |t: Type| Schema::Object(ObjectBuilder::new().schema_type(t).build());
    let element = OneOfBuilder::new()
        .item(of(Type::String))
        .item(of(Type::Number))
        .item(of(Type::Boolean))
        .item(of(Type::Object))
        .item(of(Type::Array));
    let array = ArrayBuilder::new().items(element).build();
    Schema::OneOf(
        OneOfBuilder::new()
            .description(Some(
                "The model inputs: a string, a number, a boolean, an object, or an array without null elements",
            ))
            .item(of(Type::String))
            .item(of(Type::Number))
            .item(of(Type::Boolean))
            .item(of(Type::Object))
            .item(Schema::Array(array))
            .build(),
    )
}

/// Metadata of a prediction.
#[derive(Serialize, ToSchema)]
pub(super) struct PredictMetadata<'a> {
    /// Always `1.0`.
    api_version: &'static str,
    /// The deployment that answered.
    deployment_id: uuid::Uuid,
    /// Its MLflow version.
    model_version: Option<&'a str>,
    /// Its provider.
    provider: &'a str,
    /// Time spent in the service.
    response_time_ms: u64,
    /// The caller.
    user_id: Option<&'a str>,
    /// The caller's key.
    api_key_id: &'a str,
}

/// The predict answer, Hokusai's existing shape, serialized straight from borrowed fields.
#[derive(Serialize, ToSchema)]
pub(super) struct PredictResponse<'a> {
    /// The model.
    model_id: &'a str,
    /// The provider's predictions, always an array.
    #[schema(value_type = Vec<Object>)]
    predictions: Value,
    /// Who answered and how fast.
    metadata: PredictMetadata<'a>,
    /// When (RFC 3339, milliseconds).
    #[schema(format = DateTime)]
    timestamp: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/predict",
    tag = "predict",
    operation_id = "predict",
    summary = "Forward a prediction to the active deployment",
    description = "Scope `predict` or `predict:{model_id}`.",
    params(("model_id" = String, Path, description = "MLflow registered-model name"), ("X-Hokusai-Track" = Option<String>, Header, description = "During a canary rollout, `stable` or `canary` forces the version that answers (needs `model:write` on the model)")),
    request_body(content = PredictBody),
    security(
        ("bearer" = ["predict"]),
        ("api_key" = ["predict"]),
        ("bearer" = ["predict:{model_id}"]),
        ("api_key" = ["predict:{model_id}"]),
    ),
    responses(
        (status = 200, description = "The predictions", body = PredictResponse),
        (status = 400, description = "BAD_REQUEST: unreadable JSON, or the model rejected the request", body = ErrorResponse),
        (status = 404, description = "MODEL_NOT_DEPLOYED: the model has no active deployment", body = ErrorResponse),
        (status = 413, description = "PAYLOAD_TOO_LARGE: the body exceeds `MAX_BODY_BYTES`", body = ErrorResponse),
        (status = 422, description = "VALIDATION_ERROR: the body does not have the documented shape (`inputs` required, not null, no null element), or `X-Hokusai-Track` is neither `stable` nor `canary`", body = ErrorResponse),
        (status = 429, description = "RATE_LIMITED: the model endpoint is throttling (`Retry-After`)", body = ErrorResponse),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key has neither `predict` nor `predict:{model_id}`, or sends `X-Hokusai-Track` without `model:write`", body = ErrorResponse),
        (status = 503, description = "MODEL_NOT_READY: the endpoint is waking up or provisioning, or was lost at the provider (being replaced, or not: the detail says) (`Retry-After`); AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 502, description = "UPSTREAM_ERROR: the model endpoint failed", body = ErrorResponse),
        (status = 504, description = "UPSTREAM_TIMEOUT: the model endpoint did not answer in time", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn predict(
    State(state): State<AppState>,
    context: Option<Extension<RequestContext>>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
    headers: HeaderMap,
    extract::Json(body): extract::Json<PredictBody>,
) -> Result<Response, ApiError> {
    let started = context.as_ref().map_or_else(Instant::now, |c| c.started());
    let not_deployed = || ApiError::ModelNotDeployed(raw.clone());
    let model = ModelId::parse(&raw).map_err(|_| not_deployed())?;
    principal.require_predict(&model)?;
    if body.inputs.is_null() {
        return Err(ApiError::Validation("inputs: must not be null".into()));
    }
    if let Some(n) = body
        .inputs
        .as_array()
        .and_then(|items| items.iter().position(Value::is_null))
    {
        return Err(ApiError::Validation(format!(
            "inputs[{n}]: must not be null"
        )));
    }
    let how = pick_of(&state, &principal, &headers, &model)?;
    let (route, predictions) = forward(
        &state,
        context.as_ref(),
        &model,
        &raw,
        (body.inputs, body.parameters),
        how,
        started,
    )
    .await?;
    let answer = PredictResponse {
        model_id: model.as_str(),
        predictions,
        metadata: PredictMetadata {
            api_version: "1.0",
            deployment_id: route.deployment_id,
            model_version: route.model_version.as_deref(),
            provider: &route.provider,
            response_time_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            user_id: principal.user_id.as_deref(),
            api_key_id: &principal.key_id,
        },
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    Ok(Json(answer).into_response())
}

/// The forwarding step every prediction protocol shares (this route, the Open Inference
/// Protocol's `infer`): the model's active route from the cache, the provider's `predict`
/// bounded by `PREDICT_TIMEOUT_SECONDS`, the metrics, and the provider's answer as a list
/// (an object answer becomes a one-element list). `raw` is the model id as the client sent it.
pub(super) async fn forward(
    state: &AppState,
    context: Option<&Extension<RequestContext>>,
    model: &ModelId,
    raw: &str,
    (inputs, parameters): (Value, Option<Map<String, Value>>),
    how: Pick<'_>,
    started: Instant,
) -> Result<(std::sync::Arc<ActiveRoute>, Value), ApiError> {
    let not_deployed = || ApiError::ModelNotDeployed(raw.to_owned());
    let route = match state.routing.resolve(&state.db, model).await? {
        Routed::Active(route) => route,
        Routed::Replacing(replacement) => {
            return Err(ApiError::ModelNotReady {
                detail: format!(
                    "the model's endpoint was lost; its replacement (deployment {replacement}) is provisioning"
                ),
                retry_after: Duration::from_secs(30),
            });
        }
        Routed::Lost(lost) => {
            return Err(ApiError::ModelNotReady {
                detail: format!(
                    "the model's endpoint was lost at the provider (deployment {lost}) and is not being replaced; redeploy the model"
                ),
                retry_after: Duration::from_secs(60),
            });
        }
        Routed::Nowhere => {
            // The label is not the raw model id: unknown names must not grow the series.
            metrics::counter!(names::PREDICT_REQUESTS, "model_id" => NO_MODEL, "outcome" => "not_deployed")
                .increment(1);
            return Err(not_deployed());
        }
    };
    let stable = route;
    let (route, track) = stable.pick(how);
    // A shadow rollout's copy of this request, sent once the caller's answer is in.
    let mirror = match how {
        Pick::Forced(_) => None,
        _ => stable.mirror(),
    };
    let provider = state
        .providers
        .get(&route.provider)
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let request = PredictRequest {
        inputs,
        parameters: parameters.map(Value::Object),
        task: route.task.clone(),
    };
    let timeout = state.settings.api.predict_timeout;
    let limit = timeout + Duration::from_secs(1);
    let upstream_started = Instant::now();
    let copy = mirror.map(|target| (target, request.clone()));
    let answer = tokio::time::timeout(limit, provider.predict(&route.handle, request)).await;
    let upstream = upstream_started.elapsed();
    if let Some(((target, track), request)) = copy {
        shadow(state, target, track, request);
    }
    let answer = match answer {
        Err(_) => Err(ApiError::UpstreamTimeout(timeout.as_secs())),
        Ok(answer) => answer.map_err(|e| from_provider(e, timeout.as_secs(), REJECTED)),
    };
    if let Some(Extension(context)) = context {
        context.set_route(route.clone());
        context.set_upstream(upstream);
    }
    record(&route, answer.as_ref().err(), upstream, started.elapsed());
    if let Some(track) = track {
        let failed = answer
            .as_ref()
            .err()
            .is_some_and(|e| e.status_code().is_server_error());
        state.rollouts.record(&route, track, failed, upstream);
    }
    let answer = answer?;
    state.activity.note(route.deployment_id);
    let predictions = match answer.predictions {
        Value::Array(items) => Value::Array(items),
        other => Value::Array(vec![other]),
    };
    Ok((route, predictions))
}

/// Sends `request` to a shadow rollout's new version in the background, measures the answer
/// and discards it: the caller already has the stable version's answer. Bounded by
/// `PREDICT_TIMEOUT_SECONDS` and by the meter's shadow permits (a copy with no permit is
/// dropped and counted).
fn shadow(
    state: &AppState,
    target: std::sync::Arc<ActiveRoute>,
    track: Track,
    request: PredictRequest,
) {
    let Some(permit) = state.rollouts.shadow_permit(target.model_id.as_str()) else {
        return;
    };
    let Ok(provider) = state.providers.get(&target.provider) else {
        return;
    };
    let meter = state.rollouts.clone();
    let timeout = state.settings.api.predict_timeout;
    tokio::spawn(async move {
        let _permit = permit;
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, provider.predict(&target.handle, request)).await;
        let failed = match answer {
            Err(_) => true,
            Ok(Ok(_)) => false,
            Ok(Err(error)) => from_provider(error, timeout.as_secs(), REJECTED)
                .status_code()
                .is_server_error(),
        };
        meter.record(&target, track, failed, started.elapsed());
    });
}

/// The header that forces the side of a canary rollout (`stable` or `canary`).
pub(super) const TRACK_HEADER: &str = "x-hokusai-track";

/// How this request picks its side of a rollout: the track `X-Hokusai-Track` forces (only
/// with `model:write` on the model: 403 otherwise; a value other than `stable` or `canary`
/// is 422), else by the key id under `ROLLOUT_STICKY`, else a draw. Forced requests count in
/// the measurements like any other.
pub(super) fn pick_of<'a>(
    state: &AppState,
    principal: &'a Principal,
    headers: &HeaderMap,
    model: &ModelId,
) -> Result<Pick<'a>, ApiError> {
    if let Some(value) = headers.get(TRACK_HEADER) {
        principal.require_model_write(model.as_str())?;
        return match value.as_bytes() {
            b"stable" => Ok(Pick::Forced(false)),
            b"canary" => Ok(Pick::Forced(true)),
            _ => Err(ApiError::Validation(
                "X-Hokusai-Track: must be `stable` or `canary`".into(),
            )),
        };
    }
    Ok(if state.settings.api.rollout_sticky {
        Pick::Sticky(&principal.key_id)
    } else {
        Pick::Random
    })
}

/// The `model_id` label of predictions for models without a deployment.
const NO_MODEL: &str = "(none)";

/// What a caller is told when the model rejected its input.
const REJECTED: &str = "the model rejected the request (see the model's input format)";

/// Counts and times a forwarded prediction (Prometheus, and CloudWatch when enabled).
fn record(route: &ActiveRoute, error: Option<&ApiError>, upstream: Duration, total: Duration) {
    let outcome = match error {
        None => None,
        Some(ApiError::BadRequest(_)) => Some("bad_request"),
        Some(ApiError::ModelNotReady { .. }) => Some("not_ready"),
        Some(ApiError::RateLimited { .. }) => Some("rate_limited"),
        Some(ApiError::Upstream(_)) => Some("upstream_error"),
        Some(ApiError::UpstreamTimeout(_)) => Some("timeout"),
        Some(_) => Some("error"),
    };
    match outcome {
        None => route.series.ok.increment(1),
        Some(outcome) => metrics::counter!(names::PREDICT_REQUESTS,
            "model_id" => route.model_id.as_str().to_owned(), "outcome" => outcome)
        .increment(1),
    }
    route.series.upstream.record(upstream.as_secs_f64());
    let dimensions = [
        ("ModelId", route.model_id.as_str()),
        ("Provider", route.provider.as_str()),
    ];
    cloudwatch::record(Metric::PredictionRequests, &dimensions, 1.0);
    cloudwatch::record(
        Metric::PredictionLatency,
        &dimensions,
        total.as_secs_f64() * 1000.0,
    );
    if error.is_some() {
        cloudwatch::record(Metric::PredictionErrors, &dimensions, 1.0);
    }
}
