//! `hokusai-serve mlflow register-webhook [--url URL] [--name NAME]`: creates (or updates)
//! the webhook through which MLflow notifies the listener, with the events it handles and
//! `MLFLOW_WEBHOOK_SECRET`, on the server of `MLFLOW_TRACKING_URI`.

use shared::config::Settings;
use shared::mlflow::MlflowClient;
use shared::mlflow::registration::{self, Registered};

use super::{Failure, load_verb_settings, print};

/// The webhook's name when `--name` is not given.
pub const DEFAULT_NAME: &str = "hokusai-serve";

/// Registers the webhook; prints what was done.
pub async fn register_webhook(
    url: Option<String>,
    name: String,
    verbose: bool,
) -> Result<(), Failure> {
    let settings = load_verb_settings(verbose)?;
    let client = MlflowClient::from_settings(&settings.mlflow)
        .map_err(|e| Failure::Config(e.to_string()))?
        .ok_or_else(|| Failure::Config("MLFLOW_TRACKING_URI: is required".into()))?;
    let secret = settings.mlflow.webhook_secret.clone().ok_or_else(|| {
        Failure::Config(
            "MLFLOW_WEBHOOK_SECRET: is required (MLflow signs deliveries with it)".into(),
        )
    })?;
    let url = url.unwrap_or_else(|| default_url(&settings));
    let registered = registration::register_webhook(&client, &name, &url, &secret)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("registering the MLflow webhook: {e}")))?;
    let (verb, id) = match registered {
        Registered::Created(id) => ("created", id),
        Registered::Updated(id) => ("updated", id),
    };
    print(&format!("webhook `{name}` {verb} (id {id}): {url}\n"));
    Ok(())
}

/// The listener of this configuration (`API_HOST` 0.0.0.0 means loopback).
fn default_url(settings: &Settings) -> String {
    let host = match settings.api.host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1",
        other => other,
    };
    format!("http://{host}:{}/api/v1/webhooks/mlflow", settings.api.port)
}
