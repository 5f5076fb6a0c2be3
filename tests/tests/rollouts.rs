//! Canary rollouts (docs/design/rollouts.md) through the real API, worker and reconciler
//! against the HF emulator: a healthy canary goes 10 → 50 → 100 by itself and the old version
//! is retired, with the traffic split by the weights at each step; a canary whose endpoint
//! answers errors (emulator chaos) is rolled back at the end of its bake period; operators
//! promote and abort; bad rollouts and verbs without a rollout are refused.
//!
//! Each prints `rollout <name>: …` with counts computed from the answers and the database.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use shared::db::deployments;
use shared::domain::{DeploymentId, DeploymentStatus};
use tests::app::{ADMIN_KEY, READ_KEY, TestApp, assert_error};
use tests::db::Engine;
use worker::Worker;

/// The routing cache's TTL (2 s) and a margin: a decision is visible to predict after it.
const ROUTING_TTL: Duration = Duration::from_millis(2_300);
/// Longer than the API's measurement flush (1 s).
const FLUSH: Duration = Duration::from_millis(1_300);

fn version(v: &str) -> Value {
    json!({"model_version": v, "task": "text-classification",
           "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english"})
}

fn canary(v: &str, rollout: Value) -> Value {
    let mut body = version(v);
    body["rollout"] = rollout;
    body
}

async fn started() -> (TestApp, Worker) {
    let app = TestApp::start(Engine::Sqlite, &[("RETIRE_AFTER_SECONDS", "0")]).await;
    let worker = app.worker();
    (app, worker)
}

/// Deploys `body` as a canary of `model` and drives the worker until it is deployed (beside
/// the stable version); returns its id.
async fn deploy_canary(app: &TestApp, worker: &Worker, model: &str, body: Value) -> String {
    let response = app
        .post(
            &format!("/api/v1/models/{model}/deployments"),
            ADMIN_KEY,
            &body,
        )
        .await;
    assert_eq!(response.status(), 202, "canary deploy accepted");
    let created: Value = response.json().await.expect("json");
    let id = created["deployment"]["id"].as_str().expect("id").to_owned();
    let row = app
        .work_until(worker, &id, |d| {
            d.status != DeploymentStatus::Pending && d.status != DeploymentStatus::Deploying
        })
        .await;
    assert_eq!(row.status, DeploymentStatus::Deployed, "{row:?}");
    assert!(!row.is_active, "a canary is not the active version");
    id
}

/// Sends `n` predictions; answers per serving deployment id (`error` for failures).
async fn predictions(app: &TestApp, model: &str, n: usize) -> HashMap<String, usize> {
    let mut served = HashMap::new();
    for _ in 0..n {
        let response = app
            .post(
                &format!("/api/v1/models/{model}/predict"),
                ADMIN_KEY,
                &json!({"inputs": "I love this"}),
            )
            .await;
        let key = if response.status() == 200 {
            let body: Value = response.json().await.expect("json");
            body["metadata"]["deployment_id"]
                .as_str()
                .expect("id")
                .to_owned()
        } else {
            "error".to_owned()
        };
        *served.entry(key).or_default() += 1;
    }
    served
}

async fn rollout(app: &TestApp, model: &str) -> Value {
    let response = app
        .get(&format!("/api/v1/models/{model}/rollout"), READ_KEY)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.expect("json")
}

