//! A deployment world for saga tests: a fresh database, an in-process HF emulator, the
//! providers pointed at it and a worker assembled over a queue, driven step by step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use shared::config::{Secret, Settings};
use shared::db::deployments::{self, Deployment, DeploymentEvent, NewDeployment};
use shared::db::outbox::Route;
use shared::domain::{DeploymentId, DeploymentStatus, ModelId};
use shared::provider::{ProviderRegistry, ProvidersConfig};
use shared::queue::{self, Envelope, MessageKind, Queue, QueueOptions};
use worker::{Outcome, Worker};

use crate::db::{Engine, TestDb};

/// Everything a saga test touches.
pub struct World {
    /// The database.
    pub db: TestDb,
    /// The HF emulator.
    pub emulator: EmulatorHandle,
    /// The worker (not running; drive it with [`World::run_until`]).
    pub worker: Worker,
    /// Where commands are written.
    pub route: Route,
    /// The settings the worker was built with.
    pub settings: Settings,
}

/// Worker settings for tests: fast polls, a short retirement delay.
pub fn fast_settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut settings = crate::app::settings(database_url, overrides);
    settings.worker.status_poll_initial = Duration::from_millis(100);
    settings.worker.status_poll_max = Duration::from_millis(400);
    settings
}

/// A new deployment of `model` version `version` on a small HF CPU instance.
pub fn new_deployment(model: &str, version: &str) -> NewDeployment {
    NewDeployment {
        id: DeploymentId::new(),
        model_id: ModelId::parse(model).expect("model id"),
        model_version: Some(version.into()),
        provider: "huggingface".into(),
        instance_type: "intel-spr".into(),
        instance_size: Some("x2".into()),
        vendor: Some("aws".into()),
        region: Some("us-east-1".into()),
        task: Some("text-classification".into()),
        framework: Some("pytorch".into()),
        repository: Some("distilbert/distilbert-base-uncased-finetuned-sst-2-english".into()),
        revision: None,
        metadata: None,
        hourly_cost_usd: Some(0.067),
        idempotency_key: None,
    }
}

impl World {
    /// A world on the embedded DB queue of `engine`.
    pub async fn on_db_queue(
        engine: Engine,
        emulator: EmulatorConfig,
        overrides: &[(&str, &str)],
    ) -> World {
        let db = TestDb::migrated(engine).await;
        let settings = fast_settings(&db.url, overrides);
        let options = QueueOptions::new(queue::DEPLOYMENTS_QUEUE, settings.queue.max_attempts);
        let queue: Arc<dyn Queue> = Arc::new(queue::db::DbQueue::new(db.conn.clone(), options));
        Self::with_queue(db, settings, emulator, queue, Route::Direct).await
    }

