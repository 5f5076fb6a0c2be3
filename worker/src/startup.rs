//! Building and running a worker: N concurrent handlers over one queue and the worker's
//! other loops, every one under the supervisor (`shared::runtime::Tasks`: restarted when it
//! panics, reported on `GET /ready`), stopping gracefully (no new message is taken after the
//! shutdown signal; the ones in hand are finished).
//!
//! Loops: `consumer_{n}` (every worker), `outbox_relay` (broker backends; one publisher at a
//! time through its own lease), `reconciler` (acts while it holds the leader lease), and the
//! leader-only periodic jobs `gauges` and `retention`; with MLflow, `mlflow_intake`,
//! `mlflow_sync` (leader only) and `mlflow_reconcile`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use shared::config::Settings;
use shared::db::outbox::Route;
use shared::provider::{InstanceSpec, ProviderRegistry};
use shared::queue::{self, Queue, QueueOptions};
use shared::runtime::{Backoff, Heartbeat, Shutdown, ShutdownTrigger, Tasks};

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
    /// `RETENTION_DAYS`.
    retention: Duration,
    /// Fired by [`Worker::run_until_stopped`] when its shutdown future resolves.
    trigger: ShutdownTrigger,
    /// The supervisor of every loop.
    tasks: Tasks,
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
        let options =
            QueueOptions::from_settings(&settings.queue).with_prefetch(settings.worker.concurrency);
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
        let relay = (ctx.route == Route::Relay).then(|| {
            Relay::new(ctx.db.clone(), queue.clone())
                .relaying(queue::DEPLOYMENTS_QUEUE)
                .parking_after(settings.worker.relay_max_attempts)
        });
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
        let trigger = ShutdownTrigger::new();
        let tasks = Tasks::new(trigger.subscribe());
        Self {
            consumer,
            reconciler,
            queue,
            concurrency: settings.worker.concurrency,
            relay,
            mlflow,
            gauges,
            retention: settings.worker.retention,
            trigger,
            tasks,
        }
    }

    /// The supervisor of this worker's loops (what `GET /ready` reports).
    pub fn tasks(&self) -> Tasks {
        self.tasks.clone()
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

    /// Works until `shutdown` resolves, then finishes the messages in hand. Every loop runs
    /// under [`Worker::tasks`]; with `MLFLOW_TRACKING_URI` set, the MLflow loops too.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        tracing::info!(
            queue = self.queue.name(),
            concurrency = self.concurrency,
            "worker started"
        );
        let tasks = self.tasks.clone();
        shared::telemetry::supervise(&tasks);
        // Handlers long-poll: SQS answers as soon as a message arrives, within 20 s.
        let consumer = self.consumer.clone().with_wait(LONG_POLL);
        let period = consumer.period();
        for n in 0..self.concurrency {
            let consumer = consumer.clone();
            tasks.supervise(
                format!("consumer_{n}"),
                period,
                move |heartbeat, shutdown| {
                    handle_until_stopped(consumer.clone(), heartbeat, shutdown)
                },
            );
        }
        if let Some(relay) = self.relay {
            let relay = Arc::new(relay);
            tasks.supervise(
                "outbox_relay",
                crate::relay::PERIOD,
                move |heartbeat, shutdown| {
                    let relay = relay.clone();
                    async move { relay.run(heartbeat, shutdown).await }
                },
            );
        }
        let reconciler = self.reconciler.clone();
        tasks.supervise(
            "reconciler",
            reconciler.period(),
            move |heartbeat, shutdown| reconciler.clone().run(heartbeat, shutdown),
        );
        let leadership = self.reconciler.leadership().clone();
        let gauges = self.gauges.clone();
        tasks.every(
            "gauges",
            crate::gauges::EVERY,
            Some(leadership.predicate()),
            move || {
                let gauges = gauges.clone();
                async move { gauges.refresh().await }
            },
        );
        let db = self.consumer.db().clone();
        let retention = self.retention;
        tasks.every(
            "retention",
            crate::retention::PERIOD,
            Some(leadership.predicate()),
            move || {
                let db = db.clone();
                async move {
                    crate::retention::prune_once(&db, retention).await?;
                    Ok(())
                }
            },
        );
        if let Some(mlflow) = self.mlflow {
            mlflow.supervise(&tasks, &leadership);
        }
        shutdown.await;
        tracing::info!("worker stopping: finishing the messages in hand");
        self.trigger.trigger();
        tasks.join().await;
        // The embedded queue commits acks behind the handlers; none is left to its lease
        // unless the database does not answer within DRAIN_LIMIT.
        match shared::runtime::within("committing the last acks", DRAIN_LIMIT, self.queue.drain())
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not commit the last acks; their messages will be delivered again");
            }
            Err(timed_out) => {
                tracing::warn!(%timed_out, "the last acks did not commit in time; their messages will be delivered again");
            }
        }
        shared::telemetry::cloudwatch::flush();
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// How long a stopping worker waits for its written-behind acks to commit.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How long a handler waits for a message in one call (SQS's longest long poll).
const LONG_POLL: Duration = Duration::from_secs(20);
/// Delays after the queue failed under a handler.
const QUEUE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

async fn handle_until_stopped(consumer: Consumer, heartbeat: Heartbeat, shutdown: Shutdown) {
    let mut failures = 0;
    while !shutdown.is_triggered() {
        // Waiting for a message stops at the shutdown signal; a message in hand is finished.
        let outcome = consumer.try_process_one_until(&shutdown).await;
        heartbeat.beat();
        match outcome {
            Ok(Outcome::Processed | Outcome::Empty) => failures = 0,
            Err(error) => {
                let delay = QUEUE_BACKOFF.delay(failures);
                failures += 1;
                tracing::warn!(%error, retry_in = ?delay, "queue unavailable; retrying");
                if shutdown.sleep(delay).await {
                    return;
                }
            }
        }
    }
}
