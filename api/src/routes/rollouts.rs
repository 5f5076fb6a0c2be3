//! A model's canary rollout (docs/design/rollouts.md): `GET /api/v1/models/{model_id}/rollout`
//! (weights, step, measured figures per track, next decision time), and the operator's verbs
//! `POST …/rollout/promote` (to 100 % now) and `POST …/rollout/abort` (back to the stable
//! version now). The verbs record the request on the open rollout and answer 202: the
//! reconciler carries it out on its next pass (`DEPLOYMENT_RECONCILE_INTERVAL_SECONDS`), in
//! the same transactions as its own decisions.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::db::rollouts::{self, Request, Rollout};
use shared::domain::rollout::Figures;
use utoipa::ToSchema;
use uuid::Uuid;

use super::models::model_id;
use crate::auth::{Authenticated, Scope};
use crate::error::{ApiError, ErrorResponse};
use crate::extract::Path;
use crate::state::AppState;

/// The rollout routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/models/{model_id}/rollout", get(show))
        .route("/api/v1/models/{model_id}/rollout/promote", post(promote))
        .route("/api/v1/models/{model_id}/rollout/abort", post(abort))
}

/// A rollout as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RolloutView {
    /// The rollout.
    pub id: Uuid,
    /// The model.
    pub model_id: String,
    /// `running`, `paused` (too little traffic: promote or abort it), `promoted` or `aborted`.
    #[schema(example = "running")]
    pub state: String,
    /// `canary`.
    #[schema(example = "canary")]
    pub strategy: String,
    /// The canary's share at each step, in percent.
    pub steps: Vec<u8>,
    /// The current step (index into `steps`).
    pub step: i32,
    /// The canary's share of traffic now (0 once ended).
    pub weight: u8,
    /// The serving version.
    pub stable_deployment_id: Uuid,
    /// The new version.
    pub canary_deployment_id: Uuid,
    /// How long each step runs before it is judged.
    pub bake_seconds: u64,
    /// The error-rate limit.
    pub max_error_rate: f64,
    /// The p95 latency limit, when set.
    pub max_latency_p95_ms: Option<u64>,
    /// Requests the canary needs in a step before it is judged.
    pub min_requests: u64,
    /// When the rollout began.
    pub started_at: DateTime<Utc>,
    /// When the current step began.
    pub step_started_at: DateTime<Utc>,
    /// When the current step is judged (while running).
    pub next_decision_at: Option<DateTime<Utc>>,
    /// An operator's request not yet carried out: `promote` or `abort`.
    pub requested: Option<String>,
    /// Why it ended or paused.
    pub outcome: Option<String>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// What the current step measured of each version.
    pub figures: TrackFigures,
}

/// The current step's measurements of both versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackFigures {
    /// The stable version.
    pub stable: TrackFigure,
    /// The canary.
    pub canary: TrackFigure,
}

/// One version's measurements in the current step.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackFigure {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed (5xx, upstream failures).
    pub errors: u64,
    /// `errors / requests` (null without requests).
    pub error_rate: Option<f64>,
    /// The 95th percentile in milliseconds, interpolated inside the histogram bucket holding it.
    pub latency_p95_ms: Option<u64>,
}

impl From<&Figures> for TrackFigure {
    fn from(f: &Figures) -> Self {
        Self {
            requests: f.requests,
            errors: f.errors,
            error_rate: f.error_rate(),
            latency_p95_ms: f.p95_ms(),
        }
    }
}

