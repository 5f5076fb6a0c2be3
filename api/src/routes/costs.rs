//! `GET /api/v1/costs` (scope `read`): what each model and deployment has cost so far and
//! what is burning now. Accrued cost is the worker's last figure plus the billable time since
//! (the provider state last observed is taken to have lasted until now); the hourly burn is
//! the price of every deployment in a billable provider state.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::cost::{accrued_until, current_hourly, is_idle, month_key, month_to_date};
use shared::db::deployments::{self, Filter};

use utoipa::ToSchema;

use crate::auth::{Authenticated, Scope};
use crate::error::{ApiError, ErrorResponse};
use crate::state::AppState;

/// The cost route.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/costs", get(costs))
}

/// Cost of one deployment (documentation only; the handler writes it with `json!`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct DeploymentCost {
    /// The deployment.
    deployment_id: uuid::Uuid,
    /// Its MLflow version.
    model_version: Option<String>,
    /// Its provider.
    provider: String,
    /// Its status.
    status: String,
    /// The provider's own state.
    provider_status: Option<String>,
    /// Serving predictions.
    is_active: bool,
    /// Price per hour of its replicas.
    hourly_cost_usd: Option<f64>,
    /// What it burns now (0 unless billable).
    current_hourly_usd: f64,
    /// Accrued so far.
    accrued_cost_usd: f64,
    /// Accrued since the first of this month (UTC).
    month_to_date_cost_usd: f64,
    /// Last answered a prediction.
    #[schema(format = DateTime)]
    last_prediction_at: Option<String>,
    /// Deployed and billing, but no prediction for `COST_IDLE_HOURS`.
    idle: bool,
}

/// Cost of one model (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct ModelCost {
    /// The model.
    model_id: String,
    /// What its deployments burn now.
    current_hourly_usd: f64,
    /// Accrued so far.
    accrued_cost_usd: f64,
    /// Accrued since the first of this month (UTC).
    month_to_date_cost_usd: f64,
    /// Its deployments' last prediction.
    #[schema(format = DateTime)]
    last_prediction_at: Option<String>,
    /// One of its deployments is idle.
    idle: bool,
    /// Each deployment.
    deployments: Vec<DeploymentCost>,
}

/// `GET /api/v1/costs` answer (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct CostReport {
    /// Always `USD`.
    currency: String,
    /// When computed (RFC 3339).
    #[schema(format = DateTime)]
    as_of: String,
    /// Total hourly burn.
    current_hourly_usd: f64,
    /// Total accrued.
    accrued_cost_usd: f64,
    /// This month (`YYYY-MM`, UTC).
    month: String,
    /// Total accrued since the first of this month.
    month_to_date_cost_usd: f64,
    /// Hourly burn of idle deployments (billing, no prediction for `COST_IDLE_HOURS`).
    idle_hourly_usd: f64,
    /// `COST_IDLE_HOURS`.
    idle_after_hours: u64,
    /// Per model.
    models: Vec<ModelCost>,
}

#[utoipa::path(
    get,
    path = "/api/v1/costs",
    tag = "costs",
    operation_id = "costs",
    summary = "Accrued and hourly cost per model and deployment",
    security(("bearer" = ["read"]), ("api_key" = ["read"])),
    responses(
        (status = 200, description = "The costs", body = CostReport),
        (status = 401, description = "UNAUTHORIZED: no API key, or an invalid or expired one", body = ErrorResponse),
        (status = 403, description = "FORBIDDEN: the key lacks the required scope", body = ErrorResponse),
        (status = 503, description = "AUTH_UNAVAILABLE: the authentication service cannot answer (`Retry-After`); SERVICE_UNAVAILABLE: the database is unreachable (`Retry-After`)", body = ErrorResponse),
        (status = 500, description = "INTERNAL: unexpected failure (logged, never sent)", body = ErrorResponse),
    ),
)]
async fn costs(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Value>, ApiError> {
    principal.require(Scope::Read)?;
    let now = Utc::now();
    let idle_after = state.settings.telemetry.idle_after;
    let rows = deployments::list(
        &state.db,
        &Filter {
            limit: Some(100_000),
            ..Filter::default()
        },
    )
    .await?;
    let mut models: BTreeMap<String, ModelTotals> = BTreeMap::new();
    for d in &rows {
        let hourly = current_hourly(d);
        let accrued = accrued_until(d, now);
        let month = month_to_date(d, now);
        let last_prediction = d.last_prediction_at.max(state.activity.last(d.id));
        let idle = is_idle(d, last_prediction, now, idle_after);
        let entry = models.entry(d.model_id.clone()).or_default();
        entry.hourly += hourly;
        entry.accrued += accrued;
        entry.month += month;
        entry.idle |= idle;
        if idle {
            entry.idle_hourly += hourly;
        }
        entry.last_prediction = entry.last_prediction.max(last_prediction);
        entry.deployments.push(json!({
            "deployment_id": d.id, "model_version": d.model_version, "provider": d.provider,
            "status": d.status, "provider_status": d.provider_status, "is_active": d.is_active,
            "hourly_cost_usd": d.hourly_cost_usd, "current_hourly_usd": round(hourly),
            "accrued_cost_usd": round(accrued), "month_to_date_cost_usd": round(month),
            "last_prediction_at": last_prediction, "idle": idle,
        }));
    }
    let sum = |f: fn(&ModelTotals) -> f64| round(models.values().map(f).sum());
    let (hourly_burn, total, month, idle_hourly) = (
        sum(|m| m.hourly),
        sum(|m| m.accrued),
        sum(|m| m.month),
        sum(|m| m.idle_hourly),
    );
    let models: Vec<Value> = models
        .into_iter()
        .map(|(model_id, m)| {
            json!({
                "model_id": model_id, "current_hourly_usd": round(m.hourly),
                "accrued_cost_usd": round(m.accrued), "month_to_date_cost_usd": round(m.month),
                "last_prediction_at": m.last_prediction, "idle": m.idle,
                "deployments": m.deployments,
            })
        })
        .collect();
    Ok(Json(json!({
        "currency": "USD",
        "as_of": now,
        "month": month_key(now),
        "current_hourly_usd": hourly_burn,
        "accrued_cost_usd": total,
        "month_to_date_cost_usd": month,
        "idle_hourly_usd": idle_hourly,
        "idle_after_hours": idle_after.as_secs() / 3600,
        "models": models,
    })))
}

/// One model's figures while the report is summed up.
#[derive(Default)]
struct ModelTotals {
    hourly: f64,
    accrued: f64,
    month: f64,
    idle: bool,
    idle_hourly: f64,
    last_prediction: Option<DateTime<Utc>>,
    deployments: Vec<Value>,
}

fn round(usd: f64) -> f64 {
    (usd * 1_000_000.0).round() / 1_000_000.0
}
