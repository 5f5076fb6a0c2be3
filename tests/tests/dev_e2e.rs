//! End to end through the real binary: `hokusai-serve dev` (SQLite, embedded queue, worker
//! and HF emulator in one process) driven only over its HTTP API, as a developer would with
//! curl. A model is deployed and serves, a second version takes over within the routing
//! cache's TTL, a rollback brings the first back, and an undeploy makes predictions answer
//! 404 MODEL_NOT_DEPLOYED.
//!
//! A second run rolls versions out as canaries (docs/design/rollouts.md): one promoted by
//! itself after serving beside the stable version, one whose endpoint answers only errors
//! rolled back by itself.
//!
//! The dev worker polls provider status from 2 s on and the routing cache lives 2 s, so
//! every wait is a bounded poll (at most [`LIMIT`] each), never a fixed sleep — but the
//! routing cache's TTL after a rollout's decision, which nothing can be polled for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::process::{self, DevServer};

const KEY: &str = "hk_dev_e2e00000000000000000000000000000";
const MODEL: &str = "sentiment";
const REPOSITORY: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
/// Longest wait for one expected state.
const LIMIT: Duration = Duration::from_secs(30);
/// Longest wait for a rollout's decision: two bake periods of 10 s and reconciler passes.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(90);

/// The routing cache's TTL (2 s) and a margin: a rollout's decision is visible to predict
/// after it.
const ROUTING_TTL: Duration = Duration::from_millis(2_300);

/// Answers counted by (HTTP status, serving model version).
type Served = BTreeMap<(u16, String), u64>;

/// The dev server and a client carrying its key.
struct Dev {
    server: DevServer,
    client: reqwest::Client,
}

impl Dev {
    async fn start() -> Dev {
        Self::start_with(&[]).await
    }

    async fn start_with(envs: &[(&str, &str)]) -> Dev {
        let dir = process::scratch_dir();
        let mut envs = envs.to_vec();
        envs.push(("HOKUSAI_DEV_API_KEY", KEY));
        let server = DevServer::start(&dir, &envs).await;
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
        self.deploy_with(version, None).await
    }

    /// Deploys `version` of the model with `rollout`, if any; returns the deployment id.
    async fn deploy_with(&self, version: &str, rollout: Option<&Value>) -> String {
        let mut body = json!({
            "repository": REPOSITORY,
            "task": "text-classification",
            "model_version": version,
        });
        if let Some(rollout) = rollout {
            body["rollout"] = rollout.clone();
        }
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
        self.wait_status(id, "deployed", Some(true)).await
    }

    /// Polls the deployment until its status is `status` (and `is_active` is `active`, when
    /// given); a deployment that fails on the way fails the test, unless failing is awaited.
    async fn wait_status(&self, id: &str, status: &str, active: Option<bool>) -> Value {
        self.eventually(&format!("deployment {id} {status}"), || async {
            let (code, d) = self.get(&format!("/api/v1/deployments/{id}")).await;
            assert_eq!(code, 200, "{d}");
            if status != "failed" {
                assert_ne!(d["status"], "failed", "{d}");
            }
            let active_ok = active.is_none_or(|a| d["is_active"] == a);
            (d["status"] == status && active_ok).then_some(d)
        })
        .await
    }

    /// The model's rollout (`GET /api/v1/models/{model_id}/rollout`).
    async fn rollout(&self) -> Value {
        let (status, rollout) = self.get(&format!("/api/v1/models/{MODEL}/rollout")).await;
        assert_eq!(status, 200, "{rollout}");
        rollout
    }

    /// Sends predictions until `done` holds of the model's rollout (checked every 10), or
    /// [`ROLLOUT_LIMIT`] passes; counts the answers by status and serving version.
    async fn predict_until(&self, done: impl Fn(&Value) -> bool) -> (Served, Value) {
        let start = Instant::now();
        let mut served = Served::new();
        loop {
            for _ in 0..10 {
                let (status, body) = self.predict().await;
                let version = body["metadata"]["model_version"].as_str().unwrap_or("-");
                *served.entry((status, version.to_owned())).or_default() += 1;
            }
            let rollout = self.rollout().await;
            if done(&rollout) {
                return (served, rollout);
            }
            assert!(
                start.elapsed() < ROLLOUT_LIMIT,
                "rollout not decided in {ROLLOUT_LIMIT:?}: {rollout}\nserved {served:?}"
            );
        }
    }

