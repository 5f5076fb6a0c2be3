//! Observability (docs/design/observability.md) after real traffic: every `hokusai_*` series on
//! `/metrics` with the right labels and counts (API and the worker's metrics listener),
//! CloudWatch Embedded Metric Format lines written by the real binary, and one request log line
//! per request, with no key material and redacted payloads.
//!
//! The Prometheus registry is global to the process, so every figure asserted here belongs
//! to a model name no other test uses, or is a difference taken around this test's own
//! traffic; gauges (which any worker in the process refreshes) are asserted in one test.

use std::time::Duration;

use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, MODEL_A_KEY, TestApp};
use tests::db::Engine;
use tests::fake_auth::FakeAuth;
use tests::process::{DevServer, scratch_dir};
use tests::scrape::Scrape;

const PREDICT_ROUTE: &str = "/api/v1/models/{model_id}/predict";

fn hf_body(version: &str) -> Value {
    json!({"model_version": version, "repository": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
           "task": "text-classification"})
}

async fn scrape(client: &reqwest::Client, base: &str) -> Scrape {
    let response = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(&response.text().await.expect("body"))
}

fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .value(name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape"))
}

#[tokio::test]
async fn metrics_after_real_traffic_have_every_series_with_labels_and_counts() {
    let app = TestApp::start(Engine::Sqlite, &[("MLFLOW_WEBHOOK_SECRET", "whsec")]).await;
    let worker = app.worker();
    // `model-a` is the model MODEL_A_KEY may call; this test's database is its own, and no
    // other test in this binary predicts on it.
    let model = "model-a";
    app.deploy_and_serve(&worker, model, hf_body("1")).await;
    let before = scrape(&app.client, &app.url).await;
    let ok_before = before
        .value(
            "hokusai_predict_requests_total",
            &[("model_id", model), ("outcome", "ok")],
        )
        .unwrap_or(0.0);

    for _ in 0..3 {
        let r = app
            .post(
                &format!("/api/v1/models/{model}/predict"),
                MODEL_A_KEY,
                &json!({"inputs": "great"}),
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let unknown = "never-deployed-zz9";
    let r = app
        .post(
            &format!("/api/v1/models/{unknown}/predict"),
            ADMIN_KEY,
            &json!({"inputs": "x"}),
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .get(format!("{}/api/v1/models", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .get(format!("{}/no/such/path/{unknown}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .post(format!("{}/api/v1/webhooks/mlflow", app.url))
        .header("content-type", "application/json")
        .header("x-mlflow-delivery-id", "d-1")
        .header(
            "x-mlflow-timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("x-mlflow-signature", "v1,bad")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    worker.gauges().refresh().await.expect("gauges refresh");

    let after = scrape(&app.client, &app.url).await;
    let predict_ok = [("model_id", model), ("outcome", "ok")];
    assert_eq!(
        value(&after, "hokusai_predict_requests_total", &predict_ok) - ok_before,
        3.0
    );
    assert!(
        value(
            &after,
            "hokusai_predict_requests_total",
            &[("model_id", "(none)"), ("outcome", "not_deployed")]
        ) >= 1.0
    );
    for histogram in [
        "hokusai_predict_upstream_duration_seconds",
        "hokusai_predict_overhead_seconds",
    ] {
        assert_eq!(after.types[histogram], "histogram");
        assert!(
            value(
                &after,
                &format!("{histogram}_count"),
                &[("model_id", model)]
            ) >= 3.0
        );
        assert!(
            !after
                .find(&format!("{histogram}_bucket"), &[("le", "0.001")])
                .is_empty(),
            "{histogram} has sub-millisecond buckets"
        );
    }
    assert!(
        value(
            &after,
            "hokusai_http_requests_total",
            &[
                ("method", "POST"),
                ("route", PREDICT_ROUTE),
                ("status", "200")
            ]
        ) >= 3.0
    );
    assert!(
        value(
            &after,
            "hokusai_http_requests_total",
            &[("route", "/api/v1/models"), ("status", "401")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "hokusai_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "hokusai_http_request_duration_seconds_count",
            &[("route", PREDICT_ROUTE)]
        ) >= 3.0
    );
    assert!(
        after
            .samples
            .iter()
            .all(|s| s.labels.values().all(|v| !v.contains(unknown))),
        "label values never come from unknown paths or models"
    );
    assert!(
        value(
            &after,
            "hokusai_provider_requests_total",
            &[
                ("provider", "huggingface"),
                ("operation", "deploy"),
                ("outcome", "ok")
            ]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "hokusai_provider_request_duration_seconds_count",
            &[("provider", "huggingface"), ("operation", "get_status")]
        ) >= 1.0
    );
    for event in ["published", "consumed"] {
        assert!(
            value(
                &after,
                "hokusai_queue_messages_total",
                &[("queue", "hokusai.deployments"), ("event", event)]
            ) >= 1.0
        );
    }
    assert!(
        value(
            &after,
            "hokusai_deployment_duration_seconds_count",
            &[("outcome", "deployed")]
        ) >= 1.0
    );
    assert!(
        value(
            &after,
            "hokusai_mlflow_webhooks_total",
            &[("outcome", "unauthorized")]
        ) >= 1.0
    );

    // Gauges from this test's database (refreshed just above).
    assert!(value(&after, "hokusai_deployments", &[("status", "deployed")]) >= 1.0);
    assert_eq!(
        after.find("hokusai_deployments", &[]).len(),
        8,
        "every status"
    );
    after
        .value("hokusai_outbox_pending", &[])
        .expect("outbox gauge");
    after
        .value("hokusai_queue_depth", &[("queue", "hokusai.deployments")])
        .expect("depth");
    after
        .value(
            "hokusai_queue_depth",
            &[("queue", "hokusai.deployments.dlq")],
        )
        .expect("dead letters");
    assert!(
        value(
            &after,
            "hokusai_deployment_hourly_cost_usd",
            &[("model_id", model)]
        ) > 0.0
    );
    assert!(
        value(
            &after,
            "hokusai_deployment_cost_usd_total",
            &[("model_id", model), ("provider", "huggingface")]
        ) >= 0.0
    );
    assert_eq!(
        value(&after, "hokusai_deployment_idle", &[("model_id", model)]),
        0.0
    );

    // The worker's own listener serves the same registry.
    let server = worker::metrics_server::MetricsServer::bind("127.0.0.1", 0)
        .await
        .expect("bind");
    let base = format!("http://{}", server.local_addr());
    let tasks = shared::runtime::Tasks::new(shared::runtime::ShutdownTrigger::new().subscribe());
    tokio::spawn(server.run_until_stopped(tasks, std::future::pending()));
    let from_worker = scrape(&app.client, &base).await;
    assert!(
        from_worker
            .value("hokusai_deployments", &[("status", "deployed")])
            .is_some()
    );
    app.db.drop_database().await;
}

#[tokio::test]
async fn auth_metrics_count_validations_and_cache_results() {
    let auth = FakeAuth::start().await;
    auth.add_key("hk_obs_metrics_key_000000000000000", "obs-key", &["read"]);
    let app = TestApp::start_hokusai(Engine::Sqlite, &auth.url, &[]).await;
    let before = scrape(&app.client, &app.url).await;
    let count =
        |s: &Scrape, name: &str, label: (&str, &str)| s.value(name, &[label]).unwrap_or(0.0);
    for _ in 0..3 {
        let r = app
            .get("/api/v1/models", "hk_obs_metrics_key_000000000000000")
            .await;
        assert_eq!(r.status(), 200);
    }
    let r = app
        .get("/api/v1/models", "hk_obs_unknown_key_00000000000000")
        .await;
    assert_eq!(r.status(), 401);
    let after = scrape(&app.client, &app.url).await;
    let valid = ("outcome", "valid");
    let hit = ("result", "hit");
    let invalid = ("outcome", "invalid");
    assert!(
        count(&after, "hokusai_auth_validations_total", valid)
            - count(&before, "hokusai_auth_validations_total", valid)
            >= 1.0
    );
    assert!(
        count(&after, "hokusai_auth_cache_total", hit)
            - count(&before, "hokusai_auth_cache_total", hit)
            >= 2.0
    );
    assert!(
        count(&after, "hokusai_auth_validations_total", invalid)
            - count(&before, "hokusai_auth_validations_total", invalid)
            >= 1.0
    );
    app.db.drop_database().await;
}

const DEV_KEY: &str = "hk_dev_observability_key_0123456789abcdef";

/// Deploys `model` on a dev server and waits until it serves.
async fn deploy_on_dev(client: &reqwest::Client, dev: &DevServer, model: &str) {
    let response = client
        .post(format!(
            "{}/api/v1/models/{model}/deployments",
            dev.base_url
        ))
        .bearer_auth(DEV_KEY)
        .json(&hf_body("1"))
        .send()
        .await
        .expect("deploy");
    assert_eq!(response.status(), 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = client
            .get(format!("{}/api/v1/models/{model}/status", dev.base_url))
            .bearer_auth(DEV_KEY)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if status["status"] == "serving" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not serving: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn dev_writes_cloudwatch_emf_lines_for_predictions() {
    let dir = scratch_dir();
    let dev = DevServer::start(
        &dir,
        &[
            ("HOKUSAI_DEV_API_KEY", DEV_KEY),
            ("METRICS_CLOUDWATCH_ENABLED", "true"),
            ("CLOUDWATCH_FLUSH_SECONDS", "1"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    deploy_on_dev(&client, &dev, "emf-model").await;
    for inputs in ["good", "bad"] {
        let r = client
            .post(format!("{}/api/v1/models/emf-model/predict", dev.base_url))
            .bearer_auth(DEV_KEY)
            .json(&json!({"inputs": inputs}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let found = dev
            .stdout
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["ModelId"] == "emf-model" && l.get("PredictionRequests").is_some());
        if let Some(line) = found {
            break line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no EMF line for the predictions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Hokusai/API");
    assert_eq!(
        directive["Dimensions"],
        json!([["ModelId", "Provider"], ["Provider"]])
    );
    assert!(line["_aws"]["Timestamp"].is_i64());
    assert_eq!(line["Provider"], "huggingface");
    assert_eq!(line["PredictionRequests"], 2.0);
    assert_eq!(
        line["PredictionLatency"].as_array().expect("values").len(),
        2
    );
    let declared: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    assert!(declared.contains(&"PredictionRequests") && declared.contains(&"PredictionLatency"));
    let units: Vec<&str> = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Unit"].as_str().unwrap())
        .collect();
    assert!(units.contains(&"Milliseconds") && units.contains(&"Count"));
}

#[tokio::test]
async fn one_log_line_per_request_without_key_material() {
    let dir = scratch_dir();
    let dev = DevServer::start_captured(
        &dir,
        &[
            ("HOKUSAI_DEV_API_KEY", DEV_KEY),
            ("LOG_FORMAT", "json"),
            ("LOG_PAYLOADS", "true"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    deploy_on_dev(&client, &dev, "log-model").await;
    let response = client
        .post(format!("{}/api/v1/models/log-model/predict", dev.base_url))
        .header("x-api-key", DEV_KEY)
        .header("x-request-id", "req-observability-1")
        .json(&json!({"inputs": "fine", "parameters": {"password": "hunter2-secret"}}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let _ = response.text().await;
    // Parameters are forwarded to the model, which may refuse unknown ones; either way the
    // request is logged once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lines: Vec<Value> = loop {
        let lines: Vec<Value> = dev
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| {
                l["request_id"] == "req-observability-1"
                    || l["span"]["request_id"] == "req-observability-1"
            })
            .filter(|l| l["target"] == "hokusai::request")
            .collect();
        if !lines.is_empty() {
            break lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request log line"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(lines.len(), 1, "one line per request: {lines:?}");
    let line = &lines[0];
    assert_eq!(line["route"], PREDICT_ROUTE);
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], status.as_u16());
    assert_eq!(line["model_id"], "log-model");
    let key_id = line["key_id"].as_str().expect("key id");
    assert!(
        key_id.starts_with("static-") && !DEV_KEY.contains(key_id),
        "{key_id}"
    );
    assert_eq!(line["user_id"], "dev");
    assert!(line["latency_ms"].as_f64().expect("latency") > 0.0);
    assert!(line["bytes_in"].as_u64().expect("bytes in") > 0);
    let payload = line["request_payload"].as_str().expect("payload logged");
    assert!(
        payload.contains("[redacted]") && payload.contains("fine"),
        "{payload}"
    );

    let everything = dev.stderr.lock().unwrap().join("\n");
    assert!(
        !everything.contains(DEV_KEY),
        "the key never reaches the logs"
    );
    assert!(
        !everything.contains("hunter2-secret"),
        "redacted fields stay out"
    );
}

#[tokio::test]
async fn logging_payloads_keeps_the_documented_413() {
    let app = TestApp::start(
        Engine::Sqlite,
        &[("LOG_PAYLOADS", "true"), ("MAX_BODY_BYTES", "256")],
    )
    .await;
    let big = json!({"inputs": "x".repeat(1_000)});
    let labels = [
        ("method", "POST"),
        ("route", "/api/v1/models/{model_id}/predict"),
        ("status", "413"),
    ];
    let counted = |scrape: &Scrape| scrape.value("hokusai_http_requests_total", &labels);
    let before = counted(&scrape(&app.client, &app.url).await).unwrap_or(0.0);

    let response = app
        .post("/api/v1/models/model-a/predict", ADMIN_KEY, &big)
        .await;

    tests::app::assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    // Answered by the route's body limit after authentication (payload logging reads
    // nothing ahead of it), and counted like any request.
    let after = counted(&scrape(&app.client, &app.url).await).unwrap_or(0.0);
    assert!(after >= before + 1.0, "413 counted: {before} -> {after}");
    app.db.drop_database().await;
}
