//! The MLflow listener, `POST /api/v1/webhooks/mlflow`, as production builds it: signature,
//! freshness, required headers, dedupe of delivery ids, unknown and malformed events, and
//! the no-loop rule — each observed through the answer and the recorded events.

use chrono::Utc;
use serde_json::{Value, json};
use shared::config::Secret;
use shared::db::mlflow as repo;
use shared::mlflow::webhook;
use tests::app::{TestApp, assert_error};
use tests::db::Engine;

const SECRET: &str = "whsec-test";
const PATH: &str = "/api/v1/webhooks/mlflow";

async fn app(engine: Engine) -> TestApp {
    TestApp::start(engine, &[("MLFLOW_WEBHOOK_SECRET", SECRET)]).await
}

fn created(model: &str, version: &str) -> String {
    json!({"entity": "model_version", "action": "created", "timestamp": Utc::now().to_rfc3339(),
           "data": {"name": model, "version": version, "source": "s3://b/m", "run_id": null,
                    "tags": {}, "description": null}})
    .to_string()
}

fn tag_set(key: &str, value: &str) -> String {
    json!({"entity": "model_version_tag", "action": "set", "timestamp": Utc::now().to_rfc3339(),
           "data": {"name": "fraud-detector", "version": "1", "key": key, "value": value}})
    .to_string()
}

/// A delivery as MLflow sends it; `sign_with` and `timestamp` let a test forge one.
struct Delivery {
    id: String,
    body: String,
    timestamp: i64,
    sign_with: Option<&'static str>,
}

impl Delivery {
    fn of(body: String) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            body,
            timestamp: Utc::now().timestamp(),
            sign_with: Some(SECRET),
        }
    }

    async fn send(&self, app: &TestApp) -> reqwest::Response {
        let ts = self.timestamp.to_string();
        let mut request = app
            .client
            .post(format!("{}{PATH}", app.url))
            .header("content-type", "application/json")
            .header("x-mlflow-delivery-id", &self.id)
            .header("x-mlflow-timestamp", &ts)
            .body(self.body.clone());
        if let Some(secret) = self.sign_with {
            let signature =
                webhook::sign(&Secret::new(secret), &self.id, &ts, self.body.as_bytes());
            request = request.header("x-mlflow-signature", signature);
        }
        request.send().await.expect("request")
    }
}

async fn recorded(app: &TestApp) -> Vec<repo::MlflowEvent> {
    repo::events(&app.db.conn).await.expect("events")
}

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_signed_delivery_is_accepted_and_recorded_for_the_worker() {
    let app = app(Engine::Postgres).await;

    let body = json_of(
        Delivery::of(created("fraud-detector", "3"))
            .send(&app)
            .await,
        202,
    )
    .await;

    assert_eq!(body["status"], "accepted");
    let events = recorded(&app).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event, "model_version.created");
    assert_eq!(
        (events[0].model_name.as_str(), events[0].version.as_deref()),
        ("fraud-detector", Some("3"))
    );
    assert!(events[0].processed_at.is_none());
}

