//! Fault tests of the reconciler (docs/architecture.md, "The reconciler"), on real
//! PostgreSQL and the HF emulator's own management API — what an HF console user, or HF's
//! own maintenance, does behind our back:
//!
//! - an endpoint deleted, failed, paused or scaled to zero at the provider ⇒ a replacement
//!   deployment serves, events on both; `ON_ENDPOINT_LOST=fail` ⇒ `failed`, predict 503,
//!   cost stops;
//! - the provider's management API failing past the deadline ⇒ `timed_out`, `rolling_back`
//!   while it fails, `failed` with nothing left once it answers;
//! - a queued command removed from the queue ⇒ reissued, the deployment completes;
//! - an endpoint with our prefix created behind our back ⇒ deleted after the grace period
//!   (`ORPHAN_SWEEP=report`: kept);
//! - two reconcilers ⇒ one leader; the leader stops renewing ⇒ the other takes over
//!   within one lease.
//!
//! Each prints `fault <name>: requested N / terminal N / orphaned N / lost N`, every number
//! computed from what the emulator and the database hold.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use emulator::{ChaosConfig, EmulatorHandle};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use shared::db::deployments::{self, Deployment, Filter};
use shared::db::entities::queue_messages;
use shared::domain::{DeploymentId, DeploymentStatus, ModelId};
use tests::app::{ADMIN_KEY, TestApp};
use tests::db::Engine;

const LIMIT: Duration = Duration::from_secs(30);

fn body() -> Value {
    json!({"model_version": "1", "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification", "scaling": {"min_replica": 1, "max_replica": 1}})
}

/// The namespace our endpoints live in at the emulator.
const NAMESPACE: &str = shared::provider::config::EMULATOR_NAMESPACE;

