//! Our own limits on callers (issue 19): per-key hourly allowances shared by API instances
//! through a real Redis, the in-process fallback when Redis cannot be reached, the monthly
//! prediction quota, failed authentications per client IP, the client IP behind one
//! trusted proxy, and per-model write scopes. Needs Redis (`HOKUSAI_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`): the tests fail, never skip, without it.

use serde_json::json;
use tests::app::{TestApp, assert_error};
use tests::db::{Engine, TestDb};
use tests::fake_auth::FakeAuth;
use tests::process::{ApiProcess, scratch_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn redis_url() -> String {
    std::env::var("HOKUSAI_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Panics unless Redis answers PING.
async fn require_redis() -> String {
    let url = redis_url();
    let address = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .unwrap_or_else(|e| panic!("Redis must answer at {address} (HOKUSAI_TEST_REDIS_URL): {e}"));
    stream.write_all(b"PING\r\n").await.expect("write PING");
    let mut reply = [0u8; 7];
    stream
        .read_exact(&mut reply)
        .await
        .expect("Redis answers PING");
    assert_eq!(&reply, b"+PONG\r\n", "Redis at {address} answers PING");
    url
}

/// A key unique to this run, so keys left in Redis by earlier runs do not count.
fn unique(name: &str) -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    (format!("hk_live_{name}_{id}"), format!("key-{name}-{id}"))
}

async fn list(app: &TestApp, key: &str) -> reqwest::Response {
    app.get("/api/v1/models", key).await
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("ascii").to_owned())
}

#[tokio::test]
async fn a_3_per_hour_key_gets_its_4th_request_429_across_two_api_instances_sharing_redis() {
    let redis = require_redis().await;
    let auth = FakeAuth::start().await;
    let (limited, limited_id) = unique("three");
    let (other, other_id) = unique("other");
    auth.add_key(&limited, &limited_id, &["read"]);
    auth.add_key(&other, &other_id, &["read"]);
    auth.set_limits(&limited, Some(3), None);
    auth.set_limits(&other, Some(3), None);
    let overrides = [("REDIS_URL", redis.as_str())];
    let first = TestApp::start_hokusai(Engine::Sqlite, &auth.url, &overrides).await;
    let second = TestApp::start_hokusai(Engine::Sqlite, &auth.url, &overrides).await;

    let one = list(&first, &limited).await;
    let two = list(&second, &limited).await;
    let three = list(&first, &limited).await;
    let four = list(&second, &limited).await;
    let unaffected = list(&second, &other).await;

    let remaining: Vec<_> = [&one, &two, &three]
        .iter()
        .map(|r| (r.status().as_u16(), header(r, "ratelimit-remaining")))
        .collect();
    assert_eq!(
        remaining,
        [
            (200, Some("2".into())),
            (200, Some("1".into())),
            (200, Some("0".into()))
        ]
    );
    assert_eq!(header(&one, "ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(header(&four, "ratelimit-limit").as_deref(), Some("3"));
    let retry_after: u64 = header(&four, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(
        (1190..=1200).contains(&retry_after),
        "one request per 20 minutes: {retry_after}"
    );
    assert_error(four, 429, "RATE_LIMITED").await;
    assert_eq!(
        unaffected.status(),
        200,
        "another key has its own allowance"
    );
}

#[tokio::test]
async fn the_allowance_is_shared_by_two_api_processes_through_redis() {
    let redis = require_redis().await;
    let auth = FakeAuth::start().await;
    let (limited, limited_id) = unique("processes");
    let (other, other_id) = unique("bystander");
    auth.add_key(&limited, &limited_id, &["read"]);
    auth.add_key(&other, &other_id, &["read"]);
    auth.set_limits(&limited, Some(3), None);
    let db = TestDb::migrated(Engine::Sqlite).await;
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("HOKUSAI_AUTH_SERVICE_URL", auth.url.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("HUGGINGFACE_API_KEY", "hf_unused"),
        ("HUGGINGFACE_NAMESPACE", "hokusai"),
        ("HUGGINGFACE_API_BASE", "http://127.0.0.1:9"),
    ];
    let dir = scratch_dir();
    let (first, second) = tokio::join!(
        ApiProcess::start(&dir, &envs),
        ApiProcess::start(&dir, &envs)
    );
    let client = reqwest::Client::new();
    let get = |process: &ApiProcess, key: &str| {
        client
            .get(format!("{}/api/v1/models", process.base_url))
            .bearer_auth(key.to_owned())
            .send()
    };

    let mut statuses = Vec::new();
    for process in [&first, &second, &first, &second] {
        statuses.push(
            get(process, &limited)
                .await
                .expect("request")
                .status()
                .as_u16(),
        );
    }
    let bystander = get(&first, &other)
        .await
        .expect("request")
        .status()
        .as_u16();

    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "the 4th of 3/hour, over two processes"
    );
    assert_eq!(bystander, 200);
}

#[tokio::test]
async fn without_redis_each_instance_limits_alone_and_counts_the_fallback() {
    let auth = FakeAuth::start().await;
    let (key, key_id) = unique("fallback");
    auth.add_key(&key, &key_id, &["read"]);
    auth.set_limits(&key, Some(2), None);
    // Nothing listens on port 1: every Redis call fails at once.
    let app = TestApp::start_hokusai(
        Engine::Sqlite,
        &auth.url,
        &[("REDIS_URL", "redis://127.0.0.1:1")],
    )
    .await;

    let statuses = [
        list(&app, &key).await.status().as_u16(),
        list(&app, &key).await.status().as_u16(),
        list(&app, &key).await.status().as_u16(),
    ];
    let metrics = app
        .client
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");

    assert_eq!(
        statuses,
        [200, 200, 429],
        "limited in process, neither open nor closed"
    );
    let fallbacks = metrics
        .lines()
        .find(|l| l.starts_with("hokusai_rate_limit_fallbacks_total"))
        .expect("the fallback counter");
    let count: f64 = fallbacks
        .rsplit(' ')
        .next()
        .expect("value")
        .parse()
        .expect("number");
    assert!(count >= 3.0, "{fallbacks}");
}

#[tokio::test]
async fn the_monthly_prediction_quota_answers_429_quota_exceeded() {
    let redis = require_redis().await;
    let auth = FakeAuth::start().await;
    let (key, key_id) = unique("quota");
    auth.add_key(&key, &key_id, &["predict", "read"]);
    auth.set_limits(&key, Some(1000), Some(2));
    let app =
        TestApp::start_hokusai(Engine::Sqlite, &auth.url, &[("REDIS_URL", redis.as_str())]).await;
    let input = json!({"inputs": "x"});
    let predict = || app.post("/api/v1/models/nothing/predict", &key, &input);

    let first = predict().await.status().as_u16();
    let second = predict().await.status().as_u16();
    let third = predict().await;
    let reads = list(&app, &key).await.status().as_u16();

    assert_eq!(
        (first, second),
        (404, 404),
        "counted before the model lookup"
    );
    assert!(header(&third, "retry-after").is_some());
    assert_error(third, 429, "QUOTA_EXCEEDED").await;
    assert_eq!(reads, 200, "the quota counts predictions only");
}

#[tokio::test]
async fn failed_authentications_are_limited_per_client_ip_without_auth_calls() {
    let auth = FakeAuth::start().await;
    let app = TestApp::start_hokusai(
        Engine::Sqlite,
        &auth.url,
        &[("FAILED_AUTH_PER_IP_PER_MINUTE", "3")],
    )
    .await;

    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(
            list(&app, &format!("hk_live_random_{i}"))
                .await
                .status()
                .as_u16(),
        );
    }

    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    assert_eq!(
        auth.validations(),
        3,
        "the flood stopped reaching the auth service"
    );
}

async fn from(app: &TestApp, key: &str, forwarded_for: &str) -> reqwest::Response {
    app.client
        .get(format!("{}/api/v1/models", app.url))
        .bearer_auth(key)
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn behind_one_trusted_hop_the_auth_service_gets_the_hop_address_not_the_spoof() {
    let auth = FakeAuth::start().await;
    let (key, key_id) = unique("xff");
    auth.add_key(&key, &key_id, &["read"]);
    let app = TestApp::start_hokusai(
        Engine::Sqlite,
        &auth.url,
        &[("TRUST_FORWARDED_FOR", "true"), ("TRUSTED_PROXY_HOPS", "1")],
    )
    .await;

    let spoofed = from(&app, &key, "6.6.6.6, 203.0.113.9").await;
    let seen_first = auth.last_request();
    let other_ip = from(&app, &key, "6.6.6.6, 198.51.100.4").await;

    assert_eq!(spoofed.status(), 200);
    assert_eq!(
        seen_first,
        Some(json!({"service_id": "platform", "client_ip": "203.0.113.9"}))
    );
    assert_eq!(other_ip.status(), 200);
    assert_eq!(
        auth.validations(),
        2,
        "an IP-dependent verdict is not reused for another IP"
    );
}

#[tokio::test]
async fn a_model_write_key_for_a_gets_403_on_model_b_before_any_lookup() {
    let auth = FakeAuth::start().await;
    let (key, key_id) = unique("writer");
    auth.add_key(&key, &key_id, &["model:write:model-a"]);
    let app = TestApp::start_hokusai(Engine::Sqlite, &auth.url, &[]).await;
    let body = json!({"provider": "http", "endpoint_url": "http://127.0.0.1:9/"});

    let on_b = app
        .post("/api/v1/models/model-b/deployments", &key, &body)
        .await;
    let rollback_b = app
        .post("/api/v1/models/model-b/rollback", &key, &json!({}))
        .await;
    let undeploy_b = app
        .client
        .delete(format!("{}/api/v1/models/model-b/deployment", app.url))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    let rollback_a = app
        .post("/api/v1/models/model-a/rollback", &key, &json!({}))
        .await;

    for refused in [on_b, rollback_b, undeploy_b] {
        let body = assert_error(refused, 403, "FORBIDDEN").await;
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("model:write:model-b"),
            "{body}"
        );
    }
    assert_error(rollback_a, 404, "NOT_FOUND").await;
}