#[tokio::test]
async fn a_tampered_body_is_refused() {
    let app = app(Engine::Sqlite).await;
    let delivery = Delivery::of(created("fraud-detector", "1"));
    let ts = delivery.timestamp.to_string();
    let signature = webhook::sign(
        &Secret::new(SECRET),
        &delivery.id,
        &ts,
        delivery.body.as_bytes(),
    );

    let response = app
        .client
        .post(format!("{}{PATH}", app.url))
        .header("x-mlflow-delivery-id", &delivery.id)
        .header("x-mlflow-timestamp", &ts)
        .header("x-mlflow-signature", signature)
        .body(created("fraud-detector", "2"))
        .send()
        .await
        .expect("request");

    assert_error(response, 401, "UNAUTHORIZED").await;
    assert!(recorded(&app).await.is_empty());
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let app = app(Engine::Sqlite).await;
    let delivery = Delivery {
        sign_with: Some("another-secret"),
        ..Delivery::of(created("fraud-detector", "1"))
    };

    assert_error(delivery.send(&app).await, 401, "UNAUTHORIZED").await;
    assert!(recorded(&app).await.is_empty());
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused() {
    let app = app(Engine::Sqlite).await;
    let now = Utc::now().timestamp();
    let stale = Delivery {
        timestamp: now - webhook::MAX_AGE_SECONDS - 5,
        ..Delivery::of(created("fraud-detector", "1"))
    };
    let future = Delivery {
        timestamp: now + webhook::MAX_SKEW_SECONDS + 60,
        ..Delivery::of(created("fraud-detector", "1"))
    };

    let stale_body = assert_error(stale.send(&app).await, 401, "UNAUTHORIZED").await;
    assert_error(future.send(&app).await, 401, "UNAUTHORIZED").await;

    assert!(
        stale_body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("too old")
    );
    assert!(recorded(&app).await.is_empty());
}

#[tokio::test]
async fn a_missing_signature_header_is_refused() {
    let app = app(Engine::Sqlite).await;
    let unsigned = Delivery {
        sign_with: None,
        ..Delivery::of(created("fraud-detector", "1"))
    };

    let body = assert_error(unsigned.send(&app).await, 401, "UNAUTHORIZED").await;

    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("X-MLflow-Signature")
    );
    assert!(recorded(&app).await.is_empty());
}

#[tokio::test]
async fn a_repeated_delivery_id_answers_200_and_does_nothing() {
    let app = app(Engine::Postgres).await;
    let delivery = Delivery::of(created("fraud-detector", "1"));

    let first = delivery.send(&app).await;
    let second = json_of(delivery.send(&app).await, 200).await;

    assert_eq!(first.status().as_u16(), 202);
    assert_eq!(second["status"], "duplicate");
    assert_eq!(recorded(&app).await.len(), 1);
}

#[tokio::test]
async fn unknown_events_are_acknowledged_and_ignored() {
    let app = app(Engine::Sqlite).await;
    let body = json!({"entity": "prompt", "action": "created", "data": {"name": "p"}}).to_string();

    let answer = json_of(Delivery::of(body).send(&app).await, 200).await;

    assert_eq!(answer["status"], "ignored");
    assert_eq!(answer["reason"], "unknown event");
    assert!(recorded(&app).await.is_empty());
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let app = app(Engine::Sqlite).await;

    let not_json = Delivery::of("{\"entity\": \"model_version\",".into())
        .send(&app)
        .await;
    let no_version = Delivery::of(
        json!({"entity": "model_version", "action": "created", "data": {"name": "m"}}).to_string(),
    )
    .send(&app)
    .await;

    assert_error(not_json, 400, "BAD_REQUEST").await;
    assert_error(no_version, 400, "BAD_REQUEST").await;
    assert!(recorded(&app).await.is_empty());
}

#[tokio::test]
async fn tags_written_by_the_service_do_not_loop_but_a_deploy_tag_is_handled() {
    let app = app(Engine::Sqlite).await;

    let status = json_of(
        Delivery::of(tag_set("hokusai.deployment.status", "deployed"))
            .send(&app)
            .await,
        200,
    )
    .await;
    let url = json_of(
        Delivery::of(tag_set("hokusai.endpoint_url", "http://e"))
            .send(&app)
            .await,
        200,
    )
    .await;
    let other = json_of(Delivery::of(tag_set("team", "risk")).send(&app).await, 200).await;
    let deploy = json_of(
        Delivery::of(tag_set("hokusai.deploy", "true"))
            .send(&app)
            .await,
        202,
    )
    .await;

    assert_eq!(status["reason"], "a tag written by hokusai-serve");
    assert_eq!(url["status"], "ignored");
    assert_eq!(other["status"], "ignored");
    assert_eq!(deploy["status"], "accepted");
    let events = recorded(&app).await;
    assert_eq!(
        events.len(),
        1,
        "only the deploy tag is handed to the worker"
    );
    assert_eq!(events[0].payload["key"], "hokusai.deploy");
}

#[tokio::test]
async fn without_a_secret_the_listener_is_disabled() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let response = Delivery::of(created("fraud-detector", "1"))
        .send(&app)
        .await;

    assert_error(response, 404, "NOT_FOUND").await;
}