    /// Points the HF emulator's endpoint behind deployment `id` at `rate` of failed answers.
    async fn fail_predictions(&self, id: &str, rate: f64) {
        let (_, deployment) = self.get(&format!("/api/v1/deployments/{id}")).await;
        let url = deployment["endpoint_url"].as_str().expect("endpoint url");
        let emulator = self
            .server
            .banner
            .split("HF EMULATOR at ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the banner names the emulator");
        let listed: Value = self
            .client
            .get(format!("{emulator}/_emulator/endpoints"))
            .send()
            .await
            .expect("emulator")
            .json()
            .await
            .expect("endpoints");
        let endpoint = listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|e| e["endpoint"]["status"]["url"] == url)
            .unwrap_or_else(|| panic!("no emulator endpoint at {url}: {listed}"));
        let chaos = self
            .client
            .post(format!(
                "{emulator}/_emulator/endpoints/{}/{}/chaos",
                endpoint["namespace"].as_str().expect("namespace"),
                endpoint["name"].as_str().expect("name")
            ))
            .json(&json!({"predict_error_rate": rate}))
            .send()
            .await
            .expect("chaos");
        assert_eq!(chaos.status(), 200);
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

/// The scenario, as an operator runs it: `dev` with a 2-second reconciler; version 2
/// rolls out as a canary at 50 % and then 100 %, each step baked 10 s, and is promoted by
/// itself; version 3's canary answers only errors and is rolled back by itself.
#[tokio::test]
async fn dev_promotes_a_healthy_canary_and_rolls_back_a_failing_one_by_itself() {
    // Arrange
    let dev = Dev::start_with(&[("DEPLOYMENT_RECONCILE_INTERVAL_SECONDS", "2")]).await;
    let rollout = json!({"strategy": "canary", "steps": [50, 100], "bake_seconds": 10,
                         "max_error_rate": 0.1, "min_requests": 10});
    let v1 = dev.deploy("1").await;
    dev.wait_deployed(&v1).await;

    // Act: version 2 as a canary; predictions flow until the rollout is promoted.
    let v2 = dev.deploy_with("2", Some(&rollout)).await;
    dev.wait_status(&v2, "deployed", Some(false)).await;
    let (first_step, running) = dev
        .predict_until(|r| r["state"] != "running" || r["step"] != 0)
        .await;
    let promoted = dev
        .eventually("the rollout of version 2 promoted", || async {
            let rollout = dev.rollout().await;
            (rollout["state"] != "running").then_some(rollout)
        })
        .await;
    dev.wait_deployed(&v2).await;
    // A decision reaches predict within the routing cache's TTL; until then the cached
    // split still sends some requests to version 1.
    tokio::time::sleep(ROUTING_TTL).await;
    let after_promotion = predictions(&dev, 50).await;

    // Assert: both versions answered during the first step, version 2 alone afterwards.
    println!(
        "dev canary v2: first step served {first_step:?}; rollout {} at step {}; \
         after promotion {after_promotion:?}",
        promoted["state"], promoted["step"]
    );
    assert_eq!(running["steps"], json!([50, 100]), "{running}");
    assert_eq!(promoted["state"], "promoted", "{promoted}");
    for version in ["1", "2"] {
        assert!(
            first_step
                .get(&(200, version.to_owned()))
                .copied()
                .unwrap_or(0)
                > 0,
            "version {version} answered during the first step: {first_step:?}"
        );
    }
    assert_eq!(
        after_promotion.get(&(200, "2".to_owned())).copied(),
        Some(50),
        "version 2 alone after promotion: {after_promotion:?}"
    );

    // Act: version 3 as a canary whose endpoint answers only errors.
    let v3 = dev.deploy_with("3", Some(&rollout)).await;
    dev.wait_status(&v3, "deployed", Some(false)).await;
    dev.fail_predictions(&v3, 1.0).await;
    let (during, _) = dev
        .predict_until(|r| r["canary_deployment_id"] == v3.as_str() && r["state"] != "running")
        .await;
    let aborted = dev.rollout().await;
    let failed = dev.wait_status(&v3, "failed", None).await;
    let (_, events) = dev.get(&format!("/api/v1/deployments/{v3}/events")).await;
    tokio::time::sleep(ROUTING_TTL).await;
    let afterwards = predictions(&dev, 50).await;

    // Assert: rolled back with the figures quoted; version 2 serves every request.
    let events = events["events"].as_array().cloned().unwrap_or_default();
    let abort = events
        .iter()
        .find(|e| e["kind"] == "rollout_aborted")
        .unwrap_or_else(|| panic!("a rollout_aborted event: {events:?}"));
    let errors_v3: u64 = during
        .iter()
        .filter(|((status, _), _)| *status >= 500)
        .map(|(_, n)| n)
        .sum();
    println!(
        "dev canary v3: served {during:?} ({errors_v3} failed); rollout {}: {}; \
         v3 {} ({}); afterwards {afterwards:?}",
        aborted["state"], aborted["outcome"], failed["status"], abort["message"]
    );
    assert_eq!(aborted["state"], "aborted", "{aborted}");
    assert!(
        errors_v3 > 0,
        "the canary's errors reached callers: {during:?}"
    );
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["is_active"], false, "{failed}");
    let message = abort["message"].as_str().unwrap_or_default();
    assert!(message.contains("error rate"), "{abort}");
    assert_eq!(
        afterwards.get(&(200, "2".to_owned())).copied(),
        Some(50),
        "version 2 serves every request afterwards: {afterwards:?}"
    );
}

/// `n` predictions, counted by (status, serving version).
async fn predictions(dev: &Dev, n: usize) -> Served {
    let mut served = Served::new();
    for _ in 0..n {
        let (status, body) = dev.predict().await;
        let version = body["metadata"]["model_version"].as_str().unwrap_or("-");
        *served.entry((status, version.to_owned())).or_default() += 1;
    }
    served
}