/// Calls the emulator's management API on endpoint `name`, as an HF console user would.
async fn at_provider(emulator: &EmulatorHandle, method: reqwest::Method, name: &str, action: &str) {
    let url = format!("{}/v2/endpoint/{NAMESPACE}/{name}", emulator.base_url);
    let url = if action.is_empty() {
        url
    } else {
        format!("{url}/{action}")
    };
    let response = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(&emulator.token)
        .send()
        .await
        .expect("emulator answers");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

async fn model_rows(app: &TestApp, model: &str) -> Vec<Deployment> {
    let filter = Filter {
        model_id: Some(ModelId::parse(model).expect("model id")),
        ..Filter::default()
    };
    deployments::list(&app.db.conn, &filter)
        .await
        .expect("list")
}

async fn row(app: &TestApp, id: uuid::Uuid) -> Deployment {
    deployments::get(&app.db.conn, DeploymentId(id))
        .await
        .expect("get")
        .expect("exists")
}

async fn event_kinds(app: &TestApp, id: uuid::Uuid) -> Vec<String> {
    deployments::events(&app.db.conn, DeploymentId(id))
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// Settled: serving, or finished (`stopped`, `failed`, `rollback_failed`).
fn settled(d: &Deployment) -> bool {
    d.status == DeploymentStatus::Deployed || d.status.is_terminal()
}

/// The counts line: requested = deployments of `model`; terminal = settled ones;
/// orphaned = endpoints with our prefix the emulator holds that no `deployed` deployment
/// names (another owner's endpoints are not ours to count or touch); lost = deployments
/// not settled.
async fn report(name: &str, app: &TestApp, model: &str, extra: &str) -> (usize, usize) {
    let rows = model_rows(app, model).await;
    let ours = app
        .emulator
        .endpoints()
        .into_iter()
        .map(|e| e.name)
        .filter(|name| name.starts_with(worker::reconciler::ENDPOINT_PREFIX));
    let orphaned = tests::fault::orphaned_endpoints(ours, &rows).len();
    let terminal = rows.iter().filter(|d| settled(d)).count();
    let lost = rows.len() - terminal;
    tests::fault::report(&format!(
        "fault {name}: requested {} / terminal {terminal} / orphaned {orphaned} / lost {lost}{extra}",
        rows.len()
    ));
    (orphaned, lost)
}

async fn predict(app: &TestApp, model: &str) -> (StatusCode, Value, Option<String>) {
    let response = app
        .post(
            &format!("/api/v1/models/{model}/predict"),
            ADMIN_KEY,
            &json!({"inputs": "I love this"}),
        )
        .await;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

/// Waits out the API's routing cache (2 s) so the next predict reads the database.
async fn past_routing_ttl(app: &TestApp) {
    tokio::time::sleep(app.settings.api.routing_ttl + Duration::from_millis(100)).await;
}

/// The behind-our-back change `break_it` ⇒ the endpoint is taken out of service with the
/// `event`, replaced by a new deployment that serves, and nothing is left behind.
async fn replaced_after(
    name: &str,
    event: &str,
    break_it: impl AsyncFnOnce(&EmulatorHandle, &str),
) {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let worker = app.worker();
    let model = "sentiment";
    let first: uuid::Uuid = app
        .deploy_and_serve(&worker, model, body())
        .await
        .parse()
        .expect("id");
    let endpoint = row(&app, first)
        .await
        .provider_model_id
        .expect("endpoint name");
    assert_eq!(predict(&app, model).await.0, StatusCode::OK);

    break_it(&app.emulator, &endpoint).await;
    let report_of_pass = worker.reconciler().pass().await.expect("pass");
    assert_eq!(report_of_pass.lost, 1, "{report_of_pass:?}");

    // The lost deployment is out of service and no longer billed.
    let lost = row(&app, first).await;
    assert!(!lost.is_active);
    assert_eq!(lost.status, DeploymentStatus::RollingBack);
    assert_eq!(shared::cost::current_hourly(&lost), 0.0, "{lost:?}");
    let kinds = event_kinds(&app, first).await;
    assert!(kinds.iter().any(|k| k == event), "{kinds:?}");
    let replacement = model_rows(&app, model)
        .await
        .into_iter()
        .find(|d| d.metadata.as_ref().and_then(|m| m.get("replaces")) == Some(&json!(first)))
        .expect("a replacement deployment");
    let lost_event = deployments::events(&app.db.conn, DeploymentId(first))
        .await
        .expect("events")
        .into_iter()
        .find(|e| e.kind == event)
        .expect("the event");
    assert_eq!(
        lost_event.details.as_ref().expect("details")["replaced_by"],
        json!(replacement.id)
    );
    assert!(
        event_kinds(&app, replacement.id)
            .await
            .contains(&"replaces".to_owned())
    );

    // Meanwhile predict says "not ready, retry" — never "gone".
    past_routing_ttl(&app).await;
    let (status, answer, retry_after) = predict(&app, model).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "MODEL_NOT_READY", "{answer}");
    assert!(retry_after.is_some());

    // The replacement serves; the lost one ends failed with nothing left at the provider.
    app.work_until(&worker, &replacement.id.to_string(), |d| d.is_active)
        .await;
    app.work_until(&worker, &first.to_string(), |d| {
        d.status == DeploymentStatus::Failed
    })
    .await;
    past_routing_ttl(&app).await;
    let (status, answer, _) = predict(&app, model).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["metadata"]["deployment_id"],
        json!(replacement.id),
        "{answer}"
    );
    assert!(!app.emulator.endpoints().iter().any(|e| e.name == endpoint));

    let (orphaned, lost) = report(name, &app, model, "").await;
    assert_eq!((orphaned, lost), (0, 0));
}

#[tokio::test]
async fn an_endpoint_deleted_at_the_provider_is_replaced() {
    replaced_after(
        "reconcile_endpoint_deleted",
        "endpoint_lost",
        async |emulator, name| {
            at_provider(emulator, reqwest::Method::DELETE, name, "").await;
        },
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_failed_at_the_provider_is_replaced() {
    replaced_after(
        "reconcile_endpoint_failed",
        "endpoint_failed",
        async |emulator, name| {
            assert!(emulator.fail_endpoint(NAMESPACE, name));
        },
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_paused_at_the_provider_is_replaced() {
    replaced_after(
        "reconcile_endpoint_paused",
        "endpoint_paused",
        async |emulator, name| {
            at_provider(emulator, reqwest::Method::POST, name, "pause").await;
        },
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_scaled_to_zero_against_its_min_replica_is_replaced() {
    replaced_after(
        "reconcile_endpoint_scaled_to_zero",
        "endpoint_scaled_to_zero",
        async |emulator, name| {
            at_provider(emulator, reqwest::Method::POST, name, "scale-to-zero").await;
        },
    )
    .await;
}

#[tokio::test]
async fn with_on_endpoint_lost_fail_a_lost_endpoint_ends_failed_and_predict_answers_503() {
    let app = TestApp::start(Engine::Postgres, &[("ON_ENDPOINT_LOST", "fail")]).await;
    let worker = app.worker();
    let model = "sentiment";
    let first: uuid::Uuid = app
        .deploy_and_serve(&worker, model, body())
        .await
        .parse()
        .expect("id");
    let endpoint = row(&app, first)
        .await
        .provider_model_id
        .expect("endpoint name");

    at_provider(&app.emulator, reqwest::Method::DELETE, &endpoint, "").await;
    worker.reconciler().pass().await.expect("pass");
    let failed = app
        .work_until(&worker, &first.to_string(), |d| {
            d.status == DeploymentStatus::Failed
        })
        .await;

    assert!(!failed.is_active);
    assert_eq!(shared::cost::current_hourly(&failed), 0.0);
    assert_eq!(
        model_rows(&app, model).await.len(),
        1,
        "nothing replaces it"
    );
    let kinds = event_kinds(&app, first).await;
    assert!(kinds.contains(&"endpoint_lost".to_owned()), "{kinds:?}");
    past_routing_ttl(&app).await;
    let (status, answer, retry_after) = predict(&app, model).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "MODEL_NOT_READY");
    assert!(retry_after.is_some());
    let (orphaned, _) = report("reconcile_lost_fail_policy", &app, model, "").await;
    assert_eq!(orphaned, 0);
}

#[tokio::test]
async fn a_provider_error_while_observing_changes_nothing() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let worker = app.worker();
    let first: uuid::Uuid = app
        .deploy_and_serve(&worker, "sentiment", body())
        .await
        .parse()
        .expect("id");
    let before = row(&app, first).await;
    app.emulator.set_chaos(ChaosConfig {
        server_error_next: 100,
        ..ChaosConfig::default()
    });

    let pass = worker.reconciler().pass().await.expect("pass");

    app.emulator.set_chaos(ChaosConfig::default());
    assert_eq!(pass.lost, 0, "{pass:?}");
    let after = row(&app, first).await;
    assert_eq!(
        (after.status, after.is_active, after.lock_version),
        (before.status, true, before.lock_version)
    );
}

#[tokio::test]
async fn a_provider_failing_past_the_deadline_times_out_and_compensates_once_it_answers() {
    let app = TestApp::start(
        Engine::Postgres,
        &[
            ("DEPLOY_TIMEOUT_SECONDS", "2"),
            ("HUGGINGFACE_MAX_RETRIES", "1"),
        ],
    )
    .await;
    let worker = app.worker();
    let response = app
        .post("/api/v1/models/sentiment/deployments", ADMIN_KEY, &body())
        .await;
    assert_eq!(response.status(), 202);
    let id: uuid::Uuid = response.json::<Value>().await.expect("json")["deployment"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    // The endpoint is created; then the management API fails every call.
    app.work_until(&worker, &id.to_string(), |d| {
        d.status == DeploymentStatus::Deploying
    })
    .await;
    assert_eq!(app.emulator.endpoints().len(), 1);
    app.emulator.set_chaos(ChaosConfig {
        server_error_every: 1,
        ..ChaosConfig::default()
    });

    // The status polls keep failing on 500s (retried, spending no attempt) past the deadline.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2_500) {
        worker.consumer().try_process_one().await.expect("queue");
    }
    assert_eq!(row(&app, id).await.status, DeploymentStatus::Deploying);
    let pass = worker.reconciler().pass().await.expect("pass");
    assert_eq!(pass.timed_out, 1, "{pass:?}");
    let timed_out = row(&app, id).await;
    assert_eq!(timed_out.status, DeploymentStatus::RollingBack);
    assert!(
        event_kinds(&app, id)
            .await
            .contains(&"timed_out".to_owned())
    );

    // While the provider fails, the compensation keeps trying, stays rolling_back, and the
    // endpoint is still there.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        worker.consumer().try_process_one().await.expect("queue");
        worker.reconciler().pass().await.expect("pass");
    }
    assert_eq!(row(&app, id).await.status, DeploymentStatus::RollingBack);
    assert_eq!(
        app.emulator.endpoints().len(),
        1,
        "not deleted while the provider fails"
    );

    app.emulator.set_chaos(ChaosConfig::default());
    let start = Instant::now();
    while row(&app, id).await.status != DeploymentStatus::Failed {
        assert!(
            start.elapsed() < LIMIT,
            "not failed: {:?}",
            row(&app, id).await
        );
        worker.consumer().try_process_one().await.expect("queue");
        worker.reconciler().pass().await.expect("pass");
    }
    let (orphaned, lost) = report(
        "reconcile_provider_down_past_deadline",
        &app,
        "sentiment",
        "",
    )
    .await;
    assert_eq!((orphaned, lost), (0, 0));
    assert!(app.emulator.endpoints().is_empty());
}

#[tokio::test]
async fn a_command_removed_from_the_queue_is_reissued_and_the_deployment_completes() {
    let app = TestApp::start(Engine::Postgres, &[("COMMAND_STALL_SECONDS", "3")]).await;
    let worker = app.worker();
    let response = app
        .post("/api/v1/models/sentiment/deployments", ADMIN_KEY, &body())
        .await;
    assert_eq!(response.status(), 202);
    let id: uuid::Uuid = response.json::<Value>().await.expect("json")["deployment"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let removed = queue_messages::Entity::delete_many()
        .filter(queue_messages::Column::Payload.contains(id.to_string()))
        .exec(&app.db.conn)
        .await
        .expect("delete the command")
        .rows_affected;
    assert_eq!(removed, 1);

    let early = worker.reconciler().pass().await.expect("pass");
    assert_eq!(early.reissued, 0, "not stalled yet: {early:?}");
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let pass = worker.reconciler().pass().await.expect("pass");
    assert_eq!(pass.reissued, 1, "{pass:?}");
    let again = worker.reconciler().pass().await.expect("pass");
    assert_eq!(again.reissued, 0, "a queued command is live: {again:?}");

    app.work_until(&worker, &id.to_string(), |d| d.is_active)
        .await;
    assert!(
        event_kinds(&app, id)
            .await
            .contains(&"command_reissued".to_owned())
    );
    let (orphaned, lost) = report("reconcile_command_lost", &app, "sentiment", "").await;
    assert_eq!((orphaned, lost), (0, 0));
}

async fn create_behind_our_back(emulator: &EmulatorHandle, name: &str) {
    let body = json!({
        "name": name, "type": "protected",
        "provider": {"vendor": "aws", "region": "us-east-1"},
        "compute": {"accelerator": "cpu", "instanceType": "intel-spr", "instanceSize": "x2",
                    "scaling": {"minReplica": 1, "maxReplica": 1}},
        "model": {"repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
                  "framework": "pytorch", "task": "text-classification",
                  "image": {"huggingface": {}}},
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v2/endpoint/{NAMESPACE}", emulator.base_url))
        .bearer_auth(&emulator.token)
        .json(&body)
        .send()
        .await
        .expect("emulator answers");
    assert!(response.status().is_success(), "{}", response.status());
}

#[tokio::test]
async fn an_endpoint_with_our_prefix_created_behind_our_back_is_deleted_after_the_grace() {
    let app = TestApp::start(Engine::Postgres, &[("ORPHAN_GRACE_SECONDS", "3")]).await;
    let worker = app.worker();
    let ours: uuid::Uuid = app
        .deploy_and_serve(&worker, "sentiment", body())
        .await
        .parse()
        .expect("id");
    create_behind_our_back(&app.emulator, "hk-rogue-0000beef").await;
    create_behind_our_back(&app.emulator, "someone-elses").await;

    let young = worker.reconciler().pass().await.expect("pass");
    assert_eq!(
        young.orphans_deleted, 0,
        "inside the grace period: {young:?}"
    );
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let pass = worker.reconciler().pass().await.expect("pass");

    assert_eq!(pass.orphans_deleted, 1, "{pass:?}");
    let held: BTreeSet<String> = app
        .emulator
        .endpoints()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(!held.contains("hk-rogue-0000beef"), "{held:?}");
    assert!(held.contains("someone-elses"), "not ours: never touched");
    let ours = row(&app, ours).await;
    assert!(
        held.contains(ours.provider_model_id.as_deref().expect("name")),
        "ours kept"
    );
    let (orphaned, lost) = report("reconcile_orphan_sweep", &app, "sentiment", "").await;
    assert_eq!((orphaned, lost), (0, 0));
}

#[tokio::test]
async fn orphan_sweep_report_only_logs() {
    let app = TestApp::start(
        Engine::Postgres,
        &[("ORPHAN_GRACE_SECONDS", "0"), ("ORPHAN_SWEEP", "report")],
    )
    .await;
    let worker = app.worker();
    create_behind_our_back(&app.emulator, "hk-rogue-0000cafe").await;

    let pass = worker.reconciler().pass().await.expect("pass");

    assert_eq!(
        (pass.orphans_found, pass.orphans_deleted),
        (1, 0),
        "{pass:?}"
    );
    assert_eq!(app.emulator.endpoints().len(), 1);
}

#[tokio::test]
async fn one_leader_at_a_time_on_postgres() {
    one_leader_at_a_time_and_a_silent_leader_is_replaced_within_one_lease(Engine::Postgres).await;
}

#[tokio::test]
async fn one_leader_at_a_time_on_sqlite() {
    one_leader_at_a_time_and_a_silent_leader_is_replaced_within_one_lease(Engine::Sqlite).await;
}

async fn one_leader_at_a_time_and_a_silent_leader_is_replaced_within_one_lease(engine: Engine) {
    let app = TestApp::start(engine, &[("LEADER_LEASE_SECONDS", "1")]).await;
    let (a, b) = (app.worker(), app.worker());
    let ttl = Duration::from_secs(1);
    shared::db::lease::try_hold(&app.db.conn, "probe", "probe", ttl)
        .await
        .expect("the lease statement runs");

    assert!(
        a.reconciler().hold_lease().await,
        "the first takes the free lease"
    );
    assert!(!b.reconciler().hold_lease().await, "the second must wait");
    let silent = Instant::now();
    assert!(a.reconciler().hold_lease().await, "the holder renews");
    let holder = shared::db::lease::holder(&app.db.conn, worker::reconciler::LEASE)
        .await
        .expect("holder");
    assert_eq!(holder.as_deref(), Some(a.reconciler().holder()));

    // `a` stops renewing (a SIGKILL): within one lease `b` takes over.
    let start = Instant::now();
    while !b.reconciler().hold_lease().await {
        assert!(start.elapsed() < Duration::from_secs(3), "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "taken over too early: {took:?}"
    );
    assert!(
        !a.reconciler().hold_lease().await,
        "the old leader is fenced out"
    );
    println!("takeover after {took:?} (lease 1 s)");
}

#[tokio::test]
async fn a_command_lost_in_the_broker_is_reissued_and_the_deployment_completes() {
    // RabbitMQ, SQLite: the outbox row is published (so the database holds no command) and
    // the broker's message is then swallowed (taken and acked, never handled).
    let world = tests::world::World::on_rabbitmq(
        emulator::EmulatorConfig::default(),
        &[("COMMAND_STALL_SECONDS", "3")],
    )
    .await;
    let requested = world.request("sentiment", "1").await;
    let relay = world.worker.relay().expect("a broker world relays");
    assert_eq!(relay.try_relay_batch().await.expect("relay"), 1);
    let swallowed = world
        .worker
        .queue()
        .receive(Duration::from_secs(5))
        .await
        .expect("queue")
        .expect("the deploy command");
    assert_eq!(swallowed.envelope().deployment_id.0, requested.id);
    swallowed.ack().await.expect("ack");

    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let pass = world.worker.reconciler().pass().await.expect("pass");
    assert_eq!(pass.reissued, 1, "{pass:?}");
    let deployed = world
        .run_until_status(requested.id, DeploymentStatus::Deployed, LIMIT)
        .await;

    assert!(deployed.is_active);
    let kinds: Vec<String> = world
        .events(requested.id)
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.contains(&"command_reissued".to_owned()), "{kinds:?}");
    let held = world.endpoint_names();
    let lost = usize::from(!settled(&world.get(requested.id).await));
    let orphaned = held
        .iter()
        .filter(|n| Some(n.as_str()) != deployed.provider_model_id.as_deref())
        .count();
    tests::fault::report(&format!(
        "fault reconcile_command_lost_in_broker: requested 1 / terminal {} / orphaned {orphaned} / lost {lost}",
        1 - lost
    ));
    assert_eq!((orphaned, lost), (0, 0));
    world.cleanup().await;
}
