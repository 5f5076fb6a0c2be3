//! The write routes: deploy (validation, 202 + Location, Idempotency-Key), undeploy,
//! rollback (reactivate a running version, or redeploy a stopped one), status, costs and
//! the admin dead-letter routes.

use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, READ_KEY, TestApp, assert_error};
use tests::db::Engine;

fn hf_body(version: &str) -> Value {
    json!({"model_version": version, "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification", "instance": {"size": "x4"}, "scaling": {"min_replica": 1, "max_replica": 2}})
}

#[tokio::test]
async fn deploy_answers_202_with_location_and_the_pending_deployment() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let response = app
        .post(
            "/api/v1/models/fraud-detector/deployments",
            ADMIN_KEY,
            &hf_body("1"),
        )
        .await;

    assert_eq!(response.status(), 202);
    let location = response.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = response.json().await.expect("json");
    let d = &body["deployment"];
    assert_eq!(
        location,
        format!("/api/v1/deployments/{}", d["id"].as_str().expect("id"))
    );
    assert_eq!(
        (d["status"].as_str(), d["instance_size"].as_str()),
        (Some("pending"), Some("x4"))
    );
    assert_eq!(
        d["hourly_cost_usd"],
        json!(0.268),
        "x4 intel-spr is 0.134/h × 2 replicas at most"
    );
    let fetched = app.get(&location, READ_KEY).await;
    assert_eq!(fetched.status(), 200);
}

#[tokio::test]
async fn deploy_requests_are_validated_before_anything_is_queued() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let no_repo = json!({"task": "text-classification"});
    let bad_size = json!({"repository": "a/b", "instance": {"size": "x64"}});
    let bad_task = json!({"repository": "a/b", "task": "teleportation"});
    let bad_provider = json!({"repository": "a/b", "provider": "sagemaker"});
    let typo = json!({"repository": "a/b", "instnace": {}});

    for (body, needle) in [
        (no_repo, "repository"),
        (bad_size, "x64"),
        (bad_task, "teleportation"),
        (bad_provider, "sagemaker"),
        (typo, "instnace"),
    ] {
        let response = app
            .post(
                "/api/v1/models/fraud-detector/deployments",
                ADMIN_KEY,
                &body,
            )
            .await;
        let error = assert_error(response, 422, "VALIDATION_ERROR").await;
        assert!(
            error["detail"].as_str().expect("detail").contains(needle),
            "{body} ⇒ {error}"
        );
    }
    let forbidden = app
        .post(
            "/api/v1/models/fraud-detector/deployments",
            READ_KEY,
            &hf_body("1"),
        )
        .await;
    assert_error(forbidden, 403, "FORBIDDEN").await;
    let listed: Value = app
        .get("/api/v1/models", READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["total"], 0, "nothing was written");
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_deployment() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let url = format!("{}/api/v1/models/fraud-detector/deployments", app.url);
    let send = |key: &'static str, version: &str| {
        app.client
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", key)
            .json(&hf_body(version))
            .send()
    };

    let first = send("req-1", "1").await.expect("req");
    let again = send("req-1", "1").await.expect("req");
    // Another key with the same body would be answered with the deploy in flight
    // (model_operations.rs); another version is a new deployment.
    let other = send("req-2", "2").await.expect("req");

    assert_eq!(
        (
            first.status().as_u16(),
            again.status().as_u16(),
            other.status().as_u16()
        ),
        (202, 200, 202)
    );
    let id = |v: Value| v["deployment"]["id"].as_str().expect("id").to_owned();
    let (a, b, c) = (
        id(first.json().await.expect("json")),
        id(again.json().await.expect("json")),
        id(other.json().await.expect("json")),
    );
    assert_eq!(a, b);
    assert_ne!(a, c);
    app.db.drop_database().await;
}

/// Deployments the model had after the keyed request, more than any listing bound (the
/// lookup used to read the model's newest 10,000 rows and missed an older key).
const LATER_DEPLOYMENTS: usize = 10_001;

#[tokio::test]
async fn an_idempotency_key_is_found_however_many_deployments_came_after_it() {
    use sea_orm::{ActiveModelTrait, EntityTrait, IntoActiveModel, Set};
    use shared::db::entities::deployed_models;

    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let url = format!("{}/api/v1/models/fraud-detector/deployments", app.url);
    let send = || {
        app.client
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", "req-old")
            .json(&hf_body("1"))
            .send()
    };
    let first = send().await.expect("req");
    assert_eq!(first.status(), 202);
    let id: Value = first.json().await.expect("json");
    let id = id["deployment"]["id"].as_str().expect("id").to_owned();
    let original = deployed_models::Entity::find_by_id(uuid::Uuid::parse_str(&id).expect("uuid"))
        .one(&app.db.conn)
        .await
        .expect("read")
        .expect("the keyed deployment");
    let later: Vec<deployed_models::ActiveModel> = (0..LATER_DEPLOYMENTS)
        .map(|i| {
            let mut row = original.clone().into_active_model();
            row.id = Set(uuid::Uuid::now_v7());
            row.idempotency_key = Set(None);
            row.is_active = Set(false);
            row.created_at = Set(original.created_at + chrono::Duration::seconds(1 + i as i64));
            row.reset_all()
        })
        .collect();
    for chunk in later.chunks(500) {
        deployed_models::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(&app.db.conn)
            .await
            .expect("insert later deployments");
    }

    let again = send().await.expect("req");
    assert_eq!(again.status(), 200, "the retry finds its deployment");
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["deployment"]["id"], id.as_str());
    println!(
        "retry answered with the deployment of its key after {LATER_DEPLOYMENTS} later deployments of the model"
    );
}

