//! The predict route through the real API, worker and providers: the response shape, every
//! error code the route can answer, the routing cache (a new version becomes visible within
//! its TTL; a warm cache needs no database).

use std::time::Duration;

use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, MODEL_A_KEY, READ_KEY, TestApp, assert_error};
use tests::db::Engine;

fn hf_body(version: &str) -> Value {
    json!({"model_version": version, "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification"})
}

async fn predict(app: &TestApp, model: &str, key: &str, body: Value) -> reqwest::Response {
    app.post(&format!("/api/v1/models/{model}/predict"), key, &body)
        .await
}

#[tokio::test]
async fn predictions_have_hokusai_response_shape() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = app.worker();
    let id = app.deploy_and_serve(&worker, "model-a", hf_body("3")).await;

    let response = predict(
        &app,
        "model-a",
        MODEL_A_KEY,
        json!({"inputs": "I love this"}),
    )
    .await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["model_id"], "model-a");
    assert_eq!(body["predictions"][0]["label"], "POSITIVE", "{body}");
    let meta = &body["metadata"];
    assert_eq!(meta["api_version"], "1.0");
    assert_eq!(meta["deployment_id"], id.as_str());
    assert_eq!(meta["model_version"], "3");
    assert_eq!(meta["provider"], "huggingface");
    assert_eq!(meta["user_id"], "model-a-user");
    assert_eq!(meta["api_key_id"], app.key_id(MODEL_A_KEY));
    assert!(meta["response_time_ms"].is_u64());
    chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("timestamp"))
        .expect("RFC 3339");
}

