//! The `hokusai` authenticator through the real API against the fake auth service: where
//! keys are read from, what is accepted and refused, scopes, the client IP sent, and usage
//! reports.

use std::time::Duration;

use serde_json::json;
use tests::app::{ADMIN_KEY, TestApp, assert_error};
use tests::db::Engine;
use tests::fake_auth::{FakeAuth, KeyState};

const READER: &str = "hk_live_reader0000000000000000000000000";
const MODEL_A: &str = "hk_live_modela0000000000000000000000000";

async fn started(overrides: &[(&str, &str)]) -> (FakeAuth, TestApp) {
    let auth = FakeAuth::start().await;
    auth.add_key(READER, "key-reader", &["read"]);
    auth.add_key(MODEL_A, "key-model-a", &["predict:model-a"]);
    let app = TestApp::start_hokusai(Engine::Sqlite, &auth.url, overrides).await;
    (auth, app)
}

#[tokio::test]
async fn keys_are_accepted_from_every_documented_location() {
    let (auth, app) = started(&[]).await;
    let url = format!("{}/api/v1/models", app.url);

    let bearer = app.client.get(&url).bearer_auth(READER).send().await;
    let api_key_scheme = app
        .client
        .get(&url)
        .header("authorization", format!("ApiKey {READER}"))
        .send()
        .await;
    let x_api_key = app
        .client
        .get(&url)
        .header("x-api-key", READER)
        .send()
        .await;

    for response in [bearer, api_key_scheme, x_api_key] {
        assert_eq!(response.expect("request").status(), 200);
    }
    assert_eq!(auth.validations(), 1, "later locations hit the cache");
}

#[tokio::test]
async fn unknown_missing_and_is_valid_false_keys_are_401() {
    let (auth, app) = started(&[]).await;
    let invalid_in_200 = "hk_live_expired000000000000000000000000";
    auth.add_key(invalid_in_200, "key-expired", &["read"]);
    auth.set_state(invalid_in_200, KeyState::InvalidIn200);

    let unknown = app
        .get("/api/v1/models", "hk_live_unknown00000000000000000000000")
        .await;
    let missing = app
        .client
        .get(format!("{}/api/v1/models", app.url))
        .send()
        .await;
    let refused_in_200 = app.get("/api/v1/models", invalid_in_200).await;

    let body = assert_error(unknown, 401, "UNAUTHORIZED").await;
    assert_eq!(body["detail"], "Invalid or expired API key");
    assert_error(missing.expect("request"), 401, "UNAUTHORIZED").await;
    assert_error(refused_in_200, 401, "UNAUTHORIZED").await;
    assert_eq!(
        auth.validations(),
        2,
        "a missing key never reaches the auth service"
    );
}

#[tokio::test]
async fn scopes_from_the_auth_service_are_enforced() {
    let (_auth, app) = started(&[]).await;

    let reader = app.get("/api/v1/models/model-b", READER).await;
    let model_a_only = app.get("/api/v1/models/model-b", MODEL_A).await;
    let listing = app.get("/api/v1/models", MODEL_A).await;

    assert_error(reader, 404, "NOT_FOUND").await;
    let body = assert_error(model_a_only, 403, "FORBIDDEN").await;
    assert!(
        body["detail"].as_str().expect("detail").contains("`read`"),
        "{body}"
    );
    assert_error(listing, 403, "FORBIDDEN").await;
}

#[tokio::test]
async fn the_peer_address_is_sent_unless_forwarded_for_is_trusted_then_the_hop_address() {
    let (auth, app) = started(&[]).await;
    let (trusting_auth, trusting) = started(&[("TRUST_FORWARDED_FOR", "true")]).await;
    let forwarded = ("x-forwarded-for", "203.0.113.7, 10.0.0.1");

    let direct = app
        .client
        .get(format!("{}/api/v1/models", app.url))
        .bearer_auth(READER)
        .header(forwarded.0, forwarded.1)
        .send()
        .await
        .expect("request");
    let behind_alb = trusting
        .client
        .get(format!("{}/api/v1/models", trusting.url))
        .bearer_auth(READER)
        .header(forwarded.0, forwarded.1)
        .send()
        .await
        .expect("request");

    assert_eq!(
        (direct.status().as_u16(), behind_alb.status().as_u16()),
        (200, 200)
    );
    assert_eq!(
        auth.last_request(),
        Some(json!({"service_id": "platform", "client_ip": "127.0.0.1"}))
    );
    assert_eq!(
        trusting_auth.last_request(),
        Some(json!({"service_id": "platform", "client_ip": "10.0.0.1"})),
        "one trusted hop: the entry the load balancer appended, not the client's own"
    );
}