async fn event_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let id = DeploymentId(id.parse().expect("uuid"));
    deployments::events(&app.db.conn, id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

async fn pass(worker: &Worker) -> usize {
    worker
        .reconciler()
        .pass()
        .await
        .expect("pass")
        .rollout_decisions
}

fn share(served: &HashMap<String, usize>, id: &str, n: usize) -> f64 {
    100.0 * served.get(id).copied().unwrap_or(0) as f64 / n as f64
}

#[tokio::test]
async fn a_healthy_canary_goes_10_50_100_by_itself_and_the_old_version_is_retired() {
    let (app, worker) = started().await;
    let v1 = app
        .deploy_and_serve(&worker, "sentiment", version("1"))
        .await;
    let spec = json!({"strategy": "canary", "steps": [10, 50, 100], "bake_seconds": 1,
                      "max_error_rate": 0.1, "min_requests": 20});
    let v2 = deploy_canary(&app, &worker, "sentiment", canary("2", spec)).await;
    const N: usize = 1_000;

    let first = rollout(&app, "sentiment").await;
    let at_10 = predictions(&app, "sentiment", N).await;
    tokio::time::sleep(FLUSH).await;
    let decided_first = pass(&worker).await;
    let second = rollout(&app, "sentiment").await;
    tokio::time::sleep(ROUTING_TTL).await;
    let at_50 = predictions(&app, "sentiment", N).await;
    tokio::time::sleep(FLUSH).await;
    let decided_second = pass(&worker).await;
    let last = rollout(&app, "sentiment").await;
    tokio::time::sleep(ROUTING_TTL).await;
    let after = predictions(&app, "sentiment", 100).await;
    let old = app
        .work_until(&worker, &v1, |d| d.status == DeploymentStatus::Stopped)
        .await;

    let (s10, s50) = (share(&at_10, &v2, N), share(&at_50, &v2, N));
    let rollout_id = uuid::Uuid::parse_str(first["id"].as_str().expect("id")).expect("uuid");
    let rows = {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        use shared::db::entities::rollout_measurements as m;
        m::Entity::find()
            .filter(m::Column::RolloutId.eq(rollout_id))
            .all(&app.db.conn)
            .await
            .expect("measurement rows")
    };
    let measured: i64 = rows.iter().map(|r| r.requests).sum();
    println!(
        "rollout healthy: {} measurement rows hold {measured} requests",
        rows.len()
    );
    println!(
        "rollout healthy: canary share {s10:.1}% at step 10, {s50:.1}% at step 50, \
         {} of {} after promotion; errors {}/{}/{}; decisions {decided_first}+{decided_second}",
        after.get(&v2).copied().unwrap_or(0),
        after.values().sum::<usize>(),
        at_10.get("error").copied().unwrap_or(0),
        at_50.get("error").copied().unwrap_or(0),
        after.get("error").copied().unwrap_or(0),
    );
    assert_eq!(
        (first["weight"].as_u64(), first["state"].as_str()),
        (Some(10), Some("running")),
        "{first}"
    );
    assert!((s10 - 10.0).abs() <= 10.0, "step 10: {s10}% {at_10:?}");
    assert!((s50 - 50.0).abs() <= 10.0, "step 50: {s50}% {at_50:?}");
    assert_eq!((decided_first, decided_second), (1, 1));
    // One row per (deployment, step) for this one API process, however many flushes ran;
    // their totals are exactly the requests routed during the rollout.
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(measured, 2 * N as i64);
    assert_eq!(second["weight"], 50, "{second}");
    assert_eq!(
        second["figures"]["canary"]["requests"], 0,
        "a new step starts counting anew"
    );
    assert_eq!(last["state"], "promoted", "{last}");
    assert_eq!(after.get(&v2).copied(), Some(100), "{after:?}");
    assert_eq!(old.status, DeploymentStatus::Stopped);
    let kinds = event_kinds(&app, &v2).await;
    for kind in ["rollout_started", "rollout_step", "rollout_promoted"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing: {kinds:?}");
    }
}

#[tokio::test]
async fn a_canary_answering_errors_is_rolled_back_at_the_end_of_its_bake_period() {
    let (app, worker) = started().await;
    let v1 = app
        .deploy_and_serve(&worker, "sentiment", version("1"))
        .await;
    let spec = json!({"strategy": "canary", "steps": [50, 100], "bake_seconds": 1,
                      "max_error_rate": 0.1, "min_requests": 10});
    let v2 = deploy_canary(&app, &worker, "sentiment", canary("2", spec)).await;
    let endpoint = deployments::get(&app.db.conn, DeploymentId(v2.parse().expect("uuid")))
        .await
        .expect("get")
        .expect("row")
        .provider_model_id
        .expect("endpoint name");
    let chaos = reqwest::Client::new()
        .post(format!(
            "{}/_emulator/endpoints/{}/{endpoint}/chaos",
            app.emulator.base_url,
            shared::provider::config::EMULATOR_NAMESPACE
        ))
        .json(&json!({"predict_error_rate": 1.0}))
        .send()
        .await
        .expect("chaos");
    assert_eq!(chaos.status(), 200);

    let during = predictions(&app, "sentiment", 100).await;
    tokio::time::sleep(FLUSH).await;
    let decided = pass(&worker).await;
    let aborted = rollout(&app, "sentiment").await;
    let canary_row = app
        .work_until(&worker, &v2, |d| d.status == DeploymentStatus::Failed)
        .await;
    tokio::time::sleep(ROUTING_TTL).await;
    let after = predictions(&app, "sentiment", 200).await;

    let failed = during.get("error").copied().unwrap_or(0);
    println!(
        "rollout failing canary: {failed} of 100 failed during the step ({} served by v1); \
         after the decision {} of 200 served by v1, {} by the canary",
        during.get(&v1).copied().unwrap_or(0),
        after.get(&v1).copied().unwrap_or(0),
        after.get(&v2).copied().unwrap_or(0),
    );
    assert!(failed > 20, "the canary's share failed: {during:?}");
    assert_eq!(decided, 1);
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    assert!(
        aborted["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("error rate")),
        "{aborted}"
    );
    assert_eq!(after.get(&v1).copied(), Some(200), "{after:?}");
    assert!(
        canary_row
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("max_error_rate")),
        "{canary_row:?}"
    );
    let kinds = event_kinds(&app, &v2).await;
    assert!(kinds.iter().any(|k| k == "rollout_aborted"), "{kinds:?}");
    let v1_row = deployments::get(&app.db.conn, DeploymentId(v1.parse().expect("uuid")))
        .await
        .expect("get")
        .expect("row");
    assert!(v1_row.is_active && v1_row.status == DeploymentStatus::Deployed);
}

#[tokio::test]
async fn operators_promote_and_abort_and_a_rollback_waits_for_the_rollout() {
    let (app, worker) = started().await;
    app.deploy_and_serve(&worker, "sentiment", version("1"))
        .await;
    let spec = json!({"strategy": "canary", "steps": [10, 100], "bake_seconds": 3600});
    let v2 = deploy_canary(&app, &worker, "sentiment", canary("2", spec.clone())).await;

    let rollback = app
        .post("/api/v1/models/sentiment/rollback", ADMIN_KEY, &json!({}))
        .await;
    let asked = app
        .post(
            "/api/v1/models/sentiment/rollout/promote",
            ADMIN_KEY,
            &json!({}),
        )
        .await;
    let asked_status = asked.status();
    let asked: Value = asked.json().await.expect("json");
    let undecided = rollout(&app, "sentiment").await;
    let decided = pass(&worker).await;
    let promoted = rollout(&app, "sentiment").await;
    let v3 = deploy_canary(&app, &worker, "sentiment", canary("3", spec)).await;
    let abort = app
        .post(
            "/api/v1/models/sentiment/rollout/abort",
            ADMIN_KEY,
            &json!({}),
        )
        .await;
    let abort_status = abort.status();
    let aborted_decisions = pass(&worker).await;
    let aborted = rollout(&app, "sentiment").await;
    let v3_row = app
        .work_until(&worker, &v3, |d| d.status == DeploymentStatus::Failed)
        .await;
    let v2_row = deployments::get(&app.db.conn, DeploymentId(v2.parse().expect("uuid")))
        .await
        .expect("get")
        .expect("row");

    println!(
        "rollout operators: promote {} then {}, abort {} then {}; decisions {decided}+{aborted_decisions}",
        asked_status, promoted["state"], abort_status, aborted["state"]
    );
    assert_error(rollback, 409, "CONFLICT").await;
    assert_eq!(asked_status, 202);
    assert_eq!(asked["requested"], "promote", "{asked}");
    assert_eq!(
        undecided["state"], "running",
        "carried out by the reconciler"
    );
    assert_eq!(decided, 1);
    assert_eq!(promoted["state"], "promoted", "{promoted}");
    assert_eq!(abort_status, 202);
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    assert_eq!(aborted["canary_deployment_id"], v3, "{aborted}");
    assert_eq!(v3_row.status, DeploymentStatus::Failed);
    assert!(
        v2_row.is_active,
        "the promoted version still serves: {v2_row:?}"
    );
}

#[tokio::test]
async fn bad_rollouts_are_422_and_verbs_without_a_rollout_409() {
    let (app, worker) = started().await;
    let first = app
        .post(
            "/api/v1/models/fresh/deployments",
            ADMIN_KEY,
            &canary("1", json!({"strategy": "canary"})),
        )
        .await;
    app.deploy_and_serve(&worker, "sentiment", version("1"))
        .await;
    let cases = [
        (
            json!({"strategy": "canary", "steps": [50, 10, 100]}),
            "rollout.steps[1]",
        ),
        (
            json!({"strategy": "canary", "steps": [10, 50]}),
            "rollout.steps",
        ),
        (
            json!({"strategy": "canary", "steps": [0, 100]}),
            "rollout.steps[0]",
        ),
        (
            json!({"strategy": "canary", "bake_seconds": -5}),
            "rollout.bake_seconds",
        ),
        (
            json!({"strategy": "canary", "max_error_rate": 2}),
            "rollout.max_error_rate",
        ),
        (json!({"strategy": "mirror"}), "rollout.strategy"),
        (json!(["canary"]), "rollout"),
    ];
    let mut refused = 0;
    for (rollout, field) in &cases {
        let response = app
            .post(
                "/api/v1/models/sentiment/deployments",
                ADMIN_KEY,
                &canary("2", rollout.clone()),
            )
            .await;
        let body = assert_error(response, 422, "VALIDATION_ERROR").await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.starts_with(field), "{field}: {detail}");
        refused += 1;
    }
    let promote = app
        .post(
            "/api/v1/models/sentiment/rollout/promote",
            ADMIN_KEY,
            &json!({}),
        )
        .await;
    let abort = app
        .post(
            "/api/v1/models/sentiment/rollout/abort",
            ADMIN_KEY,
            &json!({}),
        )
        .await;
    let none = app.get("/api/v1/models/sentiment/rollout", READ_KEY).await;

    println!(
        "rollout bad input: {refused} of {} refused with 422",
        cases.len()
    );
    let body = assert_error(first, 422, "VALIDATION_ERROR").await;
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("no stable")),
        "{body}"
    );
    assert_error(promote, 409, "CONFLICT").await;
    assert_error(abort, 409, "CONFLICT").await;
    assert_error(none, 404, "NOT_FOUND").await;
}

