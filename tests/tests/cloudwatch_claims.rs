//! What infra/terraform/cloudwatch.tf counts is what the code writes. Each log metric
//! filter's pattern, read from the Terraform file, matches the JSON line production's log
//! subscriber writes for its event — once per event: a compensation that fails for good
//! (`rollback_failed`) and an auth outage (503 `AUTH_UNAVAILABLE`). The worker's Embedded
//! Metric Format figures the alarms read (DeploymentFailures, DeadLetteredMessages,
//! ProviderCostUSD, OutboxPending) come out of the same events with their dimensions, like
//! the predict figures `observability.rs` checks.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use emulator::{ChaosConfig, EmulatorConfig};
use serde_json::{Value, json};
use shared::db::outbox::{self, Route};
use shared::domain::DeploymentId;
use shared::domain::DeploymentStatus::{Deployed, RollbackFailed, RollingBack};
use shared::queue::{Envelope, MessageKind};
use shared::telemetry::cloudwatch;
use tests::app::TestApp;
use tests::db::Engine;
use tests::fake_auth::FakeAuth;
use tests::world::World;

const LIMIT: Duration = Duration::from_secs(30);

/// Bytes written by a logger or the EMF sink.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lines").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lines")).into_owned()
    }
}

/// Production's log subscriber (`LOG_FORMAT=json`, the default `RUST_LOG`) writing into
/// the returned buffer, for this thread (a `#[tokio::test]` runs the API and the worker
/// steps on it) until the guard drops.
fn capture_logs() -> (Lines, tracing::subscriber::DefaultGuard) {
    let settings = tests::app::settings("sqlite://unused.db", &[("LOG_FORMAT", "json")]);
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber =
        shared::telemetry::log_subscriber(&settings.telemetry, move || writer.clone(), false);
    (lines, tracing::subscriber::set_default(subscriber))
}

/// The pattern of `aws_cloudwatch_log_metric_filter.<name>` in cloudwatch.tf.
fn filter_pattern(name: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../infra/terraform/cloudwatch.tf"
    );
    let tf = std::fs::read_to_string(path).expect("read cloudwatch.tf");
    let header = format!("resource \"aws_cloudwatch_log_metric_filter\" \"{name}\" {{");
    let block = tf.split(&header).nth(1).expect("the filter resource");
    let line = block
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("pattern "))
        .expect("its pattern");
    let literal = line.split_once('=').expect("pattern = \"…\"").1.trim();
    let inner = literal
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .expect("a quoted HCL string");
    inner.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// The terms of a CloudWatch Logs filter pattern made of quoted phrases and bare words,
/// every one required (case-sensitive). The richer syntaxes (`{ $.field … }`, `?` for
/// "or", `-` exclusions, `[…]` columns) are refused rather than misread.
fn terms(pattern: &str) -> Vec<String> {
    assert!(
        !pattern.trim_start().starts_with(['{', '[']),
        "unsupported pattern {pattern}"
    );
    let mut terms = Vec::new();
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        if let Some(quoted) = rest.strip_prefix('"') {
            let (term, after) = quoted.split_once('"').expect("a closed quote");
            terms.push(term.to_owned());
            rest = after.trim_start();
        } else {
            let (term, after) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(
                !term.starts_with(['?', '-']),
                "unsupported term {term} in {pattern}"
            );
            terms.push(term.to_owned());
            rest = after.trim_start();
        }
    }
    assert!(!terms.is_empty(), "an empty pattern matches everything");
    terms
}

/// The log lines of `logs` that `pattern` matches.
fn matching(pattern: &str, logs: &str) -> Vec<String> {
    let terms = terms(pattern);
    logs.lines()
        .filter(|line| terms.iter().all(|t| line.contains(t.as_str())))
        .map(str::to_owned)
        .collect()
}

/// The process's CloudWatch sink, writing into a buffer (flushed only when a test asks).
fn emf() -> &'static Lines {
    static EMF: OnceLock<Lines> = OnceLock::new();
    EMF.get_or_init(|| {
        let settings = tests::app::settings(
            "sqlite://unused.db",
            &[
                ("METRICS_CLOUDWATCH_ENABLED", "true"),
                ("CLOUDWATCH_FLUSH_SECONDS", "3600"),
            ],
        );
        let lines = Lines::default();
        assert!(cloudwatch::install_to(
            &settings.telemetry,
            Box::new(lines.clone())
        ));
        lines
    })
}

/// Every EMF line written so far (pending figures flushed first).
fn emf_lines() -> Vec<Value> {
    let sink = emf();
    cloudwatch::flush();
    sink.text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("an EMF line is JSON"))
        .collect()
}

/// The values of `metric` over the lines whose dimensions include `dimensions`.
fn values(lines: &[Value], metric: &str, dimensions: &[(&str, &str)]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| dimensions.iter().all(|(k, v)| l[*k] == *v))
        .filter_map(|l| l.get(metric))
        .flat_map(|v| match v {
            Value::Array(many) => many.iter().filter_map(Value::as_f64).collect::<Vec<_>>(),
            one => one.as_f64().into_iter().collect(),
        })
        .collect()
}

/// The `_aws` directive of the first line carrying `metric`.
fn directive<'a>(lines: &'a [Value], metric: &str) -> &'a Value {
    let line = lines
        .iter()
        .find(|l| l.get(metric).is_some())
        .unwrap_or_else(|| panic!("no EMF line carries {metric}"));
    assert!(line["_aws"]["Timestamp"].is_i64(), "{line}");
    &line["_aws"]["CloudWatchMetrics"][0]
}

