//! End to end against a real `mlflow==3.17.2` server (`HOKUSAI_TEST_MLFLOW_URI`; the test
//! fails when it is unset): the webhook is created with the CLI, model versions are
//! registered the way a data scientist would, and — without calling our deploy API — the
//! versions become live endpoints on the HF emulator, predictions work through
//! `POST /api/v1/models/{name}/predict`, and MLflow shows the deployment status and URL as version tags. A version
//! whose metadata cannot be deployed shows the rejection reason; a delivery dropped on
//! purpose (webhook pointing to a closed port) is picked up by reconciliation.
//!
//! One test function: every listener registered on the shared server receives every
//! event, so the scenarios run one after another against one listener.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shared::db::deployments::{self, Deployment, Filter};
use shared::db::mlflow as repo;
use shared::domain::{DeploymentStatus, ModelId};
use shared::mlflow::MlflowClient;
use shared::queue::{self, Queue, QueueOptions};
use tests::app::TestApp;
use tests::db::Engine;
use tests::mlflow::{self as ml, eventually};
use tests::process;
use tokio::sync::oneshot;
use worker::Worker;
use worker::mlflow::{MlflowContext, reconcile};

const SECRET: &str = "e2e-webhook-secret";
const LIMIT: Duration = Duration::from_secs(90);
const REPOSITORY: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
const MLMODEL: &str = "flavors:\n  transformers:\n    task: text-classification\n    \
source_model_name: distilbert/distilbert-base-uncased-finetuned-sst-2-english\n    \
source_model_revision: main\n    framework: pt\n";

struct Setup {
    app: TestApp,
    mlflow: MlflowClient,
    model: String,
    webhook: String,
    stop: Option<oneshot::Sender<()>>,
}

fn overrides(uri: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MLFLOW_TRACKING_URI", uri.to_owned()),
        ("MLFLOW_WEBHOOK_SECRET", SECRET.to_owned()),
        // Long: the webhook path must be what deploys in the first scenarios; the dropped
        // delivery calls a reconciliation pass explicitly.
        ("MLFLOW_RECONCILE_INTERVAL_SECONDS", "3600".to_owned()),
    ]
}

