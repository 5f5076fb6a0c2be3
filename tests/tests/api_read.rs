//! Authentication at the edge and the read routes: models, deployments and event logs.

use shared::db::deployments::{self, NewDeployment};
use shared::db::outbox::Route;
use shared::domain::{DeploymentId, ModelId};
use shared::queue::{Envelope, MessageKind};
use tests::app::{ADMIN_KEY, MODEL_A_KEY, READ_KEY, TestApp, assert_error};
use tests::db::Engine;

async fn seed(app: &TestApp, model: &str) -> deployments::Deployment {
    let new = NewDeployment {
        id: DeploymentId::new(),
        model_id: ModelId::parse(model).expect("id"),
        model_version: Some("1".into()),
        provider: "huggingface".into(),
        instance_type: "intel-spr".into(),
        instance_size: Some("x2".into()),
        vendor: Some("aws".into()),
        region: Some("us-east-1".into()),
        task: Some("text-classification".into()),
        framework: None,
        repository: Some("org/model".into()),
        revision: None,
        metadata: None,
        hourly_cost_usd: Some(0.067),
        idempotency_key: None,
    };
    let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
    deployments::create(&app.db.conn, Route::Direct, new, &command)
        .await
        .expect("seed")
}

#[tokio::test]
async fn keys_are_required_valid_and_scoped() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let url = format!("{}/api/v1/models", app.url);

    let missing = app.client.get(&url).send().await.expect("req");
    let wrong = app.get("/api/v1/models", "hk_test_wrong").await;
    let via_api_key_scheme = app
        .client
        .get(&url)
        .header("authorization", format!("ApiKey {READ_KEY}"))
        .send();
    let via_x_api_key = app.client.get(&url).header("x-api-key", READ_KEY).send();
    let no_read_scope = app.get("/api/v1/models", MODEL_A_KEY).await;

    assert_error(missing, 401, "UNAUTHORIZED").await;
    assert_error(wrong, 401, "UNAUTHORIZED").await;
    assert_eq!(via_api_key_scheme.await.expect("req").status(), 200);
    assert_eq!(via_x_api_key.await.expect("req").status(), 200);
    let body = assert_error(no_read_scope, 403, "FORBIDDEN").await;
    assert!(
        body["detail"].as_str().expect("detail").contains("`read`"),
        "{body}"
    );
}

