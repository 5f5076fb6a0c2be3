//! Building and running a worker.

use std::future::Future;

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use shared::config::Settings;

/// A connected worker.
pub struct Worker {
    db: DatabaseConnection,
    settings: Settings,
}

impl Worker {
    /// Connects to the database and refuses to start on a database that has not been
    /// migrated (`hokusai-serve migrate up` first): a worker must not guess at the schema.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = shared::db::connect(settings.database_url.expose())
            .await
            .context("connecting to the database")?;
        Self::build_with_db(settings, db).await
    }

    /// Like [`Worker::build`] with an existing pool (`dev` shares one with the API).
    pub async fn build_with_db(settings: Settings, db: DatabaseConnection) -> anyhow::Result<Self> {
        let probe = "SELECT 1 FROM deployed_models WHERE 1 = 0";
        if let Err(error) = db.execute_unprepared(probe).await {
            bail!("the database schema is missing ({error}); run `hokusai-serve migrate up`");
        }
        Ok(Self { db, settings })
    }

    /// The database pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Works until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tracing::info!(
            queue_backend = ?self.settings.queue.backend,
            concurrency = self.settings.worker.concurrency,
            "worker started"
        );
        shutdown.await;
        tracing::info!("worker stopped");
        Ok(())
    }
}
