//! Fault test (issue 11): PostgreSQL goes away under API traffic and worker steps.
//!
//! The API and an in-process worker (three consumer loops) reach a fresh PostgreSQL
//! database through a loopback [`TcpProxy`]. While 40 deployments are requested (each with
//! an `Idempotency-Key`, retried by the client on 503) and read back, the test repeatedly
//! terminates every backend of the database with `pg_terminate_backend` and twice cuts the
//! proxy for a few seconds. While the database is away the API must answer 503
//! `SERVICE_UNAVAILABLE` with `Retry-After: 1` (never 500) and `/ready` must say
//! `unreachable`; afterwards it must recover without a restart, and every requested
//! deployment must exist exactly once, be `deployed`, and own exactly one emulator endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, EntityTrait, Statement};
use serde_json::{Value, json};
use shared::db::entities::{deployed_models, queue_messages};
use shared::domain::DeploymentStatus;
use tests::app::{ADMIN_KEY, READ_KEY, TestApp};
use tests::db::{Engine, TestDb, postgres_admin_url};
use tests::proxy::TcpProxy;
use tokio::sync::Mutex;

const DEPLOYMENTS: usize = 40;
/// How long the faults go on.
const CHAOS: Duration = Duration::from_secs(20);
/// The whole test.
const LIMIT: Duration = Duration::from_secs(150);
/// How long each proxy cut lasts (longer than the 5 s pool acquire timeout).
const OUTAGE: Duration = Duration::from_secs(7);

fn body() -> Value {
    json!({"model_version": "1", "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification", "instance": {"size": "x4"}, "scaling": {"min_replica": 1, "max_replica": 1}})
}

/// Outcomes seen by clients: "<status> <code>" → count.
type Outcomes = Arc<Mutex<BTreeMap<String, usize>>>;

