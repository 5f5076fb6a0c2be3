//! `hokusai-serve dev`: everything in one process on the embedded defaults — SQLite in
//! `<data-dir>/hokusai.db`, migrations applied at start, the API and a worker sharing one
//! pool and the embedded queue, and the HF emulator on loopback unless
//! `HUGGINGFACE_API_KEY` is set. Nothing to install, no broker, no cloud account.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use migrations::{Migrator, MigratorTrait};
use shared::config::{Environment, QueueBackend, Secret};
use shared::provider::{ProviderRegistry, ProvidersConfig};
use shared::runtime::ShutdownTrigger;

use super::{Failure, load_serving_settings, shutdown_signal};

/// Runs the all-in-one development server until Ctrl-C.
pub async fn run(port: u16, data_dir: PathBuf) -> Result<(), Failure> {
    let mut settings = load_serving_settings()?;
    if settings.environment != Environment::Development {
        return Err(Failure::Config(format!(
            "ENVIRONMENT: `dev` runs only in development (ENVIRONMENT is {})",
            settings.environment
        )));
    }
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data folder {}", data_dir.display()))?;
    let database = data_dir.join("hokusai.db");
    settings.database_url = Secret::new(format!("sqlite://{}?mode=rwc", database.display()));
    settings.queue.backend = QueueBackend::Db;
    settings.api.port = port;

    // Migrations run on their own pool, closed before the application's opens: SQLite
    // connections that were open during a schema change can prepare statements with the
    // old column list, which sqlx then keeps (launchbadge/sqlx#2517).
    let migrating = shared::db::connect(settings.database_url.expose())
        .await
        .context("opening the SQLite database")?;
    Migrator::up(&migrating, None)
        .await
        .context("applying migrations")?;
    migrating
        .close()
        .await
        .context("closing the migration pool")?;
    let db = shared::db::connect(settings.database_url.expose())
        .await
        .context("opening the SQLite database")?;

    let (providers, emulator) = providers(&settings).await?;
    let app =
        api::Application::build_with_db(settings.clone(), db.clone(), providers.clone()).await?;
    let worker = worker::Worker::build_with(settings, db, providers).await?;
    let key = app
        .dev_api_key()
        .map(|k| k.expose().to_owned())
        .unwrap_or_default();
    let hf = match &emulator {
        Some(emulator) => format!(
            "HF EMULATOR at {} (not the real service; set HUGGINGFACE_API_KEY for HuggingFace)",
            emulator.base_url
        ),
        None => "HuggingFace Inference Endpoints (HUGGINGFACE_API_KEY is set)".to_owned(),
    };
    print_banner(app.local_addr().port(), &database, &key, &hf);

    // One `/ready` for the whole process: the API reports the worker's loops with its own.
    app.tasks().report_with(&worker.tasks());
    let stop = ShutdownTrigger::new();
    let api_task = tokio::spawn(app.run_until_stopped({
        let stopped = stop.subscribe();
        async move { stopped.wait().await }
    }));
    let worker_task = tokio::spawn(worker.run_until_stopped({
        let stopped = stop.subscribe();
        async move { stopped.wait().await }
    }));
    shutdown_signal().await;
    stop.trigger();
    api_task.await.context("API task")??;
    worker_task.await.context("worker task")??;
    drop(emulator);
    Ok(())
}

/// The providers: HuggingFace when `HUGGINGFACE_API_KEY` is set, else the in-process
/// emulator (kept alive by the returned handle).
async fn providers(
    settings: &shared::config::Settings,
) -> anyhow::Result<(Arc<ProviderRegistry>, Option<EmulatorHandle>)> {
    if settings.uses_hf_emulator() {
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .context("starting the HF emulator")?;
        let token = Secret::new(emulator.token.clone());
        let config = ProvidersConfig::with_hf_emulator(settings, &emulator.base_url, token);
        let registry = ProviderRegistry::build(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((Arc::new(registry), Some(emulator)))
    } else {
        let registry = ProviderRegistry::start(settings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((registry, None))
    }
}

fn print_banner(port: u16, database: &std::path::Path, key: &str, hf: &str) {
    let url = format!("http://127.0.0.1:{port}");
    let banner = format!(
        "hokusai-serve dev is running\n\
         \x20 API        {url}   (health: {url}/health, readiness: {url}/ready)\n\
         \x20 API key    {key}   (development key with every scope; set HOKUSAI_DEV_API_KEY to choose it)\n\
         \x20 database   {}\n\
         \x20 queue      embedded (database table)\n\
         \x20 provider   {hf}\n\
         Try:  curl -s -H 'Authorization: Bearer {key}' {url}/api/v1/models\n\
         Stop with Ctrl-C.\n",
        database.display()
    );
    super::print(&banner);
}