#[tokio::test]
async fn usage_is_reported_after_authenticated_responses_when_enabled() {
    let (auth, app) = started(&[("AUTH_USAGE_REPORTING", "true")]).await;
    let (quiet_auth, quiet) = started(&[]).await;

    let served = app.get("/api/v1/models/fraud-detector", READER).await;
    let unauthenticated = app
        .get("/api/v1/models", "hk_live_unknown00000000000000000000000")
        .await;
    quiet.get("/api/v1/models", READER).await;
    let reports = eventually(|| auth.usage_reports(), |r| !r.is_empty()).await;

    assert_eq!(
        (served.status().as_u16(), unauthenticated.status().as_u16()),
        (404, 401)
    );
    assert_eq!(reports.len(), 1, "{reports:?}");
    let (key_id, body) = &reports[0];
    assert_eq!(key_id, "key-reader");
    assert_eq!(body["endpoint"], "/api/v1/models/fraud-detector");
    assert_eq!(body["status_code"], 404);
    assert_eq!(body["service_id"], "platform");
    assert_eq!(body["model_id"], "fraud-detector");
    assert!(body["response_time_ms"].is_u64(), "{body}");
    assert!(quiet_auth.usage_reports().is_empty());
}

/// Polls `read` for up to two seconds until `done` holds; returns the last value.
async fn eventually<T>(read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    for _ in 0..40 {
        let value = read();
        if done(&value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read()
}

#[tokio::test]
async fn openai_usage_reports_carry_token_counts_and_a_stream_is_reported_once_it_ended() {
    let (auth, app) = started(&[("AUTH_USAGE_REPORTING", "true")]).await;
    auth.add_key(ADMIN_KEY, "key-admin", &["admin", "model:write"]);
    let worker = app.worker();
    let generation = json!({"model_version": "1", "repository": "openai-community/gpt2",
                            "task": "text-generation"});
    app.deploy_and_serve(&worker, "model-a", generation).await;
    let chat = |stream: bool| {
        json!({"model": "model-a", "messages": [{"role": "user", "content": "hello there"}],
               "max_tokens": 5, "stream": stream, "stream_options": {"include_usage": stream}})
    };
    let of_model_a = |reports: &Vec<(String, serde_json::Value)>| -> Vec<serde_json::Value> {
        reports
            .iter()
            .filter(|(key, body)| {
                key == "key-model-a" && body["endpoint"] == "/v1/chat/completions"
            })
            .map(|(_, body)| body.clone())
            .collect()
    };

    let whole: serde_json::Value = app
        .post("/v1/chat/completions", MODEL_A, &chat(false))
        .await
        .json()
        .await
        .expect("json");
    let first = eventually(|| of_model_a(&auth.usage_reports()), |r| r.len() == 1).await;
    app.emulator.set_chaos(emulator::ChaosConfig {
        stream_chunk_delay_ms: 150,
        ..emulator::ChaosConfig::default()
    });
    let stream = app.post("/v1/chat/completions", MODEL_A, &chat(true)).await;
    // Headers are in, the events not yet read: the stream has not ended, nothing reported.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_the_end = of_model_a(&auth.usage_reports()).len();
    let events = stream.text().await.expect("events");
    let reports = eventually(|| of_model_a(&auth.usage_reports()), |r| r.len() == 2).await;

    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        first[0]["prompt_tokens"], whole["usage"]["prompt_tokens"],
        "{whole}"
    );
    assert_eq!(
        first[0]["completion_tokens"], whole["usage"]["completion_tokens"],
        "{whole}"
    );
    let last_usage = events
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<serde_json::Value>(data).ok())
        .rfind(|event| event["usage"].is_object())
        .expect("a usage chunk");
    assert_eq!(before_the_end, 1, "the stream was reported before it ended");
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(
        reports[1]["prompt_tokens"],
        last_usage["usage"]["prompt_tokens"]
    );
    assert_eq!(
        reports[1]["completion_tokens"],
        last_usage["usage"]["completion_tokens"]
    );
    assert_eq!(
        reports[1]["model_id"],
        serde_json::Value::Null,
        "the body names the model"
    );
    assert_eq!(reports[1]["status_code"], 200);
}
