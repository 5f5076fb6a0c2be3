//! End to end through the real binary: `hokusai-serve dev` (SQLite, embedded queue, worker
//! and HF emulator in one process) driven only over its HTTP API, as a developer would with
//! curl. A model is deployed and serves, a second version takes over within the routing
//! cache's TTL, a rollback brings the first back, and an undeploy makes predictions answer
//! 404 MODEL_NOT_DEPLOYED.
//!
//! The dev worker polls provider status from 2 s on and the routing cache lives 2 s, so
//! every wait is a bounded poll (at most [`LIMIT`] each), never a fixed sleep.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::process::{self, DevServer};

const KEY: &str = "hk_dev_e2e00000000000000000000000000000";
const MODEL: &str = "sentiment";
const REPOSITORY: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
/// Longest wait for one expected state.
const LIMIT: Duration = Duration::from_secs(30);

/// The dev server and a client carrying its key.
struct Dev {
    server: DevServer,
    client: reqwest::Client,
}

impl Dev {
    async fn start() -> Dev {
        let dir = process::scratch_dir();
        let server = DevServer::start(&dir, &[("HOKUSAI_DEV_API_KEY", KEY)]).await;
        assert!(server.banner.contains(KEY), "{}", server.banner);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Dev { server, client }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.bearer_auth(KEY).send().await.expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.server.base_url);
        self.send(self.client.get(url)).await
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.server.base_url);
        self.send(self.client.post(url).json(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.server.base_url);
        self.send(self.client.delete(url)).await
    }

    /// Deploys `version` of the model; returns the deployment id.
    async fn deploy(&self, version: &str) -> String {
        let body = json!({
            "repository": REPOSITORY,
            "task": "text-classification",
            "model_version": version,
        });
        let (status, created) = self
            .post(&format!("/api/v1/models/{MODEL}/deployments"), &body)
            .await;
        assert_eq!(status, 202, "deploy accepted: {created}");
        created["deployment"]["id"]
            .as_str()
            .expect("deployment id")
            .to_owned()
    }

    /// Polls the deployment until it is `deployed` and active.
    async fn wait_deployed(&self, id: &str) -> Value {
        self.eventually(&format!("deployment {id} deployed"), || async {
            let (status, d) = self.get(&format!("/api/v1/deployments/{id}")).await;
            assert_eq!(status, 200, "{d}");
            assert_ne!(d["status"], "failed", "{d}");
            (d["status"] == "deployed" && d["is_active"] == true).then_some(d)
        })
        .await
    }

    async fn predict(&self) -> (u16, Value) {
        let body = json!({"inputs": "I love this movie"});
        self.post(&format!("/api/v1/models/{MODEL}/predict"), &body)
            .await
    }

    /// Polls predict until it answers 200 with `version` in its metadata.
    async fn wait_serving(&self, version: &str) -> Value {
        self.eventually(&format!("version {version} serving"), || async {
            let (status, body) = self.predict().await;
            (status == 200 && body["metadata"]["model_version"] == version).then_some(body)
        })
        .await
    }

    /// Retries `check` every 250 ms until it returns a value (panics after [`LIMIT`]).
    async fn eventually<T, F, Fut>(&self, what: &str, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(start.elapsed() < LIMIT, "{what}: not reached in {LIMIT:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The shape of docs/design/http-api.md for a prediction served by deployment `id`.
fn assert_prediction(body: &Value, id: &str, version: &str) {
    assert_eq!(body["model_id"], MODEL, "{body}");
    let predictions = body["predictions"].as_array().expect("predictions array");
    assert!(!predictions.is_empty(), "{body}");
    let metadata = &body["metadata"];
    assert_eq!(metadata["api_version"], "1.0", "{body}");
    assert_eq!(metadata["deployment_id"], id, "{body}");
    assert_eq!(metadata["model_version"], version, "{body}");
    assert_eq!(metadata["provider"], "huggingface", "{body}");
    assert!(metadata["response_time_ms"].is_u64(), "{body}");
    assert!(metadata["user_id"].is_string(), "{body}");
    assert!(metadata["api_key_id"].is_string(), "{body}");
    let timestamp = body["timestamp"].as_str().expect("timestamp");
    chrono::DateTime::parse_from_rfc3339(timestamp).expect("RFC 3339 timestamp");
}

#[tokio::test]
async fn dev_deploys_switches_rolls_back_and_undeploys_over_http() {
    // Arrange
    let dev = Dev::start().await;

    // `/ready` names every loop of the API and the worker with its last heartbeat.
    let (status, ready) = dev.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    let loops = ready["tasks"].as_object().expect("tasks");
    for name in [
        "consumer_0",
        "reconciler",
        "gauges",
        "retention",
        "activity_flush",
    ] {
        let task = &loops[name];
        assert_eq!(task["state"], "running", "{name}: {ready}");
        assert!(
            task["seconds_since_heartbeat"].as_f64().is_some(),
            "{ready}"
        );
    }
    println!(
        "dev /ready: {} loops: {:?}",
        loops.len(),
        loops.keys().collect::<Vec<_>>()
    );

    // Act: version 1 deploys and serves.
    let v1 = dev.deploy("1").await;
    dev.wait_deployed(&v1).await;
    let (status, body) = dev.predict().await;

    // Assert
    assert_eq!(status, 200, "{body}");
    assert_prediction(&body, &v1, "1");

    // Act: version 2 takes over once its deployment is live and the cache entry expired.
    let v2 = dev.deploy("2").await;
    dev.wait_deployed(&v2).await;
    let body = dev.wait_serving("2").await;

    // Assert
    assert_prediction(&body, &v2, "2");

    // Act: rollback reactivates version 1 (still deployed, within the retire window).
    let (status, rolled) = dev
        .post(&format!("/api/v1/models/{MODEL}/rollback"), &json!({}))
        .await;

    // Assert
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["action"], "reactivated", "{rolled}");
    assert_eq!(rolled["deployment"]["id"], v1.as_str(), "{rolled}");
    let body = dev.wait_serving("1").await;
    assert_prediction(&body, &v1, "1");

    // Act: undeploy.
    let (status, undeployed) = dev
        .delete(&format!("/api/v1/models/{MODEL}/deployment"))
        .await;

    // Assert: accepted, then predictions stop.
    assert_eq!(status, 202, "{undeployed}");
    assert_eq!(undeployed["deployment"]["id"], v1.as_str(), "{undeployed}");
    let error = dev
        .eventually("predict answers 404", || async {
            let (status, body) = dev.predict().await;
            (status == 404).then_some(body)
        })
        .await;
    assert_eq!(error["error"], "MODEL_NOT_DEPLOYED", "{error}");
    assert!(error["request_id"].is_string(), "{error}");
}

/// `hokusai-serve dev > file 2>&1`: the banner and the logs reach the file as plain text.
#[tokio::test]
async fn dev_writes_no_escape_codes_to_a_file() {
    // Arrange
    let dir = process::scratch_dir();
    let log = dir.join("dev.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = process::command(
        &dir,
        &["dev", "--port", "0", "--data-dir", ".hokusai"],
        &[("HOKUSAI_DEV_API_KEY", KEY)],
    )
    .stdout(file.try_clone().expect("log file"))
    .stderr(file)
    .spawn()
    .expect("dev starts");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = Instant::now();
    while !read().contains("Stop with Ctrl-C.") {
        assert!(
            started.elapsed() < LIMIT,
            "no banner in {LIMIT:?}:\n{}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = read()
        .split_whitespace()
        .find(|w| {
            w.starts_with("http://127.0.0.1:") && !w.contains("/health") && !w.contains("/ready")
        })
        .expect("the banner shows the URL")
        .to_owned();

    // Act: a request, so the file also holds a request log line.
    let health = reqwest::get(format!("{url}/health")).await.expect("health");
    while !read().contains("/health") {
        assert!(
            started.elapsed() < LIMIT * 2,
            "no request log line:\n{}",
            read()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.ok();

    // Assert
    assert_eq!(health.status(), 200);
    let text = read();
    assert!(text.contains(&format!("  API key    {KEY}")), "{text}");
    assert!(
        text.contains("route=/health"),
        "logs went to the file too:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in the file:\n{text:?}"
    );
}
