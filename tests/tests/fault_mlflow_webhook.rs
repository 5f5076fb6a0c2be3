//! Fault test (issue 11): MLflow webhook deliveries duplicated and reordered.
//!
//! Against a real MLflow server (`HOKUSAI_TEST_MLFLOW_URI`; the test fails when it is unset),
//! two models get four deployable versions each. No webhook is registered with MLflow: the
//! test itself sends, signed, for every version a `model_version.created` delivery three
//! times under one delivery id (MLflow retrying), once more under another id, and a
//! `hokusai.deploy=true` tag delivery — all shuffled by a seeded generator and sent eight at
//! a time, while a real worker (intake, saga) runs. Afterwards each version has exactly one
//! deployment, every deployment is settled, every delivery is answered 2xx and recorded
//! once per delivery id, every deployment reached `deployed` (a version a newer one replaced
//! is then retired: `stopped`) or was superseded by a newer registration while it still
//! provisioned (`failed`, never served; any other `failed` is no fine end), each model has one
//! active deployment, and the emulator holds only endpoints of `deployed` deployments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream;
use sea_orm::EntityTrait;
use serde_json::json;
use shared::config::Secret;
use shared::db::entities::{deployed_models, queue_messages};
use shared::db::mlflow as repo;
use shared::domain::DeploymentStatus;
use shared::mlflow::webhook;
use shared::queue::{self, Queue, QueueOptions};
use tests::app::TestApp;
use tests::db::Engine;
use tests::mlflow as ml;
use tokio::sync::oneshot;
use worker::Worker;

const SECRET: &str = "fault-webhook-secret";
const REPOSITORY: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
const MODELS: usize = 2;
const VERSIONS: usize = 4;
const LIMIT: Duration = Duration::from_secs(120);

/// splitmix64, seeded so a failing order can be replayed (`HOKUSAI_WEBHOOK_SEED`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

struct Delivery {
    id: String,
    body: String,
}

fn created(model: &str, version: &str) -> String {
    json!({"entity": "model_version", "action": "created", "timestamp": Utc::now().to_rfc3339(),
           "data": {"name": model, "version": version, "source": "s3://models/fault/1", "run_id": null,
                    "tags": {}, "description": null}})
    .to_string()
}

fn tagged(model: &str, version: &str) -> String {
    json!({"entity": "model_version_tag", "action": "set", "timestamp": Utc::now().to_rfc3339(),
           "data": {"name": model, "version": version, "key": "hokusai.deploy", "value": "true"}})
    .to_string()
}