async fn record(outcomes: &Outcomes, response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let mut key = format!("{status}");
    if status >= 400 {
        key = format!("{status} {}", body["error"].as_str().unwrap_or("<no code>"));
        let shaped = body["detail"].is_string() && body["request_id"].is_string();
        if !shaped {
            key.push_str(" <bad shape>");
        }
        if status == 503 && retry_after.as_deref() != Some("1") {
            key.push_str(" <no Retry-After: 1>");
        }
    }
    *outcomes.lock().await.entry(key).or_default() += 1;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_api_answers_503_while_postgres_is_away_and_nothing_is_lost() {
    // Arrange
    let started = Instant::now();
    let db = TestDb::migrated(Engine::Postgres).await;
    let db_name = db.url.rsplit('/').next().expect("db name").to_owned();
    let db_url = db.url.clone();
    let (proxy, app_url) = TcpProxy::in_front_of(&db_url).await;
    let app = Arc::new(TestApp::start_via(db, &app_url, &[("QUEUE_BACKEND", "db")]).await);
    let admin = shared::db::connect(&postgres_admin_url())
        .await
        .expect("admin connection");

    let mut settings = app.settings.clone();
    settings.worker.status_poll_initial = Duration::from_millis(100);
    settings.worker.status_poll_max = Duration::from_millis(400);
    let worker_conn = shared::db::connect(&app_url)
        .await
        .expect("worker connection through the proxy");
    let mut options = shared::queue::QueueOptions::new(
        shared::queue::DEPLOYMENTS_QUEUE,
        settings.queue.max_attempts,
    );
    options.lease = Duration::from_secs(3);
    let queue = Arc::new(shared::queue::db::DbQueue::new(
        worker_conn.clone(),
        options,
    ));
    let worker = worker::Worker::assemble(settings, worker_conn, app.providers.clone(), queue);
    let stop = Arc::new(AtomicBool::new(false));
    let worker_errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..3 {
        let (consumer, stop, errors) = (
            worker.consumer().clone(),
            stop.clone(),
            worker_errors.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if consumer.try_process_one().await.is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }

    // Act: clients deploy and read while the faults run.
    let outcomes: Outcomes = Arc::default();
    let traffic = {
        let (app, outcomes) = (app.clone(), outcomes.clone());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client");
        tokio::spawn(async move {
            let mut unexpected = Vec::new();
            for i in 0..DEPLOYMENTS {
                let model = format!("pg-fault-{i:02}");
                loop {
                    let response = client
                        .post(format!("{}/api/v1/models/{model}/deployments", app.url))
                        .bearer_auth(ADMIN_KEY)
                        .header("idempotency-key", format!("key-{model}"))
                        .json(&body())
                        .send()
                        .await
                        .expect("the API answers");
                    let (status, body) = record(&outcomes, response).await;
                    match status {
                        200 | 202 => break,
                        503 => tokio::time::sleep(Duration::from_millis(150)).await,
                        _ => {
                            unexpected.push(format!("{model}: {status} {body}"));
                            break;
                        }
                    }
                }
                for path in [
                    format!("/api/v1/models/{model}"),
                    "/api/v1/models".to_owned(),
                ] {
                    let response = client
                        .get(format!("{}{path}", app.url))
                        .bearer_auth(READ_KEY)
                        .send()
                        .await
                        .expect("the API answers");
                    record(&outcomes, response).await;
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            unexpected
        })
    };

    let terminate = Statement::from_string(
        admin.get_database_backend(),
        format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{db_name}' AND pid <> pg_backend_pid()"
        ),
    );
    let (mut terminated, mut cuts) = (0usize, 0usize);
    let (mut ready_down, mut read_down) = (Vec::new(), Vec::new());
    let chaos_start = Instant::now();
    while chaos_start.elapsed() < CHAOS {
        let rows = admin
            .query_all_raw(terminate.clone())
            .await
            .expect("terminate");
        terminated += rows.len();
        let second = chaos_start.elapsed().as_secs();
        if (second == 4 && cuts == 0) || (second == 12 && cuts == 1) {
            proxy.cut();
            cuts += 1;
            let probe_start = Instant::now();
            let ready = app
                .client
                .get(format!("{}/ready", app.url))
                .send()
                .await
                .expect("ready");
            let status = ready.status().as_u16();
            let body: Value = ready.json().await.expect("ready json");
            ready_down.push((status, body["checks"]["database"].clone()));
            let read = app.get("/api/v1/models", READ_KEY).await;
            let (status, retry) = (
                read.status().as_u16(),
                read.headers().get("retry-after").cloned(),
            );
            let body: Value = read.json().await.expect("error json");
            read_down.push((status, body["error"].clone(), retry));
            tokio::time::sleep(OUTAGE.saturating_sub(probe_start.elapsed())).await;
            proxy.restore();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let unexpected = traffic.await.expect("traffic task");

    // Everything settles once the database stays up.
    let settled = loop {
        let rows = deployed_models::Entity::find()
            .all(&app.db.conn)
            .await
            .expect("list deployments");
        let live = queue_messages::Entity::find()
            .all(&app.db.conn)
            .await
            .expect("list queue")
            .iter()
            .filter(|m| m.dead_at.is_none())
            .count();
        let done = rows
            .iter()
            .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
            .count();
        if done == rows.len() && rows.len() >= DEPLOYMENTS && live == 0 {
            break rows;
        }
        assert!(
            started.elapsed() < LIMIT,
            "not settled in {LIMIT:?}: {done}/{} settled, {live} live messages",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for handle in loops {
        handle.await.expect("worker loop");
    }
    let ready_after = app
        .client
        .get(format!("{}/ready", app.url))
        .send()
        .await
        .expect("ready");
    let read_after = app.get("/api/v1/models", READ_KEY).await;

    // Assert
    let dead = queue_messages::Entity::find()
        .all(&app.db.conn)
        .await
        .expect("list queue")
        .iter()
        .filter(|m| m.dead_at.is_some())
        .count();
    let mut per_model: BTreeMap<&str, usize> = BTreeMap::new();
    for row in &settled {
        *per_model.entry(row.model_id.as_str()).or_default() += 1;
    }
    let deployed: BTreeSet<String> = settled
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
    let orphaned = held.difference(&deployed).count();
    let terminal = settled
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    let lost = (0..DEPLOYMENTS)
        .filter(|i| {
            let model = format!("pg-fault-{i:02}");
            !settled
                .iter()
                .any(|r| r.model_id == model && r.status == DeploymentStatus::Deployed)
        })
        .count();
    let outcomes = outcomes.lock().await.clone();
    tests::fault::report(&format!(
        "fault postgres: requested {DEPLOYMENTS} / terminal {terminal} / orphaned {orphaned} / \
         lost {lost} ({terminated} backends terminated, {cuts} outages, proxy (accepted, \
         refused) {:?}, {} worker loop errors, client outcomes {outcomes:?}, {:.1} s)",
        proxy.counts(),
        worker_errors.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    ));
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
    let allowed = ["200", "202", "503 SERVICE_UNAVAILABLE"];
    let bad: Vec<_> = outcomes
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "answers other than 2xx and 503 SERVICE_UNAVAILABLE: {bad:?}"
    );
    assert!(terminated > 0, "pg_terminate_backend ended no backend");
    for (status, check) in &ready_down {
        assert_eq!(
            (*status, check.as_str()),
            (503, Some("unreachable")),
            "/ready while away"
        );
    }
    for (status, code, retry) in &read_down {
        assert_eq!(*status, 503, "a read while the database is away");
        assert_eq!(code, "SERVICE_UNAVAILABLE");
        assert_eq!(retry.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
    }
    assert_eq!(cuts, 2);
    assert_eq!(
        ready_after.status(),
        200,
        "/ready after the database came back"
    );
    assert_eq!(
        read_after.status(),
        200,
        "reads after the database came back"
    );
    assert_eq!(
        settled.len(),
        DEPLOYMENTS,
        "one deployment per request: {per_model:?}"
    );
    assert!(per_model.values().all(|n| *n == 1), "{per_model:?}");
    assert_eq!((terminal, lost, orphaned), (DEPLOYMENTS, 0, 0));
    assert_eq!(held, deployed, "emulator endpoints = deployed deployments");
    assert_eq!(dead, 0, "dead-lettered commands");
    if let Ok(app) = Arc::try_unwrap(app) {
        app.db.drop_database().await;
    }
}