    /// A world on a fresh RabbitMQ queue (commands go through the outbox and the relay,
    /// which [`World::run_until`] drives too). Call [`World::cleanup`] at the end.
    pub async fn on_rabbitmq(emulator: EmulatorConfig, overrides: &[(&str, &str)]) -> World {
        let db = TestDb::migrated(Engine::Sqlite).await;
        let overrides = [overrides, &[("QUEUE_BACKEND", "rabbitmq")]].concat();
        let settings = fast_settings(&db.url, &overrides);
        let name = format!(
            "hk-saga-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let options = QueueOptions::new(name, settings.queue.max_attempts);
        let queue = queue::rabbitmq::RabbitMqQueue::connect(
            &Secret::new(crate::queue::amqp_url()),
            options,
        )
        .await
        .expect("RabbitMQ must be reachable (HOKUSAI_TEST_AMQP_URL)");
        Self::with_queue(db, settings, emulator, Arc::new(queue), Route::Relay).await
    }

    /// Deletes what the world declared on a broker.
    pub async fn cleanup(self) {
        if self.route == Route::Relay {
            crate::queue::delete_rabbitmq_queues(self.worker.queue().name()).await;
        }
    }

    /// A world over an explicit queue and route.
    pub async fn with_queue(
        db: TestDb,
        settings: Settings,
        emulator: EmulatorConfig,
        queue: Arc<dyn Queue>,
        route: Route,
    ) -> World {
        let emulator = Emulator::start(emulator).await.expect("emulator starts");
        let config = ProvidersConfig::with_hf_emulator(
            &settings,
            &emulator.base_url,
            Secret::new(emulator.token.clone()),
        );
        let providers = Arc::new(ProviderRegistry::build(&config).expect("providers"));
        let worker = Worker::assemble(settings.clone(), db.conn.clone(), providers, queue);
        World {
            db,
            emulator,
            worker,
            route,
            settings,
        }
    }

    /// Requests a deployment of `model` version `version` (row + event + deploy command).
    pub async fn request(&self, model: &str, version: &str) -> Deployment {
        let new = new_deployment(model, version);
        let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
        deployments::create(&self.db.conn, self.route, new, &command)
            .await
            .expect("create deployment")
    }

    /// A deploy request of `model` `version` as the API and the MLflow intake make it: under
    /// the model's operation lock (`db::operations::deploy`), which also creates the model's
    /// operation row the worker's activation locks.
    pub async fn request_deploy(&self, model: &str, version: &str) -> Deployment {
        let new = new_deployment(model, version);
        let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
        let accepted =
            shared::db::operations::deploy(&self.db.conn, self.route, new, &command, None)
                .await
                .expect("deploy request");
        match accepted.value {
            shared::db::operations::Deployed::Created(deployment) => deployment,
            shared::db::operations::Deployed::InFlight(same) => same,
        }
    }

    /// Publishes a command for `id` (an operator's undeploy, a duplicate, …).
    pub async fn command(&self, kind: MessageKind, id: uuid::Uuid) -> Envelope {
        let envelope = Envelope::new(kind, DeploymentId(id), serde_json::json!({}));
        self.worker
            .queue()
            .publish(&envelope, None)
            .await
            .expect("publish");
        envelope
    }

    /// The deployment as stored now.
    pub async fn get(&self, id: uuid::Uuid) -> Deployment {
        deployments::get(&self.db.conn, DeploymentId(id))
            .await
            .expect("get")
            .expect("exists")
    }

    /// Its event log.
    pub async fn events(&self, id: uuid::Uuid) -> Vec<DeploymentEvent> {
        deployments::events(&self.db.conn, DeploymentId(id))
            .await
            .expect("events")
    }

    /// Drives the worker until `done` holds for the deployment, or panics after `limit`.
    pub async fn run_until(
        &self,
        id: uuid::Uuid,
        limit: Duration,
        done: impl Fn(&Deployment) -> bool,
    ) -> Deployment {
        let start = Instant::now();
        loop {
            let row = self.get(id).await;
            if done(&row) {
                return row;
            }
            assert!(
                start.elapsed() < limit,
                "not reached within {limit:?}; now {:?}: {row:?}",
                row.status
            );
            self.relay().await;
            match self.worker.consumer().try_process_one().await {
                Ok(Outcome::Processed | Outcome::Empty) => {}
                Err(error) => panic!("queue failed: {error}"),
            }
        }
    }

    /// Drives the worker until `id` reaches `status`.
    pub async fn run_until_status(
        &self,
        id: uuid::Uuid,
        status: DeploymentStatus,
        limit: Duration,
    ) -> Deployment {
        self.run_until(id, limit, |d| d.status == status).await
    }

    /// Drives the worker until the queue has been empty for `quiet`.
    pub async fn drain(&self, quiet: Duration, limit: Duration) {
        let start = Instant::now();
        let mut idle_since = Instant::now();
        while idle_since.elapsed() < quiet {
            assert!(
                start.elapsed() < limit,
                "queue not drained within {limit:?}"
            );
            if self.relay().await > 0 {
                idle_since = Instant::now();
            }
            match self
                .worker
                .consumer()
                .try_process_one()
                .await
                .expect("queue")
            {
                Outcome::Processed => idle_since = Instant::now(),
                Outcome::Empty => {}
            }
        }
    }

    /// Publishes committed outbox rows (broker worlds); returns how many.
    async fn relay(&self) -> usize {
        match self.worker.relay() {
            Some(relay) => relay.try_relay_batch().await.expect("outbox relay"),
            None => 0,
        }
    }

    /// Names of the endpoints the emulator holds.
    pub fn endpoint_names(&self) -> Vec<String> {
        self.emulator
            .endpoints()
            .into_iter()
            .map(|e| e.name)
            .collect()
    }
}