#[tokio::test]
async fn models_list_shows_one_deployment_per_model_with_filters() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    seed(&app, "fraud-detector").await;
    let newest = seed(&app, "fraud-detector").await;
    seed(&app, "sentiment").await;

    let all: serde_json::Value = app
        .get("/api/v1/models", READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    let pending: serde_json::Value = app
        .get(
            "/api/v1/models?status=pending&provider=huggingface",
            READ_KEY,
        )
        .await
        .json()
        .await
        .expect("json");
    let none: serde_json::Value = app
        .get("/api/v1/models?provider=sagemaker", READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    let bad_status = app.get("/api/v1/models?status=running", READ_KEY).await;

    assert_eq!(all["total"], 2);
    let fraud = all["models"]
        .as_array()
        .expect("array")
        .iter()
        .find(|m| m["model_id"] == "fraud-detector");
    assert_eq!(
        fraud.expect("fraud-detector listed")["id"],
        newest.id.to_string()
    );
    assert_eq!(pending["total"], 2);
    assert_eq!(none["total"], 0);
    assert_error(bad_status, 422, "VALIDATION_ERROR").await;
}

/// The list is chosen by the database, not from the newest rows: a model whose deployments
/// are all older than 10,000 others is still listed, and a model's active deployment is its
/// representative even when a newer one exists.
async fn models_list_reaches_every_model_and_prefers_the_active_deployment(engine: Engine) {
    use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
    use shared::db::entities::deployed_models;
    let app = TestApp::start(engine, &[]).await;
    let quiet = seed(&app, "quiet-model").await;
    let active = seed(&app, "canary-model").await;
    let newer = seed(&app, "canary-model").await;
    deployed_models::Entity::update_many()
        .col_expr(deployed_models::Column::IsActive, true.into())
        .filter(deployed_models::Column::Id.eq(active.id))
        .exec(&app.db.conn)
        .await
        .expect("activate the older canary-model deployment");
    let busy: Vec<deployed_models::ActiveModel> = (1..=10_000i64)
        .map(|i| {
            let mut row: deployed_models::ActiveModel = newer.clone().into();
            row.id = Set(uuid::Uuid::new_v4());
            row.model_id = Set("busy-model".into());
            row.created_at = Set(newer.created_at + chrono::Duration::milliseconds(i));
            row
        })
        .collect();
    let newest_busy = busy.last().map(|row| row.id.clone().unwrap());
    for chunk in busy.chunks(500) {
        deployed_models::Entity::insert_many(chunk.to_vec())
            .exec(&app.db.conn)
            .await
            .expect("10,000 newer deployments of another model");
    }

    let list: serde_json::Value = app
        .get("/api/v1/models", READ_KEY)
        .await
        .json()
        .await
        .expect("json");

    let listed: Vec<(String, String)> = list["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| {
            (
                m["model_id"].as_str().unwrap_or_default().to_owned(),
                m["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    println!("{engine:?}: {} models listed: {listed:?}", list["total"]);
    assert_eq!(list["total"], 3);
    assert_eq!(
        listed,
        vec![
            (
                "busy-model".to_owned(),
                newest_busy.expect("rows").to_string()
            ),
            ("canary-model".to_owned(), active.id.to_string()),
            ("quiet-model".to_owned(), quiet.id.to_string()),
        ]
    );
}

#[tokio::test]
async fn models_list_reaches_every_model_and_prefers_the_active_deployment_sqlite() {
    models_list_reaches_every_model_and_prefers_the_active_deployment(Engine::Sqlite).await;
}

#[tokio::test]
async fn models_list_reaches_every_model_and_prefers_the_active_deployment_postgres() {
    models_list_reaches_every_model_and_prefers_the_active_deployment(Engine::Postgres).await;
}

#[tokio::test]
async fn model_detail_and_deployment_json_have_the_documented_fields() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let deployment = seed(&app, "fraud-detector").await;

    let model: serde_json::Value = app
        .get("/api/v1/models/fraud-detector", READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    let one: serde_json::Value = app
        .get(&format!("/api/v1/deployments/{}", deployment.id), ADMIN_KEY)
        .await
        .json()
        .await
        .expect("json");
    let unknown_model = app.get("/api/v1/models/nobody", READ_KEY).await;
    let unknown_deployment = app.get("/api/v1/deployments/not-a-uuid", READ_KEY).await;

    assert_eq!(model["model_id"], "fraud-detector");
    assert!(model["active"].is_null());
    assert_eq!(model["deployments"].as_array().expect("array").len(), 1);
    for field in [
        "id",
        "model_id",
        "model_version",
        "provider",
        "provider_model_id",
        "endpoint_url",
        "status",
        "provider_status",
        "instance_type",
        "instance_size",
        "vendor",
        "region",
        "task",
        "framework",
        "repository",
        "revision",
        "error_message",
        "metadata",
        "is_active",
        "hourly_cost_usd",
        "accrued_cost_usd",
        "created_at",
        "updated_at",
        "deployed_at",
        "stopped_at",
        "last_prediction_at",
    ] {
        assert!(
            one.get(field).is_some(),
            "Deployment JSON lacks {field}: {one}"
        );
    }
    assert!(
        one.get("lock_version").is_none(),
        "internal columns stay internal"
    );
    assert_eq!(one["status"], "pending");
    chrono::DateTime::parse_from_rfc3339(one["created_at"].as_str().expect("string"))
        .expect("RFC 3339");
    assert_error(unknown_model, 404, "NOT_FOUND").await;
    assert_error(unknown_deployment, 404, "NOT_FOUND").await;
    app.db.drop_database().await;
}

#[tokio::test]
async fn the_event_log_is_served_oldest_first() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let deployment = seed(&app, "fraud-detector").await;

    let log: serde_json::Value = app
        .get(
            &format!("/api/v1/deployments/{}/events", deployment.id),
            READ_KEY,
        )
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(log["deployment_id"], deployment.id.to_string());
    let events = log["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "created");
    assert_eq!(events[0]["to_status"], "pending");
    for field in [
        "id",
        "kind",
        "from_status",
        "to_status",
        "message",
        "details",
        "created_at",
    ] {
        assert!(events[0].get(field).is_some(), "event lacks {field}");
    }
}

#[tokio::test]
async fn a_method_a_known_path_does_not_take_answers_405_with_allow() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let response = app
        .client
        .put(format!("{}/api/v1/models/fraud-detector/rollback", app.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request");
    let allow = response
        .headers()
        .get("allow")
        .expect("an Allow header")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(allow, "POST");
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
    // An unknown path stays 404.
    let unknown = app.get("/api/v1/nothing-here", ADMIN_KEY).await;
    assert_error(unknown, 404, "NOT_FOUND").await;
}