/// The API (listener) and a running worker with its MLflow loops, over one database.
async fn start() -> Setup {
    let uri = ml::uri();
    let owned = overrides(&uri);
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::start(Engine::Postgres, &pairs).await;
    let settings = tests::world::fast_settings(&app.db.url, &pairs);
    let options = QueueOptions::new(queue::DEPLOYMENTS_QUEUE, settings.queue.max_attempts);
    let queue: Arc<dyn Queue> = Arc::new(queue::db::DbQueue::new(app.db.conn.clone(), options));
    let worker = Worker::assemble(settings, app.db.conn.clone(), app.providers.clone(), queue);
    let passes = worker
        .mlflow_reconcile_passes()
        .expect("MLflow is configured");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(worker.run_until_stopped(async {
        stopped.await.ok();
    }));
    // The worker reconciles once at start-up; versions created before that pass ended could
    // be deployed by it instead of by their webhook, which the tests below tell apart.
    eventually(LIMIT, "the start-up reconciliation pass", || async {
        (passes.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    Setup {
        app,
        mlflow: ml::client(),
        model: format!("e2e-{}", &suffix[..12]),
        webhook: format!("hokusai-e2e-{}", &suffix[..12]),
        stop: Some(stop),
    }
}

impl Setup {
    fn listener(&self) -> String {
        format!("{}/api/v1/webhooks/mlflow", self.app.url)
    }

    async fn deployment_of(&self, version: &str) -> Option<Deployment> {
        let filter = Filter {
            model_id: Some(ModelId::parse(&self.model).expect("model id")),
            ..Filter::default()
        };
        let rows = deployments::list(&self.app.db.conn, &filter)
            .await
            .expect("list");
        rows.into_iter()
            .find(|d| d.model_version.as_deref() == Some(version))
    }

    async fn wait_deployed(&self, version: &str) -> Deployment {
        eventually(LIMIT, &format!("version {version} deployed"), || async {
            self.deployment_of(version)
                .await
                .filter(|d| d.status == DeploymentStatus::Deployed && d.endpoint_url.is_some())
        })
        .await
    }

    async fn wait_tags(&self, version: &str, status: &str) -> Value {
        eventually(
            LIMIT,
            &format!("version {version} tagged {status}"),
            || async {
                let tags = ml::version_tags(&self.mlflow, &self.model, version).await;
                (tags["hokusai.deployment.status"] == status).then_some(tags)
            },
        )
        .await
    }
}

/// `hokusai-serve mlflow register-webhook`, as an operator runs it.
async fn register_with_cli(setup: &Setup) {
    let uri = ml::uri();
    let dir = process::scratch_dir();
    let listener = setup.listener();
    let args = [
        "mlflow",
        "register-webhook",
        "--url",
        &listener,
        "--name",
        &setup.webhook,
    ];
    let envs = [
        ("MLFLOW_TRACKING_URI", uri.as_str()),
        ("MLFLOW_WEBHOOK_SECRET", SECRET),
    ];

    let finished = process::run(&dir, &args, &envs).await;

    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert!(finished.stdout.contains("created"), "{finished:?}");
    assert!(!finished.stdout.contains(SECRET) && !finished.stderr.contains(SECRET));
}

async fn tagged_version_becomes_a_live_endpoint(setup: &Setup) {
    let tags = [
        ("hokusai.deploy", "true"),
        ("hokusai.hf_repository", REPOSITORY),
        ("hokusai.task", "text-classification"),
    ];
    let version = ml::create_version(
        &setup.mlflow,
        &setup.model,
        "s3://models/e2e/1",
        None,
        &tags,
    )
    .await;

    let deployed = setup.wait_deployed(&version).await;

    assert!(deployed.is_active);
    assert_eq!(deployed.repository.as_deref(), Some(REPOSITORY));
    let events = repo::events(&setup.app.db.conn).await.expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.version.as_deref() == Some(version.as_str())
                && e.outcome.as_deref() == Some("deployment_created")),
        "the webhook, not reconciliation, created it: {events:?}"
    );
    let url = deployed.endpoint_url.clone().expect("url");
    let predict_path = format!("/api/v1/models/{}/predict", setup.model);
    let body = json!({"inputs": "I love this product"});
    let response = setup
        .app
        .post(&predict_path, tests::app::ADMIN_KEY, &body)
        .await;
    assert_eq!(response.status(), 200, "predictions work through /predict");
    let prediction: Value = response.json().await.expect("json");
    assert_eq!(
        prediction["metadata"]["deployment_id"],
        deployed.id.to_string()
    );
    assert!(
        prediction["predictions"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{prediction}"
    );
    let tags = setup.wait_tags(&version, "deployed").await;
    assert_eq!(tags["hokusai.endpoint_url"], url.as_str());
    assert_eq!(tags["hokusai.deployment.id"], deployed.id.to_string());
    assert_eq!(tags["hokusai.deployment.error"], "");
}

async fn undeployable_versions_show_why_in_mlflow(setup: &Setup) {
    let no_repo = [("hokusai.deploy", "true")];
    let bad_task = [
        ("hokusai.deploy", "true"),
        ("hokusai.hf_repository", REPOSITORY),
        ("hokusai.task", "telepathy"),
    ];
    let v_repo = ml::create_version(
        &setup.mlflow,
        &setup.model,
        "s3://models/e2e/2",
        None,
        &no_repo,
    )
    .await;
    let v_task = ml::create_version(
        &setup.mlflow,
        &setup.model,
        "s3://models/e2e/3",
        None,
        &bad_task,
    )
    .await;

    let repo_tags = setup.wait_tags(&v_repo, "rejected").await;
    let task_tags = setup.wait_tags(&v_task, "rejected").await;

    let reason = |t: &Value| {
        t["hokusai.deployment.error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason(&repo_tags).contains("repository"), "{repo_tags}");
    assert!(reason(&task_tags).contains("telepathy"), "{task_tags}");
    assert!(setup.deployment_of(&v_repo).await.is_none());
    assert!(setup.deployment_of(&v_task).await.is_none());
}

async fn the_mlmodel_flavor_supplies_the_metadata(setup: &Setup) {
    let run_id = ml::log_model(&setup.mlflow, MLMODEL).await;
    let source = format!("runs:/{run_id}/model");
    let tags = [("hokusai.deploy", "true")];
    let version =
        ml::create_version(&setup.mlflow, &setup.model, &source, Some(&run_id), &tags).await;

    let deployed = setup.wait_deployed(&version).await;

    assert_eq!(deployed.repository.as_deref(), Some(REPOSITORY));
    assert_eq!(deployed.task.as_deref(), Some("text-classification"));
    assert_eq!(deployed.framework.as_deref(), Some("pytorch"));
    assert_eq!(deployed.revision.as_deref(), Some("main"));
    setup.wait_tags(&version, "deployed").await;
}

async fn a_dropped_delivery_is_reconciled(setup: &Setup) {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    ml::repoint_webhook(
        &setup.mlflow,
        &setup.webhook,
        &format!("http://127.0.0.1:{closed}/x"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await; // MLFLOW_WEBHOOK_CACHE_TTL=1
    let tags = [
        ("hokusai.deploy", "true"),
        ("hokusai.hf_repository", REPOSITORY),
    ];
    let version = ml::create_version(
        &setup.mlflow,
        &setup.model,
        "s3://models/e2e/5",
        None,
        &tags,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        setup.deployment_of(&version).await.is_none(),
        "the delivery was dropped"
    );

    let uri = ml::uri();
    let settings = tests::world::fast_settings(&setup.app.db.url, &[("MLFLOW_TRACKING_URI", &uri)]);
    let db = setup.app.db.conn.clone();
    let ctx = MlflowContext::from_settings(&settings, db, setup.app.providers.clone())
        .expect("context")
        .expect("MLflow configured");
    let report = reconcile::reconcile_once(&ctx)
        .await
        .expect("reconciliation");

    assert!(report.deployed >= 1, "{report:?}");
    let deployed = setup.wait_deployed(&version).await;
    assert_eq!(deployed.repository.as_deref(), Some(REPOSITORY));
    setup.wait_tags(&version, "deployed").await;
    let again = reconcile::reconcile_once(&ctx).await.expect("second pass");
    assert_eq!(
        again.deployed, 0,
        "exactly one deployment per version: {again:?}"
    );
}

/// A version tagged `hokusai.rollout` becomes a canary beside the serving version, and MLflow
/// shows its rollout (`hokusai.deployment.rollout`); a rollout that is not JSON rejects the
/// version with the reason.
async fn a_rollout_tag_makes_a_canary_and_mlflow_shows_it(setup: &Setup) {
    // The scenario before pointed the webhook at a closed port; deliveries come back here.
    ml::repoint_webhook(&setup.mlflow, &setup.webhook, &setup.listener()).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // MLFLOW_WEBHOOK_CACHE_TTL=1
    let rollout = r#"{"strategy": "canary", "steps": [20, 100], "bake_seconds": 3600}"#;
    let base = [
        ("hokusai.deploy", "true"),
        ("hokusai.hf_repository", REPOSITORY),
        ("hokusai.task", "text-classification"),
    ];
    let mut tags = base.to_vec();
    tags.push(("hokusai.rollout", rollout));
    let version = ml::create_version(
        &setup.mlflow,
        &setup.model,
        "s3://models/e2e/canary",
        None,
        &tags,
    )
    .await;
    let mut bad = base.to_vec();
    bad.push(("hokusai.rollout", "{canary"));
    let refused = ml::create_version(
        &setup.mlflow,
        &setup.model,
        "s3://models/e2e/bad-rollout",
        None,
        &bad,
    )
    .await;

    let canary = setup.wait_deployed(&version).await;
    let shown = eventually(LIMIT, "the rollout tag", || async {
        let tags = ml::version_tags(&setup.mlflow, &setup.model, &version).await;
        tags["hokusai.deployment.rollout"]
            .as_str()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    })
    .await;
    let rejected = setup.wait_tags(&refused, "rejected").await;

    assert!(
        !canary.is_active,
        "a canary serves beside the active version: {canary:?}"
    );
    assert_eq!(shown["strategy"], "canary", "{shown}");
    assert_eq!(shown["state"], "running", "{shown}");
    assert_eq!(
        (shown["step"].as_u64(), shown["weight"].as_u64()),
        (Some(0), Some(20)),
        "{shown}"
    );
    assert!(
        rejected["hokusai.deployment.error"]
            .as_str()
            .is_some_and(|e| e.contains("hokusai.rollout")),
        "{rejected}"
    );
}

#[tokio::test]
async fn mlflow_registrations_become_live_endpoints_without_calling_our_api() {
    let mut setup = start().await;
    ml::create_model(&setup.mlflow, &setup.model, &[]).await;
    register_with_cli(&setup).await;

    tagged_version_becomes_a_live_endpoint(&setup).await;
    undeployable_versions_show_why_in_mlflow(&setup).await;
    the_mlmodel_flavor_supplies_the_metadata(&setup).await;
    a_dropped_delivery_is_reconciled(&setup).await;
    a_rollout_tag_makes_a_canary_and_mlflow_shows_it(&setup).await;

    ml::delete_webhook(&setup.mlflow, &setup.webhook).await;
    if let Some(stop) = setup.stop.take() {
        let _ = stop.send(());
    }
}