/// Sends `n` predictions as `key` with `headers`; answers per serving deployment id or status.
async fn predictions_as(
    app: &TestApp,
    model: &str,
    key: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> HashMap<String, usize> {
    let mut served = HashMap::new();
    for _ in 0..n {
        let mut request = app
            .client
            .post(format!("{}/api/v1/models/{model}/predict", app.url))
            .bearer_auth(key)
            .json(&json!({"inputs": "I love this"}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("predict");
        let key = if response.status() == 200 {
            let body: Value = response.json().await.expect("json");
            body["metadata"]["deployment_id"]
                .as_str()
                .expect("id")
                .to_owned()
        } else {
            response.status().as_u16().to_string()
        };
        *served.entry(key).or_default() += 1;
    }
    served
}

#[tokio::test]
async fn a_sticky_key_stays_on_one_version_and_a_forced_track_needs_model_write() {
    let app = TestApp::start(Engine::Sqlite, &[("ROLLOUT_STICKY", "true")]).await;
    let worker = app.worker();
    let v1 = app.deploy_and_serve(&worker, "model-a", version("1")).await;
    let spec = json!({"strategy": "canary", "steps": [50, 100], "bake_seconds": 3600});
    let v2 = deploy_canary(&app, &worker, "model-a", canary("2", spec)).await;

    let sticky_admin = predictions_as(&app, "model-a", ADMIN_KEY, &[], 40).await;
    let sticky_model_a = predictions_as(&app, "model-a", tests::app::MODEL_A_KEY, &[], 40).await;
    let forced_canary = predictions_as(
        &app,
        "model-a",
        ADMIN_KEY,
        &[("x-hokusai-track", "canary")],
        20,
    )
    .await;
    let forced_stable = predictions_as(
        &app,
        "model-a",
        ADMIN_KEY,
        &[("x-hokusai-track", "stable")],
        20,
    )
    .await;
    let forced_without_write = predictions_as(
        &app,
        "model-a",
        tests::app::MODEL_A_KEY,
        &[("x-hokusai-track", "canary")],
        1,
    )
    .await;
    let bogus = predictions_as(
        &app,
        "model-a",
        ADMIN_KEY,
        &[("x-hokusai-track", "both")],
        1,
    )
    .await;
    tokio::time::sleep(FLUSH).await;
    let figures = rollout(&app, "model-a").await;

    println!(
        "rollout sticky/forced: admin key {sticky_admin:?}, model-a key {sticky_model_a:?}, \
         forced canary {forced_canary:?}, forced stable {forced_stable:?}"
    );
    assert_eq!(
        sticky_admin.len(),
        1,
        "one version per key: {sticky_admin:?}"
    );
    assert_eq!(
        sticky_model_a.len(),
        1,
        "one version per key: {sticky_model_a:?}"
    );
    assert_eq!(
        forced_canary.get(&v2).copied(),
        Some(20),
        "{forced_canary:?}"
    );
    assert_eq!(
        forced_stable.get(&v1).copied(),
        Some(20),
        "{forced_stable:?}"
    );
    assert_eq!(
        forced_without_write.get("403").copied(),
        Some(1),
        "{forced_without_write:?}"
    );
    assert_eq!(bogus.get("422").copied(), Some(1), "{bogus:?}");
    // Forced requests count like any other: 20 on each side at least.
    let canary_requests = figures["figures"]["canary"]["requests"]
        .as_u64()
        .unwrap_or(0);
    let stable_requests = figures["figures"]["stable"]["requests"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(canary_requests + stable_requests, 120, "{figures}");
    assert!(canary_requests >= 20 && stable_requests >= 20, "{figures}");
}

#[tokio::test]
async fn shadow_traffic_never_changes_the_callers_answer_and_a_failing_shadow_is_rolled_back() {
    let (app, worker) = started().await;
    let v1 = app
        .deploy_and_serve(&worker, "sentiment", version("1"))
        .await;
    let spec = json!({"strategy": "shadow", "steps": [50, 100], "bake_seconds": 1,
                      "max_error_rate": 0.1, "min_requests": 10});
    let v2 = deploy_canary(&app, &worker, "sentiment", canary("2", spec)).await;
    let endpoint = deployments::get(&app.db.conn, DeploymentId(v2.parse().expect("uuid")))
        .await
        .expect("get")
        .expect("row")
        .provider_model_id
        .expect("endpoint name");
    let chaos = reqwest::Client::new()
        .post(format!(
            "{}/_emulator/endpoints/{}/{endpoint}/chaos",
            app.emulator.base_url,
            shared::provider::config::EMULATOR_NAMESPACE
        ))
        .json(&json!({"predict_error_rate": 1.0}))
        .send()
        .await
        .expect("chaos");
    assert_eq!(chaos.status(), 200);

    let during = predictions(&app, "sentiment", 200).await;
    tokio::time::sleep(FLUSH).await;
    let measured = rollout(&app, "sentiment").await;
    let decided = pass(&worker).await;
    let ended = rollout(&app, "sentiment").await;
    let shadow_row = app
        .work_until(&worker, &v2, |d| d.status == DeploymentStatus::Failed)
        .await;

    let copies = measured["figures"]["canary"]["requests"]
        .as_u64()
        .unwrap_or(0);
    let copy_errors = measured["figures"]["canary"]["errors"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "rollout shadow: {} of 200 answered by v1, {} by the shadow, {} failed; the shadow got \
         {copies} copies, {copy_errors} failed; decision: {}",
        during.get(&v1).copied().unwrap_or(0),
        during.get(&v2).copied().unwrap_or(0),
        during.get("error").copied().unwrap_or(0),
        ended["state"]
    );
    assert_eq!(
        during.get(&v1).copied(),
        Some(200),
        "callers get the stable answer: {during:?}"
    );
    assert!(
        (50..=150).contains(&copies),
        "about half copied: {measured}"
    );
    assert_eq!(
        copy_errors, copies,
        "every copy failed at the shadow: {measured}"
    );
    assert_eq!(measured["figures"]["stable"]["requests"], 200, "{measured}");
    assert_eq!(decided, 1);
    assert_eq!(ended["state"], "aborted", "{ended}");
    assert_eq!(shadow_row.status, DeploymentStatus::Failed);
}

/// A decision taken from a stale read writes nothing: an operator's abort recorded while a
/// pass was deciding survives the pass's `advance`, and a rollback under the model's lock
/// refuses while the rollout is open (docs/design/rollouts.md, "Many hands on one model").
#[tokio::test]
async fn a_stale_decision_changes_nothing_and_a_rollback_waits_for_the_rollout() {
    use shared::db::outbox::Route;
    use shared::db::{DbError, operations, rollouts};
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let db = tests::db::TestDb::migrated(engine).await;
        let spec = shared::domain::RolloutSpec::parse(
            &json!({"strategy": "canary", "steps": [10, 100], "bake_seconds": 60}),
        )
        .expect("valid spec");
        let model = shared::domain::ModelId::parse("stale-model").expect("model id");
        let (stable, canary) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let read = rollouts::create(&db.conn, model.as_str(), stable, canary, &spec)
            .await
            .expect("rollout");

        let asked = rollouts::request(&db.conn, model.as_str(), rollouts::Request::Abort)
            .await
            .expect("request");
        let stale = rollouts::advance(&db.conn, &read, 1).await;
        let stored = rollouts::latest_for(&db.conn, model.as_str())
            .await
            .expect("read")
            .expect("the rollout");
        let rollback =
            operations::rollback(&db.conn, Route::Direct, &model, Duration::ZERO, None).await;
        let ended = rollouts::end(&db.conn, &stored, rollouts::state::ABORTED, "test")
            .await
            .expect("the current read ends it");
        let too_late = rollouts::request(&db.conn, model.as_str(), rollouts::Request::Promote)
            .await
            .expect("request");

        println!(
            "rollout stale ({engine:?}): advance from a stale read {:?}; stored step {} \
             requested {:?}; rollback {:?}; promote after the end {:?}",
            stale.as_ref().err(),
            stored.step,
            stored.requested,
            rollback.as_ref().err(),
            too_late.as_ref().map(|r| &r.state)
        );
        assert!(asked.is_some());
        assert!(matches!(stale, Err(DbError::StaleRollout(id)) if id == read.id));
        assert_eq!(
            (stored.step, stored.requested.as_deref()),
            (0, Some("abort"))
        );
        assert!(
            matches!(&rollback, Err(DbError::OperationInFlight { deployment, .. }) if *deployment == canary),
            "{rollback:?}"
        );
        assert_eq!(ended.state, rollouts::state::ABORTED);
        assert!(too_late.is_none(), "no open rollout to ask: {too_late:?}");
        db.drop_database().await;
    }
}