#[tokio::test]
async fn bad_requests_get_the_documented_codes() {
    let app = TestApp::start(Engine::Sqlite, &[("MAX_BODY_BYTES", "2000")]).await;
    let worker = app.worker();
    app.deploy_and_serve(&worker, "model-a", hf_body("1")).await;
    let url = format!("{}/api/v1/models/model-a/predict", app.url);
    let raw = |body: &'static str| {
        app.client
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    assert_error(raw("{\"inputs\": ").await.expect("req"), 400, "BAD_REQUEST").await;
    let missing = assert_error(
        raw("{\"parameters\": {}}").await.expect("req"),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(
        missing["detail"]
            .as_str()
            .expect("detail")
            .contains("inputs"),
        "{missing}"
    );
    let wrong_type = assert_error(
        raw("{\"inputs\": \"x\", \"parameters\": 5}")
            .await
            .expect("req"),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(
        wrong_type["detail"]
            .as_str()
            .expect("detail")
            .contains("parameters"),
        "{wrong_type}"
    );
    assert_error(
        raw("{\"inputs\": null}").await.expect("req"),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    // The document's schema refuses null elements; so does the server.
    let nulls = assert_error(
        raw("{\"inputs\": [\"fine\", null]}").await.expect("req"),
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(
        nulls["detail"].as_str().unwrap().contains("inputs[1]"),
        "{nulls}"
    );
    let big = json!({"inputs": "x".repeat(5000)});
    assert_error(
        predict(&app, "model-a", ADMIN_KEY, big).await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert_error(
        predict(&app, "model-a", READ_KEY, json!({"inputs": "x"})).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_error(
        predict(&app, "model-b", MODEL_A_KEY, json!({"inputs": "x"})).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_error(
        predict(&app, "nobody", ADMIN_KEY, json!({"inputs": "x"})).await,
        404,
        "MODEL_NOT_DEPLOYED",
    )
    .await;
    assert_error(
        predict(&app, "model-a", "hk_test_nope", json!({"inputs": "x"})).await,
        401,
        "UNAUTHORIZED",
    )
    .await;
}

#[tokio::test]
async fn upstream_failures_map_to_400_502_and_504() {
    let app = TestApp::start(Engine::Sqlite, &[("PREDICT_TIMEOUT_SECONDS", "1")]).await;
    app.serve_upstream(
        "refuses",
        400,
        r#"{"error":"inputs must be text"}"#,
        Duration::ZERO,
    )
    .await;
    app.serve_upstream(
        "broken",
        500,
        r#"{"error":"CUDA out of memory"}"#,
        Duration::ZERO,
    )
    .await;
    app.serve_upstream("slow", 200, "[]", Duration::from_secs(5))
        .await;
    let input = json!({"inputs": "x"});

    let refused = assert_error(
        predict(&app, "refuses", ADMIN_KEY, input.clone()).await,
        400,
        "BAD_REQUEST",
    )
    .await;
    assert_error(
        predict(&app, "broken", ADMIN_KEY, input.clone()).await,
        502,
        "UPSTREAM_ERROR",
    )
    .await;
    let started = std::time::Instant::now();
    assert_error(
        predict(&app, "slow", ADMIN_KEY, input).await,
        504,
        "UPSTREAM_TIMEOUT",
    )
    .await;

    assert!(
        !refused["detail"]
            .as_str()
            .expect("detail")
            .contains("inputs must be text"),
        "the upstream's body is logged, never sent: {refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered at the timeout, not after the upstream"
    );
}

#[tokio::test]
async fn a_cold_start_answers_503_with_retry_after() {
    let app = TestApp::start(Engine::Sqlite, &[("SCALE_UP_TIMEOUT_SECONDS", "0")]).await;
    app.serve_upstream(
        "waking",
        503,
        r#"{"error":"Service Unavailable"}"#,
        Duration::ZERO,
    )
    .await;

    let response = predict(&app, "waking", ADMIN_KEY, json!({"inputs": "x"})).await;

    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    assert_error(response, 503, "MODEL_NOT_READY").await;
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
}

/// A route in use is read again past half its TTL, in the background: with the database
/// gone after that refresh, a request past the first read's TTL is still answered from
/// memory (without the refresh it would read the database and fail).
#[tokio::test]
async fn a_route_in_use_is_refreshed_before_it_expires() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let worker = app.worker();
    app.deploy_and_serve(&worker, "model-a", hf_body("1")).await;
    let ttl = app.settings.api.routing_ttl;
    let first = predict(&app, "model-a", ADMIN_KEY, json!({"inputs": "x"})).await;
    let loaded = std::time::Instant::now();
    assert_eq!(first.status(), 200);

    tokio::time::sleep(ttl.mul_f64(0.6)).await;
    let ahead = predict(&app, "model-a", ADMIN_KEY, json!({"inputs": "x"})).await;
    assert_eq!(ahead.status(), 200);
    // Let the background read finish before the database goes away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.db.drop_under_its_users().await;

    tokio::time::sleep_until((loaded + ttl.mul_f64(1.25)).into()).await;
    let late = predict(&app, "model-a", ADMIN_KEY, json!({"inputs": "x"})).await;
    assert!(
        loaded.elapsed() < ttl.mul_f64(1.5),
        "the last request must come before the refreshed entry expires"
    );
    assert_eq!(
        late.status(),
        200,
        "past the first read's TTL the refreshed route answers without the database"
    );
}

#[tokio::test]
async fn the_routing_cache_follows_a_new_version_and_a_warm_cache_needs_no_database() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let worker = app.worker();
    app.deploy_and_serve(&worker, "model-a", hf_body("1")).await;
    let version = |body: Value| {
        body["metadata"]["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let first: Value = predict(&app, "model-a", ADMIN_KEY, json!({"inputs": "x"}))
        .await
        .json()
        .await
        .expect("json");

    app.deploy_and_serve(&worker, "model-a", hf_body("2")).await;
    tokio::time::sleep(app.settings.api.routing_ttl + Duration::from_millis(200)).await;
    let second: Value = predict(&app, "model-a", ADMIN_KEY, json!({"inputs": "x"}))
        .await
        .json()
        .await
        .expect("json");
    app.db.drop_under_its_users().await;
    let warm = predict(&app, "model-a", ADMIN_KEY, json!({"inputs": "x"})).await;

    assert_eq!(version(first), "1");
    assert_eq!(version(second), "2");
    assert_eq!(
        warm.status(),
        200,
        "a warm routing cache answers without the database"
    );
}
