//! The production roles: `hokusai-serve api` and `hokusai-serve worker`.

use super::{Failure, load_role_settings, shutdown_signal};

/// Serves the HTTP API until SIGTERM or Ctrl-C.
pub async fn api() -> Result<(), Failure> {
    let settings = load_role_settings("api")?;
    let app = api::Application::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "API listening");
    if let Some(key) = app.dev_api_key() {
        // Only reachable outside production (production refuses AUTH_BACKEND=static).
        super::print(&format!("static API key (every scope): {}\n", key.expose()));
    }
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Runs a worker until SIGTERM or Ctrl-C, with `/metrics` on `WORKER_METRICS_PORT`.
pub async fn worker() -> Result<(), Failure> {
    let settings = load_role_settings("worker")?;
    let metrics = worker::metrics_server::MetricsServer::bind(
        &settings.api.host,
        settings.worker.metrics_port,
    )
    .await?;
    tracing::info!(address = %metrics.local_addr(), "worker metrics listening");
    let worker = worker::Worker::build(settings).await?;
    let stop = shared::runtime::ShutdownTrigger::new();
    let stopped = stop.subscribe();
    let metrics_task = tokio::spawn(
        metrics.run_until_stopped(worker.tasks(), async move { stopped.wait().await }),
    );
    worker.run_until_stopped(shutdown_signal()).await?;
    stop.trigger();
    metrics_task
        .await
        .map_err(|e| anyhow::anyhow!("worker metrics task: {e}"))??;
    Ok(())
}
