//! The production roles: `hokusai-serve api` and `hokusai-serve worker`.

use super::{Failure, load_settings, shutdown_signal};

/// Serves the HTTP API until SIGTERM or Ctrl-C.
pub async fn api() -> Result<(), Failure> {
    let settings = load_settings()?;
    let app = api::Application::build(settings).await?;
    tracing::info!(address = %app.local_addr(), "API listening");
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Runs a worker until SIGTERM or Ctrl-C.
pub async fn worker() -> Result<(), Failure> {
    let settings = load_settings()?;
    let worker = worker::Worker::build(settings).await?;
    worker.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}