async fn send(app: &TestApp, delivery: &Delivery) -> u16 {
    let ts = Utc::now().timestamp().to_string();
    let signature = webhook::sign(
        &Secret::new(SECRET),
        &delivery.id,
        &ts,
        delivery.body.as_bytes(),
    );
    app.client
        .post(format!("{}/api/v1/webhooks/mlflow", app.url))
        .header("content-type", "application/json")
        .header("x-mlflow-delivery-id", &delivery.id)
        .header("x-mlflow-timestamp", &ts)
        .header("x-mlflow-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await
        .expect("the listener answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_and_reordered_deliveries_make_one_deployment_per_version() {
    // Arrange
    let started = Instant::now();
    let seed = std::env::var("HOKUSAI_WEBHOOK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        });
    let uri = ml::uri();
    let overrides = [
        ("MLFLOW_TRACKING_URI", uri.as_str()),
        ("MLFLOW_WEBHOOK_SECRET", SECRET),
        ("MLFLOW_RECONCILE_INTERVAL_SECONDS", "3600"),
        ("RETIRE_AFTER_SECONDS", "1"),
    ];
    let app = Arc::new(TestApp::start(Engine::Postgres, &overrides).await);
    let settings = tests::world::fast_settings(&app.db.url, &overrides);
    let options = QueueOptions::new(queue::DEPLOYMENTS_QUEUE, settings.queue.max_attempts);
    let queue: Arc<dyn Queue> = Arc::new(queue::db::DbQueue::new(app.db.conn.clone(), options));
    let worker = Worker::assemble(settings, app.db.conn.clone(), app.providers.clone(), queue);
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until_stopped(async {
        stopped.await.ok();
    }));
    let mlflow = ml::client();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..10];
    let tags = [
        ("hokusai.deploy", "true"),
        ("hokusai.hf_repository", REPOSITORY),
        ("hokusai.task", "text-classification"),
    ];
    let mut versions = Vec::new();
    for m in 0..MODELS {
        let model = format!("fault-wh-{m}-{suffix}");
        ml::create_model(&mlflow, &model, &[]).await;
        for _ in 0..VERSIONS {
            let version =
                ml::create_version(&mlflow, &model, "s3://models/fault/1", None, &tags).await;
            versions.push((model.clone(), version));
        }
    }
    let mut deliveries = Vec::new();
    for (model, version) in &versions {
        let retried = uuid::Uuid::new_v4().to_string();
        for _ in 0..3 {
            deliveries.push(Delivery {
                id: retried.clone(),
                body: created(model, version),
            });
        }
        deliveries.push(Delivery {
            id: uuid::Uuid::new_v4().to_string(),
            body: created(model, version),
        });
        deliveries.push(Delivery {
            id: uuid::Uuid::new_v4().to_string(),
            body: tagged(model, version),
        });
    }
    let mut rng = Rng(seed);
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let distinct_ids: BTreeSet<String> = deliveries.iter().map(|d| d.id.clone()).collect();

    // Act
    let statuses: Vec<u16> = stream::iter(deliveries.iter())
        .map(|d| send(&app, d))
        .buffer_unordered(8)
        .collect()
        .await;
    let (rows, events) = loop {
        let rows = deployed_models::Entity::find()
            .all(&app.db.conn)
            .await
            .expect("deployments");
        let events = repo::events(&app.db.conn).await.expect("events");
        let live = queue_messages::Entity::find()
            .all(&app.db.conn)
            .await
            .expect("queue")
            .iter()
            .filter(|m| m.dead_at.is_none())
            .count();
        let settled = rows
            .iter()
            .all(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal());
        let processed = events.iter().all(|e| e.processed_at.is_some());
        if settled && processed && live == 0 && rows.len() >= versions.len() {
            break (rows, events);
        }
        assert!(
            started.elapsed() < LIMIT,
            "not settled within {LIMIT:?}: {} deployments, {} unprocessed events, {live} live \
             messages (seed {seed})",
            rows.len(),
            events.iter().filter(|e| e.processed_at.is_none()).count()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.send(()).ok();
    running.await.expect("worker task").expect("worker stops");

    // Assert (the worker's start-up reconciliation may also deploy tagged versions that
    // other tests left on the shared MLflow server: only this test's models are counted)
    let ours: BTreeSet<&String> = versions.iter().map(|(m, _)| m).collect();
    let all_rows = rows;
    let rows: Vec<_> = all_rows
        .iter()
        .filter(|r| ours.contains(&r.model_id))
        .collect();
    let mut per_version: BTreeMap<(String, String), usize> = BTreeMap::new();
    for row in &rows {
        let version = row.model_version.clone().unwrap_or_default();
        *per_version
            .entry((row.model_id.clone(), version))
            .or_default() += 1;
    }
    let deployed: BTreeSet<String> = all_rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed)
        .filter_map(|r| r.provider_model_id.clone())
        .collect();
    let held: BTreeSet<String> = app
        .emulator
        .endpoints()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let orphaned: Vec<&String> = held.difference(&deployed).collect();
    let terminal = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    // Reached `deployed` (and, if replaced since, retired), or superseded by a newer
    // registration of the model while it still provisioned (docs/design/domain.md,
    // "Concurrent operations on one model": it never served): the acceptable endings.
    let ended_well = |r: &deployed_models::Model| {
        let served = r.deployed_at.is_some()
            && matches!(
                r.status,
                DeploymentStatus::Deployed | DeploymentStatus::Stopped
            );
        let superseded = r.status == DeploymentStatus::Failed
            && r.deployed_at.is_none()
            && r.error_message
                .as_deref()
                .is_some_and(|m| m.starts_with("superseded by"));
        served || superseded
    };
    let lost = versions
        .iter()
        .filter(|(m, v)| {
            !rows
                .iter()
                .any(|r| &r.model_id == m && r.model_version.as_ref() == Some(v) && ended_well(r))
        })
        .count();
    let not_deployed: Vec<String> = rows
        .iter()
        .filter(|r| !ended_well(r))
        .map(|r| format!("{} v{:?} {}", r.model_id, r.model_version, r.status))
        .collect();
    let active: BTreeMap<&String, usize> = rows
        .iter()
        .filter(|r| r.is_active && r.status == DeploymentStatus::Deployed)
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(&r.model_id).or_default() += 1;
            m
        });
    let recorded: BTreeSet<String> = events.iter().map(|e| e.delivery_id.clone()).collect();
    tests::fault::report(&format!(
        "fault mlflow_webhook: requested {} / terminal {terminal} / orphaned {} / lost {lost} \
         ({} deliveries, {} distinct ids, {} events recorded, statuses {:?}, seed {seed}, {:.1} s)",
        versions.len(),
        orphaned.len(),
        deliveries.len(),
        distinct_ids.len(),
        events.len(),
        statuses
            .iter()
            .fold(BTreeMap::<u16, usize>::new(), |mut m, s| {
                *m.entry(*s).or_default() += 1;
                m
            }),
        started.elapsed().as_secs_f64()
    ));
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 202),
        "every delivery answered 2xx: {statuses:?}"
    );
    assert!(not_deployed.is_empty(), "never deployed: {not_deployed:?}");
    assert_eq!(lost, 0, "every version deployed: {per_version:?}");
    assert!(
        per_version.values().all(|n| *n == 1) && per_version.len() == versions.len(),
        "exactly one deployment per version: {per_version:?}"
    );
    assert_eq!(terminal, versions.len());
    assert_eq!(
        active.values().copied().collect::<Vec<_>>(),
        vec![1; MODELS],
        "one active deployed version per model: {active:?}"
    );
    assert_eq!(
        recorded, distinct_ids,
        "each delivery id recorded exactly once"
    );
    assert_eq!(events.len(), distinct_ids.len());
    assert!(orphaned.is_empty(), "orphaned endpoints: {orphaned:?}");
    if let Ok(app) = Arc::try_unwrap(app) {
        app.db.drop_database().await;
    }
}
