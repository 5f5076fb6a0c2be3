//! OpenAI-route benchmark (not a test): what the gateway adds to `POST /v1/chat/completions`,
//! streamed and not.
//!
//! `scripts/bench stream [--requests N] [--runs R] [--chunks K] [--json FILE]`
//!
//! An upstream stub (axum on loopback) serves `/v1/chat/completions` the way TGI does: a JSON
//! answer, or with `"stream": true` `K` Server-Sent Events and `data: [DONE]`, all written at
//! once. It is deployed as model `bench` through the `http` provider on the gateway as
//! production builds it (`api::Application` via [`TestApp`], SQLite, static keys), and each
//! run sends, one request at a time (closed loop, one keep-alive connection per target; the
//! light-traffic case, where a request finds nothing else in flight), `N` requests direct to
//! the stub and `N` through the gateway, alternating direct and gateway in blocks so a noisy
//! neighbour hits both:
//!
//! - non-streamed: latency to the whole answer;
//! - streamed: time to the first body byte (TTFB) and to the end of the stream.
//!
//! Latencies are exact (`Instant` differences, sorted). Figures are medians over the runs of
//! each run's p50 and p99; the targets (docs/benchmarks.md, fixed before measuring) are on the
//! gateway's p50 minus the direct p50 of the same run: ≤ 0.5 ms for the non-streamed answer,
//! ≤ 1 ms for the first byte of a stream. Gateway, stub and client share the machine's cores.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, TestApp};
use tests::bench::{Figure, Of, Target, json_arg, print_verdicts, write_json};
use tests::db::Engine;

struct Args {
    requests: usize,
    runs: usize,
    chunks: usize,
    json: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let (json, rest) = json_arg();
    let mut args = Args {
        requests: 1000,
        runs: 3,
        chunks: 16,
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
            "--chunks" => args.chunks = number,
            _ => usage(&format!("unknown argument {flag}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: bench-stream [--requests N] [--runs R] [--chunks K] [--json FILE]"
    );
    std::process::exit(2)
}

/// The TGI-like stub; returns its base URL.
async fn start_stub(chunks: usize) -> String {
    let answer = json!({"id": "x", "object": "chat.completion", "created": 0, "model": "tgi",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})
    .to_string();
    let mut events = String::new();
    for i in 0..chunks {
        let chunk = json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "tgi",
            "choices": [{"index": 0, "delta": {"content": format!(" w{i}")}, "finish_reason": null}]});
        events.push_str(&format!("data: {chunk}\n\n"));
    }
    events.push_str("data: [DONE]\n\n");
    let chat = move |body: Bytes| {
        let (answer, events) = (answer.clone(), events.clone());
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if request["stream"] == true {
                let parts: Vec<Result<Bytes, std::io::Error>> = events
                    .split_inclusive("\n\n")
                    .map(|e| Ok(Bytes::from(e.to_owned())))
                    .collect();
                let body = Body::from_stream(futures_util::stream::iter(parts));
                ([("content-type", "text/event-stream")], body)
            } else {
                ([("content-type", "application/json")], Body::from(answer))
            }
        }
    };
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("stub address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("stub serves") });
    url
}

/// One request: (time to the first body byte, time to the end).
async fn one(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    stream: bool,
) -> (Duration, Duration) {
    let body = json!({"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": stream});
    let mut request = client.post(url).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let started = Instant::now();
    let mut response = request.send().await.expect("answer");
    assert!(response.status().is_success(), "{}", response.status());
    let mut first = None;
    while let Some(chunk) = response.chunk().await.expect("body") {
        if first.is_none() && !chunk.is_empty() {
            first = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    (first.unwrap_or(total), total)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// p50 and p99 of each measurement of one run, in milliseconds: [direct, gateway] ×
/// [non-streamed total, streamed first byte, streamed total].
struct Run([[(f64, f64); 3]; 2]);

async fn run(args: &Args, direct: &str, gateway: &TestApp) -> Run {
    let client = reqwest::Client::new();
    let targets = [
        (format!("{direct}/v1/chat/completions"), None),
        (
            format!("{}/v1/chat/completions", gateway.url),
            Some(ADMIN_KEY),
        ),
    ];
    let mut samples: [[Vec<Duration>; 3]; 2] = Default::default();
    let block = 50;
    for _ in 0..args.requests.div_ceil(block) {
        for (t, (url, key)) in targets.iter().enumerate() {
            for _ in 0..block {
                samples[t][0].push(one(&client, url, *key, false).await.1);
                let (first, total) = one(&client, url, *key, true).await;
                samples[t][1].push(first);
                samples[t][2].push(total);
            }
        }
    }
    let mut out = [[(0.0, 0.0); 3]; 2];
    for t in 0..2 {
        for m in 0..3 {
            let sorted = &mut samples[t][m];
            sorted.sort();
            out[t][m] = (percentile(sorted, 0.5), percentile(sorted, 0.99));
        }
    }
    Run(out)
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let runs: Vec<Run> = runtime.block_on(async {
        let stub = start_stub(args.chunks).await;
        let gateway = TestApp::start(Engine::Sqlite, &[]).await;
        let worker = gateway.worker();
        let spec = json!({"provider": "http", "endpoint_url": stub, "model_version": "1"});
        gateway.deploy_and_serve(&worker, "bench", spec).await;
        // Warm-up: connections, the routing cache, the key cache.
        let client = reqwest::Client::new();
        for _ in 0..50 {
            one(&client, &format!("{}/v1/chat/completions", gateway.url), Some(ADMIN_KEY), true).await;
        }
        let mut runs = Vec::new();
        for r in 0..args.runs {
            let measured = run(&args, &stub, &gateway).await;
            let [d, g] = &measured.0;
            println!(
                "run {}: non-streamed p50 {:.3} / {:.3} ms, first byte p50 {:.3} / {:.3} ms, stream end p50 {:.3} / {:.3} ms (direct / gateway)",
                r + 1, d[0].0, g[0].0, d[1].0, g[1].0, d[2].0, g[2].0
            );
            runs.push(measured);
        }
        runs
    });
    let series = |t: usize, m: usize, p99: bool| -> Vec<f64> {
        runs.iter()
            .map(|r| if p99 { r.0[t][m].1 } else { r.0[t][m].0 })
            .collect()
    };
    let names = [
        "chat non-streamed",
        "chat streamed first byte",
        "chat streamed end",
    ];
    let mut figures = Vec::new();
    for (m, name) in names.iter().enumerate() {
        for p99 in [false, true] {
            let label = format!("{name} p{} through the gateway", if p99 { 99 } else { 50 });
            let mut figure =
                Figure::new(&label, "ms", series(1, m, p99)).against("direct", series(0, m, p99));
            if !p99 && m == 0 {
                figure =
                    figure.target(Target::at_most(Of::Difference, 0.5, "≤ 0.5 ms added (p50)"));
            }
            if !p99 && m == 1 {
                figure = figure.target(Target::at_most(
                    Of::Difference,
                    1.0,
                    "≤ 1 ms added to the first byte (p50)",
                ));
            }
            println!(
                "{label}: {:.3} ms, direct {:.3} ms, added {:.3} ms (medians of {} runs)",
                figure.median(),
                figure.baseline_median().unwrap_or(f64::NAN),
                figure.difference().unwrap_or(f64::NAN),
                args.runs
            );
            figures.push(figure);
        }
    }
    print_verdicts(&figures);
    if let Some(path) = &args.json {
        let parameters =
            json!({"requests": args.requests, "runs": args.runs, "chunks": args.chunks});
        write_json(path, "stream", parameters, &figures, &[]);
    }
}