async fn view(state: &AppState, rollout: Rollout) -> Result<RolloutView, ApiError> {
    let spec = rollout.spec()?;
    let figures = |deployment| rollouts::figures(&state.db, rollout.id, deployment, rollout.step);
    let stable = figures(rollout.stable_id).await?;
    let canary = figures(rollout.canary_id).await?;
    let bake = chrono::Duration::seconds(i64::try_from(spec.bake_seconds).unwrap_or(i64::MAX));
    let running = rollout.state == rollouts::state::RUNNING;
    Ok(RolloutView {
        id: rollout.id,
        model_id: rollout.model_id.clone(),
        state: rollout.state.clone(),
        strategy: spec.strategy.as_str().to_owned(),
        weight: rollout.weight(),
        steps: spec.steps,
        step: rollout.step,
        stable_deployment_id: rollout.stable_id,
        canary_deployment_id: rollout.canary_id,
        bake_seconds: spec.bake_seconds,
        max_error_rate: spec.max_error_rate,
        max_latency_p95_ms: spec.max_latency_p95_ms,
        min_requests: spec.min_requests,
        started_at: rollout.started_at,
        step_started_at: rollout.step_started_at,
        next_decision_at: running.then(|| rollout.step_started_at + bake),
        requested: rollout.requested,
        outcome: rollout.outcome,
        ended_at: rollout.ended_at,
        figures: TrackFigures {
            stable: (&stable).into(),
            canary: (&canary).into(),
        },
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/models/{model_id}/rollout",
    tag = "model actions",
    operation_id = "show_rollout",
    summary = "The model's current (or last) canary rollout",
    params(("model_id" = String, Path, description = "MLflow registered-model name")),
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The rollout, with the current step's figures per track", body = RolloutView),
        (status = 404, description = "NOT_FOUND: the model never had a rollout, or the model id cannot exist", body = ErrorResponse),
    ),
)]
async fn show(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
) -> Result<Json<RolloutView>, ApiError> {
    principal.require(Scope::Read)?;
    let model = model_id(&raw)?;
    let rollout = rollouts::latest_for(&state.db, model.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("model `{model}` has had no rollout")))?;
    Ok(Json(view(&state, rollout).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/rollout/promote",
    tag = "model actions",
    operation_id = "promote_rollout",
    summary = "Give the canary all traffic now (carried out on the reconciler's next pass)",
    params(("model_id" = String, Path, description = "MLflow registered-model name")),
    security(("bearer" = ["model:write"]), ("api_key" = ["model:write"])),
    responses(
        (status = 202, description = "Requested (`requested: promote`)", body = RolloutView),
        (status = 404, description = "NOT_FOUND: the model id cannot exist", body = ErrorResponse),
        (status = 409, description = "CONFLICT: the model has no open rollout", body = ErrorResponse),
    ),
)]
async fn promote(
    state: State<AppState>,
    principal: Authenticated,
    path: Path<String>,
) -> Result<Response, ApiError> {
    act(state, principal, path, Request::Promote).await
}

#[utoipa::path(
    post,
    path = "/api/v1/models/{model_id}/rollout/abort",
    tag = "model actions",
    operation_id = "abort_rollout",
    summary = "Roll the canary back now (carried out on the reconciler's next pass)",
    params(("model_id" = String, Path, description = "MLflow registered-model name")),
    security(("bearer" = ["model:write"]), ("api_key" = ["model:write"])),
    responses(
        (status = 202, description = "Requested (`requested: abort`)", body = RolloutView),
        (status = 404, description = "NOT_FOUND: the model id cannot exist", body = ErrorResponse),
        (status = 409, description = "CONFLICT: the model has no open rollout", body = ErrorResponse),
    ),
)]
async fn abort(
    state: State<AppState>,
    principal: Authenticated,
    path: Path<String>,
) -> Result<Response, ApiError> {
    act(state, principal, path, Request::Abort).await
}

async fn act(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(raw): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    principal.require_model_write(&raw)?;
    let model = model_id(&raw)?;
    let rollout = rollouts::request(&state.db, model.as_str(), request)
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "model `{model}` has no open rollout to {}",
                request.as_str()
            ))
        })?;
    tracing::info!(rollout_id = %rollout.id, request = request.as_str(), "rollout request recorded");
    Ok((StatusCode::ACCEPTED, Json(view(&state, rollout).await?)).into_response())
}