#[tokio::test]
async fn a_failed_compensation_trips_the_rollback_filter_once_and_counts_in_emf() {
    // Arrange: one attempt per command and no adapter retries, so a failed delete is final.
    emf();
    let (logs, guard) = capture_logs();
    let world = World::on_db_queue(
        Engine::Sqlite,
        EmulatorConfig::default(),
        &[
            ("QUEUE_MAX_ATTEMPTS", "1"),
            ("HUGGINGFACE_MAX_RETRIES", "0"),
        ],
    )
    .await;
    world.emulator.set_chaos(ChaosConfig {
        fail_next_deploys: 1,
        ..ChaosConfig::default()
    });
    let requested = world.request("cw-rollback", "1").await;
    world
        .run_until_status(requested.id, RollingBack, LIMIT)
        .await;

    // Act: the delete is refused for good (403), so the endpoint cannot be deleted. (A
    // provider that fails with 5xx is retried until it answers: that is no rollback
    // failure.)
    world.emulator.set_chaos(ChaosConfig {
        forbidden_next: 100,
        ..ChaosConfig::default()
    });
    world
        .run_until_status(requested.id, RollbackFailed, LIMIT)
        .await;
    drop(guard);

    // Assert: the filter counts this failure once, on the worker's line about it.
    let pattern = filter_pattern("rollback_failed");
    let found = matching(&pattern, &logs.text());
    assert_eq!(found.len(), 1, "{pattern} matched {found:#?}");
    let line: Value = serde_json::from_str(&found[0]).expect("a JSON log line");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(
        line["span"]["deployment_id"],
        requested.id.to_string(),
        "{line}"
    );
    let lines = emf_lines();
    let failures = [("ModelId", "cw-rollback"), ("Provider", "huggingface")];
    assert_eq!(values(&lines, "DeploymentFailures", &failures), vec![1.0]);
    let queue = world.worker.queue().name().to_owned();
    assert_eq!(
        values(&lines, "DeadLetteredMessages", &[("Queue", queue.as_str())]),
        vec![1.0]
    );
    let dead = directive(&lines, "DeadLetteredMessages");
    assert_eq!(dead["Namespace"], "Hokusai/API");
    assert_eq!(dead["Dimensions"], json!([["Queue"]]));
    let failed = directive(&lines, "DeploymentFailures");
    assert_eq!(
        failed["Dimensions"],
        json!([["ModelId", "Provider"], ["Provider"]])
    );
}

#[tokio::test]
async fn the_worker_sends_provider_cost_and_the_outbox_backlog_as_emf() {
    // Arrange: a serving endpoint, and two commands waiting in the outbox (no relay runs).
    emf();
    let world = World::on_db_queue(Engine::Sqlite, EmulatorConfig::default(), &[]).await;
    let requested = world.request("cw-cost", "1").await;
    world.run_until_status(requested.id, Deployed, LIMIT).await;
    for _ in 0..2 {
        let envelope = Envelope::new(
            MessageKind::CheckStatus,
            DeploymentId(requested.id),
            json!({}),
        );
        outbox::enqueue(&world.db.conn, Route::Relay, "cw-outbox", &envelope, None)
            .await
            .expect("outbox row");
    }

    // Act: two refreshes, the second after the endpoint billed a little more.
    world.worker.gauges().refresh().await.expect("refresh");
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.worker.gauges().refresh().await.expect("refresh");

    // Assert
    let lines = emf_lines();
    let cost = values(
        &lines,
        "ProviderCostUSD",
        &[("ModelId", "cw-cost"), ("Provider", "huggingface")],
    );
    assert_eq!(
        cost.len(),
        1,
        "one increase (the first refresh is the baseline)"
    );
    assert!(cost[0] > 0.0, "{cost:?}");
    let billed = directive(&lines, "ProviderCostUSD");
    assert_eq!(billed["Namespace"], "Hokusai/API");
    assert!(
        billed["Metrics"]
            .as_array()
            .expect("metrics")
            .contains(&json!({"Name": "ProviderCostUSD", "Unit": "None"})),
        "{billed}"
    );
    let backlog = values(&lines, "OutboxPending", &[]);
    assert!(
        backlog.iter().filter(|v| **v == 2.0).count() >= 2,
        "both refreshes sample the two pending rows: {backlog:?}"
    );
    let sampled = directive(&lines, "OutboxPending");
    assert_eq!(sampled["Dimensions"], json!([[]]));
}

#[tokio::test]
async fn an_auth_outage_trips_the_auth_unavailable_filter() {
    // Arrange
    const KEY: &str = "hk_live_cwfilter000000000000000000000000";
    let (logs, guard) = capture_logs();
    let auth = FakeAuth::start().await;
    auth.add_key(KEY, "cw-key", &["read"]);
    auth.force_status(Some(503));
    let app = TestApp::start_hokusai(Engine::Sqlite, &auth.url, &[]).await;

    // Act
    let response = app.get("/api/v1/models", KEY).await;
    drop(guard);

    // Assert: one matching line, the request's.
    assert_eq!(response.status(), 503);
    let pattern = filter_pattern("auth_unavailable");
    let found = matching(&pattern, &logs.text());
    assert_eq!(found.len(), 1, "{pattern} matched {found:#?}");
    let line: Value = serde_json::from_str(&found[0]).expect("a JSON log line");
    assert_eq!(line["status"], 503, "{line}");
    assert_eq!(line["route"], "/api/v1/models", "{line}");
}
