//! Shadow-rollout benchmark (not a test): what a shadow rollout costs the callers of predict.
//!
//! `scripts/bench shadow [--requests N] [--runs R] [--json FILE]`
//!
//! Three upstream stubs (the loopback predict stub of the tests) serve two models on the
//! gateway as production builds it (`api::Application` via [`TestApp`], SQLite, static keys,
//! the `http` provider): `plain`, with no rollout, and `shadowed`, whose version 2 is in a
//! shadow rollout at 100 % — every request is also copied to version 2 in the background, the
//! worst case. Each run sends, one request at a time (closed loop, one keep-alive connection),
//! `N` predictions to each model, alternating blocks of 50 so a noisy neighbour hits both.
//! Latencies are exact (`Instant` differences, sorted). Figures are medians over the runs of
//! each run's p50 and p99; the target (docs/benchmarks.md, fixed before measuring) is on the
//! shadowed p50 minus the plain p50 of the same run: at most 0.1 ms. Gateway, stubs and
//! client share the machine's cores, so the background copies compete for the same CPU.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::domain::DeploymentStatus;
use tests::app::{ADMIN_KEY, TestApp};
use tests::bench::{Figure, Of, Target, json_arg, print_verdicts, write_json};
use tests::db::Engine;

const ANSWER: &str = r#"[{"label": "POSITIVE", "score": 0.99}]"#;

struct Args {
    requests: usize,
    runs: usize,
    json: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let (json, rest) = json_arg();
    let mut args = Args {
        requests: 1000,
        runs: 3,
        json,
    };
    let mut it = rest.into_iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let number: usize = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| usage(&format!("{flag}: a positive integer")));
        match flag.as_str() {
            "--requests" => args.requests = number,
            "--runs" => args.runs = number,
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!("{problem}\nusage: bench-shadow [--requests N] [--runs R] [--json FILE]");
    std::process::exit(2)
}

async fn one(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"inputs": "I love this"}))
        .send()
        .await
        .expect("answer");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.expect("body");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// p50 and p99 of one run, in milliseconds: [plain, shadowed].
struct Run([(f64, f64); 2]);

async fn run(args: &Args, gateway: &TestApp) -> Run {
    let client = reqwest::Client::new();
    let urls = ["plain", "shadowed"].map(|m| format!("{}/api/v1/models/{m}/predict", gateway.url));
    let mut samples: [Vec<Duration>; 2] = Default::default();
    let block = 50;
    for _ in 0..args.requests.div_ceil(block) {
        for (t, url) in urls.iter().enumerate() {
            for _ in 0..block {
                samples[t].push(one(&client, url).await);
            }
        }
    }
    let mut out = [(0.0, 0.0); 2];
    for (t, sorted) in samples.iter_mut().enumerate() {
        sorted.sort();
        out[t] = (percentile(sorted, 0.5), percentile(sorted, 0.99));
    }
    Run(out)
}

/// `plain` serving; `shadowed` serving version 1 with version 2 in a shadow rollout at 100 %.
async fn set_up() -> TestApp {
    let gateway = TestApp::start(Engine::Sqlite, &[]).await;
    let worker = gateway.worker();
    let stub = || tests::upstream::start(200, ANSWER, Duration::ZERO);
    let http = |url: String, version: &str| json!({"provider": "http", "endpoint_url": url, "model_version": version});
    gateway
        .deploy_and_serve(&worker, "plain", http(stub().await, "1"))
        .await;
    gateway
        .deploy_and_serve(&worker, "shadowed", http(stub().await, "1"))
        .await;
    let mut v2 = http(stub().await, "2");
    v2["rollout"] = json!({"strategy": "shadow", "steps": [100], "bake_seconds": 604800});
    let response = gateway
        .post("/api/v1/models/shadowed/deployments", ADMIN_KEY, &v2)
        .await;
    assert_eq!(response.status(), 202, "shadow deploy accepted");
    let created: serde_json::Value = response.json().await.expect("json");
    let id = created["deployment"]["id"].as_str().expect("id").to_owned();
    gateway
        .work_until(&worker, &id, |d| d.status == DeploymentStatus::Deployed)
        .await;
    gateway
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runs: Vec<Run> = runtime.block_on(async {
        let gateway = set_up().await;
        // Warm-up: connections, the routing cache (with the rollout), the key cache.
        let client = reqwest::Client::new();
        for model in ["plain", "shadowed"] {
            for _ in 0..100 {
                one(
                    &client,
                    &format!("{}/api/v1/models/{model}/predict", gateway.url),
                )
                .await;
            }
        }
        let mut runs = Vec::new();
        for r in 0..args.runs {
            let measured = run(&args, &gateway).await;
            let [plain, shadowed] = measured.0;
            println!(
                "run {}: p50 {:.3} / {:.3} ms, p99 {:.3} / {:.3} ms (plain / shadowed)",
                r + 1,
                plain.0,
                shadowed.0,
                plain.1,
                shadowed.1
            );
            runs.push(measured);
        }
        // The copies were made: the shadow's measurements (flushed every second) count them.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let rollout: serde_json::Value = gateway
            .get("/api/v1/models/shadowed/rollout", ADMIN_KEY)
            .await
            .json()
            .await
            .expect("rollout");
        let (copies, stable) = (
            &rollout["figures"]["canary"]["requests"],
            &rollout["figures"]["stable"]["requests"],
        );
        println!("shadow copies measured: {copies} (stable answers {stable}, warm-up included)");
        assert!(
            copies.as_u64().is_some_and(|n| n > 0),
            "no shadow copy was made: {rollout}"
        );
        runs
    });
    let series = |t: usize, p99: bool| -> Vec<f64> {
        runs.iter()
            .map(|r| if p99 { r.0[t].1 } else { r.0[t].0 })
            .collect()
    };
    let mut figures = Vec::new();
    for p99 in [false, true] {
        let label = format!(
            "predict p{} with a shadow rollout at 100 %",
            if p99 { 99 } else { 50 }
        );
        let mut figure =
            Figure::new(&label, "ms", series(1, p99)).against("no rollout", series(0, p99));
        if !p99 {
            figure = figure.target(Target::at_most(Of::Difference, 0.1, "≤ 0.1 ms added (p50)"));
        }
        println!(
            "{label}: {:.3} ms, without {:.3} ms, added {:.3} ms (medians of {} runs)",
            figure.median(),
            figure.baseline_median().unwrap_or(f64::NAN),
            figure.difference().unwrap_or(f64::NAN),
            args.runs
        );
        figures.push(figure);
    }
    print_verdicts(&figures);
    if let Some(path) = &args.json {
        let parameters = json!({"requests": args.requests, "runs": args.runs});
        write_json(path, "shadow", parameters, &figures, &[]);
    }
}