#[tokio::test]
async fn undeploy_stops_serving_and_the_endpoint_goes_away() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    let id = app
        .deploy_and_serve(&worker, "fraud-detector", hf_body("1"))
        .await;

    let response = app
        .client
        .delete(format!(
            "{}/api/v1/models/fraud-detector/deployment",
            app.url
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("req");
    assert_eq!(response.status(), 202);
    let predict = app
        .post(
            "/api/v1/models/fraud-detector/predict",
            ADMIN_KEY,
            &json!({"inputs": "x"}),
        )
        .await;
    let stopped = app
        .work_until(&worker, &id, |d| {
            d.status == shared::domain::DeploymentStatus::Stopped
        })
        .await;
    let again = app
        .client
        .delete(format!(
            "{}/api/v1/models/fraud-detector/deployment",
            app.url
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("req");
    let status: Value = app
        .get("/api/v1/models/fraud-detector/status", READ_KEY)
        .await
        .json()
        .await
        .expect("json");

    assert!(!stopped.is_active);
    assert!(app.emulator.endpoints().is_empty());
    assert!(
        predict.status() == 200 || predict.status() == 404,
        "served from cache or gone"
    );
    assert_error(again, 404, "MODEL_NOT_DEPLOYED").await;
    assert_eq!(
        (
            status["status"].as_str(),
            status["database_status"].as_str()
        ),
        (Some("stopped"), Some("stopped"))
    );
}

#[tokio::test]
async fn rollback_reactivates_a_running_previous_version() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    let v1 = app
        .deploy_and_serve(&worker, "fraud-detector", hf_body("1"))
        .await;
    let v2 = app
        .deploy_and_serve(&worker, "fraud-detector", hf_body("2"))
        .await;

    let response = app
        .post(
            "/api/v1/models/fraud-detector/rollback",
            ADMIN_KEY,
            &json!({}),
        )
        .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        (body["action"].as_str(), body["deployment"]["id"].as_str()),
        (Some("reactivated"), Some(v1.as_str()))
    );
    let status: Value = app
        .get("/api/v1/models/fraud-detector/status", READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (status["status"].as_str(), status["deployment_id"].as_str()),
        (Some("serving"), Some(v1.as_str()))
    );
    let replaced: Value = app
        .get(&format!("/api/v1/deployments/{v2}"), READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(replaced["is_active"], false);
}

#[tokio::test]
async fn rollback_redeploys_a_version_that_no_longer_runs() {
    let app = TestApp::start(Engine::Sqlite, &[("RETIRE_AFTER_SECONDS", "0")]).await;
    let worker = app.worker();
    let v1 = app
        .deploy_and_serve(&worker, "fraud-detector", hf_body("1"))
        .await;
    app.deploy_and_serve(&worker, "fraud-detector", hf_body("2"))
        .await;
    app.work_until(&worker, &v1, |d| {
        d.status == shared::domain::DeploymentStatus::Stopped
    })
    .await;

    let response = app
        .post(
            "/api/v1/models/fraud-detector/rollback",
            ADMIN_KEY,
            &json!({}),
        )
        .await;

    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["action"], "redeploying");
    let new_id = body["deployment"]["id"].as_str().expect("id").to_owned();
    let serving = app.work_until(&worker, &new_id, |d| d.is_active).await;
    assert_eq!(serving.model_version.as_deref(), Some("1"));
    let none = TestApp::start(Engine::Sqlite, &[]).await;
    assert_error(
        none.post(
            "/api/v1/models/fraud-detector/rollback",
            ADMIN_KEY,
            &json!({}),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn costs_show_hourly_burn_and_accrued_cost_per_model() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    app.deploy_and_serve(&worker, "fraud-detector", hf_body("1"))
        .await;

    let costs: Value = app
        .get("/api/v1/costs", READ_KEY)
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(costs["currency"], "USD");
    assert_eq!(costs["current_hourly_usd"], json!(0.268));
    let model = &costs["models"][0];
    assert_eq!(model["model_id"], "fraud-detector");
    assert!(model["accrued_cost_usd"].as_f64().is_some_and(|c| c >= 0.0));
    assert_eq!(model["deployments"].as_array().expect("array").len(), 1);
    assert_eq!(
        costs["month"],
        chrono::Utc::now().format("%Y-%m").to_string()
    );
    assert_eq!(
        costs["month_to_date_cost_usd"], costs["accrued_cost_usd"],
        "deployed this month: all of it is this month's"
    );
    assert_eq!(model["idle"], false, "just deployed");
    assert_eq!(model["last_prediction_at"], Value::Null);
    assert_eq!(costs["idle_after_hours"], 24);
}

#[tokio::test]
async fn costs_flag_idle_billing_deployments_and_count_the_month() {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use shared::db::entities::deployed_models::{Column, Entity};
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    let quiet = app
        .deploy_and_serve(&worker, "quiet-model", hf_body("1"))
        .await;
    app.deploy_and_serve(&worker, "model-a", hf_body("1")).await;
    let r = app
        .post(
            "/api/v1/models/model-a/predict",
            ADMIN_KEY,
            &json!({"inputs": "hello"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    // The quiet model was deployed 30 hours ago and never answered a prediction.
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(30);
    let quiet: uuid::Uuid = quiet.parse().expect("uuid");
    Entity::update_many()
        .col_expr(Column::DeployedAt, Expr::value(long_ago))
        .col_expr(Column::CreatedAt, Expr::value(long_ago))
        .filter(Column::Id.eq(quiet))
        .exec(&app.db.conn)
        .await
        .expect("age the quiet deployment");

    let costs: Value = app
        .get("/api/v1/costs", READ_KEY)
        .await
        .json()
        .await
        .expect("json");

    let model = |name: &str| {
        costs["models"]
            .as_array()
            .expect("models")
            .iter()
            .find(|m| m["model_id"] == name)
            .cloned()
            .expect("model listed")
    };
    let quiet_model = model("quiet-model");
    assert_eq!(quiet_model["idle"], true, "{quiet_model}");
    assert_eq!(quiet_model["deployments"][0]["idle"], true);
    let busy = model("model-a");
    assert_eq!(busy["idle"], false, "{busy}");
    assert!(
        busy["last_prediction_at"].is_string(),
        "the prediction is known at once: {busy}"
    );
    assert_eq!(
        costs["idle_hourly_usd"], quiet_model["current_hourly_usd"],
        "the quiet endpoint burns, idle"
    );
    assert!(
        costs["idle_hourly_usd"]
            .as_f64()
            .is_some_and(|usd| usd > 0.0)
    );
}

#[tokio::test]
async fn admins_list_replay_and_purge_dead_letters() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    let queue = worker.queue();
    queue
        .publish_bytes(b"not an envelope".to_vec(), None)
        .await
        .expect("publish");
    queue
        .publish_bytes(b"also garbage".to_vec(), None)
        .await
        .expect("publish");
    for _ in 0..4 {
        worker.consumer().try_process_one().await.expect("queue");
    }

    let listed: Value = app
        .get("/api/v1/admin/dlq", ADMIN_KEY)
        .await
        .json()
        .await
        .expect("json");
    let forbidden = app.get("/api/v1/admin/dlq", READ_KEY).await;
    // Found by fuzz_api: a limit above i64::MAX once panicked in the SQLite binding.
    let huge: Value = app
        .get("/api/v1/admin/dlq?limit=9223372036854775808", ADMIN_KEY)
        .await
        .json()
        .await
        .expect("a huge limit lists everything");
    assert_eq!(huge, listed);
    let ids: Vec<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect();
    let replayed = app
        .post(
            "/api/v1/admin/dlq/replay",
            ADMIN_KEY,
            &json!({"ids": [ids[0]]}),
        )
        .await;
    let purge = |id: String| {
        app.client
            .delete(format!("{}/api/v1/admin/dlq/{id}", app.url))
            .bearer_auth(ADMIN_KEY)
            .send()
    };
    let purged = purge(ids[1].clone()).await.expect("req");
    let unknown = purge("no-such-id".into()).await.expect("req");

    assert_eq!(ids.len(), 2, "{listed}");
    for field in [
        "id",
        "queue",
        "kind",
        "deployment_id",
        "attempts",
        "last_error",
        "dead_lettered_at",
    ] {
        assert!(
            listed[0].get(field).is_some(),
            "dead letter lacks {field}: {listed}"
        );
    }
    assert!(
        listed[0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("undecodable")),
        "{listed}"
    );
    assert_error(forbidden, 403, "FORBIDDEN").await;
    assert_eq!(replayed.status(), 200);
    assert_eq!(purged.status(), 204);
    assert_error(unknown, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn a_json_null_deploy_body_means_no_body() {
    // The document declares the body optional: `null` is a valid request, like no body.
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let response = app
        .client
        .post(format!("{}/api/v1/models/null-body/deployments", app.url))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body("null")
        .send()
        .await
        .expect("request");
    // No repository anywhere: refused for that, not for the null.
    let body = assert_error(response, 422, "VALIDATION_ERROR").await;
    assert!(
        body["detail"].as_str().unwrap().contains("repository"),
        "{body}"
    );
}
