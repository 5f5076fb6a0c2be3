//! Building and running a worker: N concurrent handlers over one queue, stopping gracefully
//! (no new message is taken after the shutdown signal; the ones in hand are finished).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use shared::config::Settings;
use shared::db::outbox::Route;
use shared::provider::{InstanceSpec, ProviderRegistry};
use shared::queue::{self, Queue, QueueOptions};
use tokio::sync::watch;

use crate::consumer::{Consumer, Outcome};
use crate::gauges::Gauges;
use crate::mlflow::MlflowContext;
use crate::reconciler::Reconciler;
use crate::relay::Relay;
use crate::saga::Context;

/// A connected worker.
pub struct Worker {
    consumer: Consumer,
    queue: Arc<dyn Queue>,
    concurrency: usize,
    /// Publishes committed outbox rows (broker backends only; with the embedded queue the
    /// outbox insert is the enqueue).
    relay: Option<Relay>,
    /// The MLflow loops' context, when `MLFLOW_TRACKING_URI` is set.
    mlflow: Option<MlflowContext>,
    /// The gauges refreshed while the worker runs.
    gauges: Arc<Gauges>,
    /// The reconciler (it acts only while this process holds the leader lease).
    reconciler: Arc<Reconciler>,
}

impl Worker {
    /// Connects to the database and the queue, refuses a database that has not been migrated
    /// (`hokusai-serve migrate up` first), and builds the providers from configuration.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = shared::db::connect(settings.database_url.expose())
            .await
            .context("connecting to the database")?;
        let providers = ProviderRegistry::start(&settings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::build_with(settings, db, providers).await
    }

    /// Like [`Worker::build`] with an existing pool and providers (`dev` and tests).
    pub async fn build_with(
        settings: Settings,
        db: DatabaseConnection,
        providers: Arc<ProviderRegistry>,
    ) -> anyhow::Result<Self> {
        shared::telemetry::metrics::install();
        let probe = "SELECT 1 FROM deployed_models WHERE 1 = 0";
        if let Err(error) = db.execute_unprepared(probe).await {
            bail!("the database schema is missing ({error}); run `hokusai-serve migrate up`");
        }
        let options = QueueOptions::from_settings(&settings.queue);
        let queue = queue::connect(&settings.queue, Some(&db), options)
            .await
            .context("connecting to the queue")?;
        Ok(Self::assemble(settings, db, providers, queue))
    }

    /// A worker over an explicit queue (tests choose queue names).
    pub fn assemble(
        settings: Settings,
        db: DatabaseConnection,
        providers: Arc<ProviderRegistry>,
        queue: Arc<dyn Queue>,
    ) -> Self {
        let hf = &settings.huggingface;
        let ctx = Context {
            db,
            providers,
            route: Route::for_backend(settings.queue.backend),
            settings: settings.worker.clone(),
            max_attempts: settings.queue.max_attempts,
            default_instance: InstanceSpec {
                vendor: hf.default_vendor.clone(),
                region: hf.default_region.clone(),
                instance_type: hf.default_instance_type.clone(),
                instance_size: hf.default_instance_size.clone(),
            },
        };
        let relay = (ctx.route == Route::Relay)
            .then(|| Relay::new(ctx.db.clone(), queue.clone()).relaying(queue::DEPLOYMENTS_QUEUE));
        let mlflow = MlflowContext::from_settings(&settings, ctx.db.clone(), ctx.providers.clone())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "MLflow integration disabled: cannot build its client");
                None
            });
        let gauges = Arc::new(Gauges::new(
            ctx.db.clone(),
            queue.clone(),
            settings.telemetry.idle_after,
        ));
        let ctx = Arc::new(ctx);
        let reconciler = Arc::new(Reconciler::new(ctx.clone(), queue.clone()));
        let consumer = Consumer::new(queue.clone(), ctx);
        Self {
            consumer,
            reconciler,
            queue,
            concurrency: settings.worker.concurrency,
            relay,
            mlflow,
            gauges,
        }
    }

    /// The consumer, for driving steps one at a time.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The queue it consumes.
    pub fn queue(&self) -> Arc<dyn Queue> {
        self.queue.clone()
    }

    /// The gauges (refreshed every [`crate::gauges::EVERY`] while running).
    pub fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    /// The reconciler, for running a pass by hand (tests).
    pub fn reconciler(&self) -> &Reconciler {
        &self.reconciler
    }

    /// How many MLflow reconciliation passes have run (`None` without MLflow): the first
    /// runs at start-up, so a caller can wait until it has before creating versions.
    pub fn mlflow_reconcile_passes(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.mlflow.as_ref().map(|m| m.reconcile_passes.clone())
    }

    /// The outbox relay, when the queue is a broker.
    pub fn relay(&self) -> Option<&Relay> {
        self.relay.as_ref()
    }

    /// Works until `shutdown` resolves, then finishes the messages in hand. With
    /// `MLFLOW_TRACKING_URI` set, the MLflow intake, status sync and reconciliation loops
    /// run alongside the handlers and stop with them.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tracing::info!(
            queue = self.queue.name(),
            concurrency = self.concurrency,
            "worker started"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut handlers: Vec<_> = (0..self.concurrency)
            .map(|_| tokio::spawn(handle_until_stopped(self.consumer.clone(), stop_rx.clone())))
            .collect();
        if let Some(relay) = self.relay {
            let mut stop = stop_rx.clone();
            handlers.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(error) = relay.run_until_stopped(stopped).await {
                    tracing::error!(error = %format!("{error:#}"), "outbox relay stopped");
                }
            }));
        }
        let gauges = self.gauges.clone();
        handlers.push(tokio::spawn({
            let stop = stop_rx.clone();
            async move { gauges.run(stop).await }
        }));
        handlers.push(tokio::spawn({
            let stop = stop_rx.clone();
            let reconciler = self.reconciler.clone();
            async move { reconciler.run(stop).await }
        }));
        let mlflow_loops = match self.mlflow {
            Some(mlflow) => mlflow.spawn(stop_rx.clone()),
            None => Vec::new(),
        };
        shutdown.await;
        tracing::info!("worker stopping: finishing the messages in hand");
        let _ = stop_tx.send(true);
        for handler in handlers.into_iter().chain(mlflow_loops) {
            handler.await.context("a worker handler panicked")?;
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

async fn handle_until_stopped(consumer: Consumer, stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        match consumer.try_process_one().await {
            Ok(Outcome::Processed | Outcome::Empty) => {}
            Err(error) => {
                tracing::warn!(%error, "queue unavailable; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
