//! `GET /api/v1/costs` (scope `read`): what each model and deployment has cost so far and
//! what is burning now. Accrued cost is the worker's last figure plus the billable time since
//! (the provider state last observed is taken to have lasted until now); the hourly burn is
//! the price of every deployment in a billable provider state.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Value, json};
use shared::cost::{accrued_until, is_billable};
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
    let rows = deployments::list(
        &state.db,
        &Filter {
            limit: Some(100_000),
            ..Filter::default()
        },
    )
    .await?;
    let mut models: BTreeMap<String, (f64, f64, Vec<Value>)> = BTreeMap::new();
    for d in &rows {
        let hourly = if is_billable(d) {
            d.hourly_cost_usd.unwrap_or(0.0)
        } else {
            0.0
        };
        let accrued = accrued_until(d, now);
        let entry = models.entry(d.model_id.clone()).or_default();
        entry.0 += hourly;
        entry.1 += accrued;
        entry.2.push(json!({
            "deployment_id": d.id, "model_version": d.model_version, "provider": d.provider,
            "status": d.status, "provider_status": d.provider_status, "is_active": d.is_active,
            "hourly_cost_usd": d.hourly_cost_usd, "current_hourly_usd": round(hourly), "accrued_cost_usd": round(accrued),
        }));
    }
    let hourly_burn: f64 = models.values().map(|m| m.0).sum();
    let total: f64 = models.values().map(|m| m.1).sum();
    let models: Vec<Value> = models
        .into_iter()
        .map(|(model_id, (hourly, accrued, deployments))| {
            json!({"model_id": model_id, "current_hourly_usd": round(hourly), "accrued_cost_usd": round(accrued), "deployments": deployments})
        })
        .collect();
    Ok(Json(json!({
        "currency": "USD",
        "as_of": now,
        "current_hourly_usd": round(hourly_burn),
        "accrued_cost_usd": round(total),
        "models": models,
    })))
}

fn round(usd: f64) -> f64 {
    (usd * 1_000_000.0).round() / 1_000_000.0
}
