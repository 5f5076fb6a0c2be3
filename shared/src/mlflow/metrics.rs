//! Named events of the MLflow integration: each one logs a line and counts a metric
//! (docs/design/observability.md), so the listener, the intake, the status sync and the
//! reconciliation report the same way. Without an installed recorder the counters cost nothing.

/// A webhook delivery was answered: `hokusai_mlflow_webhooks_total{event,outcome}`.
/// `event` is a known event name or `unknown` (labels stay few).
pub fn webhook(event: &str, outcome: &'static str) {
    let event = match event {
        "registered_model.created"
        | "model_version.created"
        | "model_version_tag.set"
        | "model_version_tag.deleted"
        | "model_version_alias.created"
        | "model_version_alias.deleted" => event.to_owned(),
        _ => "unknown".to_owned(),
    };
    tracing::info!(event = %event, outcome, "MLflow webhook");
    metrics::counter!(crate::telemetry::metrics::names::MLFLOW_WEBHOOKS, "event" => event, "outcome" => outcome)
        .increment(1);
}

/// An intake event was handled: `hokusai_mlflow_events_total{outcome}`.
pub fn intake(event: &str, model: &str, version: Option<&str>, outcome: &'static str) {
    tracing::info!(
        event,
        model_id = model,
        version,
        outcome,
        "MLflow event handled"
    );
    metrics::counter!("hokusai_mlflow_events_total", "outcome" => outcome).increment(1);
}

/// Status tags were written back (or not): `hokusai_mlflow_tag_writes_total{outcome}`.
pub fn tag_write(model: &str, version: &str, outcome: &'static str, error: Option<&str>) {
    if let Some(error) = error {
        tracing::warn!(
            model_id = model,
            version,
            outcome,
            error,
            "MLflow tag write failed"
        );
    } else {
        tracing::debug!(model_id = model, version, outcome, "MLflow tags written");
    }
    metrics::counter!("hokusai_mlflow_tag_writes_total", "outcome" => outcome).increment(1);
}

/// A reconciliation pass finished: `hokusai_mlflow_reconciled_total{outcome}`.
pub fn reconciled(outcome: &'static str, count: u64) {
    tracing::info!(outcome, count, "MLflow reconciliation");
    metrics::counter!("hokusai_mlflow_reconciled_total", "outcome" => outcome).increment(count);
}
