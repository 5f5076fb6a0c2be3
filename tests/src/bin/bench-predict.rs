//! Predict-path benchmark (not a test): what the gateway adds in front of a model endpoint.
//!
//! `scripts/bench predict [--seconds S] [--saturation-seconds S] [--rate N]
//! [--connections C] [--runs R] [--auth static|hokusai|hokusai-cold]
//! [--placement pinned|shared|both] [--limits local|redis] [--json FILE]`
//! (`--auth`: keys from configuration, or auth.hokus.ai's contract through the fake auth
//! service with the key cache warm or disabled; `--json`: every sample, medians, the
//! direct baseline, ratios and targets for `scripts/bench`'s report). An upstream stub
//! (axum on loopback, `GET /health` and a fixed `POST /` answer) is served directly and
//! through the gateway as production builds it (`api::Application` via [`TestApp`]: fresh
//! SQLite, static keys, the provider registry) with the stub deployed by a worker through
//! the `http` provider and the routing cache warm. Each run measures, direct then gateway:
//!
//! - a fixed rate (open loop): request `i` is due at `start + i / rate` and is sent then on a
//!   task of its own, whatever the earlier requests are doing, so a slow server cannot delay
//!   the sends and hide its queueing (no coordinated omission). Its latency counts from its
//!   send: tokio's timer fires up to 1 ms after the due time, with a phase that stays the
//!   same within a run (the intervals are whole milliseconds), so counting from the due time
//!   added a different constant of 0–1 ms to the direct and the gateway figures. How far the
//!   sends fall behind schedule is printed (p99) for each measurement;
//!   at `--rate` (1,000 req/s) and at `--light-rate` (20 req/s, for `--light-seconds`): most
//!   models see light traffic, where a lone request finds threads asleep and pools cold;
//! - saturation (closed loop): `C` connections each send their next request when the last
//!   one answered.
//!
//! The stub, the gateway and the load generator each have a runtime; `--placement` says where
//! their threads run (both placements by default, pinned first):
//!
//! - `pinned`: the gateway on core 1 with one worker thread (what tokio starts on a 1-vCPU
//!   task), the load generator and the stub on core 0. This is how the gateway is deployed:
//!   its CPU is not the CPU of its clients or of the model endpoint. The direct run loads
//!   core 0 only; the gateway run adds the gateway's core, so the throughput ratio is the
//!   share of what the client and the endpoint can exchange that one gateway core forwards.
//!   The targets are judged here.
//! - `shared`: all three on both cores. Every request through the gateway then pays for two
//!   HTTP exchanges on the CPU that also generates and answers the load: its throughput is
//!   below half of direct even for a gateway as cheap as the load generator and the stub
//!   together. Reported for context.
//!
//! `--limits local|redis` (implies `--auth hokusai`) measures the per-key rate limiter: in
//! the same gateway and the same runs, a key without an allowance (no limiter call) is the
//! baseline and a key with a large allowance pays one limiter check per request, in process
//! or as one script on Redis (`REDIS_URL`, `HOKUSAI_TEST_REDIS_URL` or loopback:6379).
//!
//! Figures are medians over the runs; added latency and the throughput ratio are taken
//! between medians. Latencies are exact (every request's own `Instant` difference, in
//! nanoseconds, sorted: no histogram buckets); a failed request counts in the latencies with
//! the time it took to fail and in the error count, and throughput counts answered requests
//! only.
//!
//! Targets and where they are judged were fixed before measuring (docs/benchmarks.md): the
//! added latency at both rates on the pinned placement (the gateway on its own core, as it is
//! deployed), the saturation throughput ratio on the shared placement (everything on the same
//! two cores; the harder one).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tests::app::{ADMIN_KEY, TestApp};
use tests::bench::{Figure, Of, Target as Goal, json_arg, print_verdicts};
use tests::db::Engine;
use tests::fake_auth::FakeAuth;

/// The fixed answer of the upstream stub.
const STUB_ANSWER: &str = r#"[{"label":"POSITIVE","score":0.99}]"#;

struct Args {
    seconds: u64,
    saturation_seconds: u64,
    rate: u64,
    light_rate: u64,
    light_seconds: u64,
    connections: usize,
    runs: usize,
    json: Option<std::path::PathBuf>,
    auth: Auth,
    placements: Vec<Placement>,
    limits: Option<Limiter>,
}

/// Where the measured per-key limiter keeps its counts (`--limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limiter {
    /// In process.
    Local,
    /// One Lua script per request on Redis.
    Redis,
}

impl Limiter {
    fn label(self) -> &'static str {
        match self {
            Self::Local => "per-key limits in process",
            Self::Redis => "per-key limits on Redis",
        }
    }
}

/// The key whose allowance is checked on every request (`--limits`).
const LIMITED_KEY: &str = "hk_bench_limited0000000000000000000000";

fn args() -> Args {
    let mut parsed = Args {
        seconds: 10,
        saturation_seconds: 5,
        rate: 1_000,
        light_rate: 20,
        light_seconds: 15,
        connections: 64,
        runs: 3,
        json: None,
        auth: Auth::Static,
        placements: vec![Placement::Pinned, Placement::Shared],
        limits: None,
    };
    let (json, mut argv) = json_arg();
    parsed.json = json;
    if let Some(at) = argv.iter().position(|a| a == "--auth") {
        parsed.auth = match argv.get(at + 1).map(String::as_str) {
            Some("static") => Auth::Static,
            Some("hokusai") => Auth::Hokusai { cold: false },
            Some("hokusai-cold") => Auth::Hokusai { cold: true },
            _ => {
                eprintln!("--auth takes static, hokusai (warm key cache) or hokusai-cold");
                std::process::exit(2);
            }
        };
        argv.drain(at..at + 2);
    }
    if let Some(at) = argv.iter().position(|a| a == "--limits") {
        parsed.limits = match argv.get(at + 1).map(String::as_str) {
            Some("local") => Some(Limiter::Local),
            Some("redis") => Some(Limiter::Redis),
            _ => {
                eprintln!("--limits takes local or redis");
                std::process::exit(2);
            }
        };
        if parsed.auth == Auth::Static {
            parsed.auth = Auth::Hokusai { cold: false };
        }
        argv.drain(at..at + 2);
    }
    if let Some(at) = argv.iter().position(|a| a == "--placement") {
        parsed.placements = match argv.get(at + 1).map(String::as_str) {
            Some("shared") => vec![Placement::Shared],
            Some("pinned") => vec![Placement::Pinned],
            Some("both") => vec![Placement::Pinned, Placement::Shared],
            _ => {
                eprintln!("--placement takes pinned, shared or both (the default)");
                std::process::exit(2);
            }
        };
        argv.drain(at..at + 2);
    }
    for pair in argv.chunks(2) {
        let value = pair
            .get(1)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| *v > 0);
        match (pair[0].as_str(), value) {
            ("--seconds", Some(n)) => parsed.seconds = n,
            ("--saturation-seconds", Some(n)) => parsed.saturation_seconds = n,
            ("--rate", Some(n)) => parsed.rate = n,
            ("--light-rate", Some(n)) => parsed.light_rate = n,
            ("--light-seconds", Some(n)) => parsed.light_seconds = n,
            ("--connections", Some(n)) => parsed.connections = n as usize,
            ("--runs", Some(n)) => parsed.runs = n as usize,
            _ => {
                eprintln!(
                    "usage: bench-predict [--seconds S] [--saturation-seconds S] [--rate N] \
                     [--light-rate N] [--light-seconds S] [--connections C] [--runs R] [--auth static|hokusai|hokusai-cold] \
                     [--placement pinned|shared|both] [--limits local|redis] [--json FILE]"
                );
                std::process::exit(2);
            }
        }
    }
    parsed
}

/// One request the load generator repeats.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    key: Option<&'static str>,
    body: Arc<Value>,
}

impl Target {
    /// Sends once; true when the answer was 200 and fully read.
    async fn send(&self) -> bool {
        let mut request = self.client.post(&self.url).json(&*self.body);
        if let Some(key) = self.key {
            request = request.bearer_auth(key);
        }
        match request.send().await {
            Ok(response) => response.status() == 200 && response.bytes().await.is_ok(),
            Err(_) => false,
        }
    }
}

/// What one measurement saw.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

/// `latencies` of every request, failed ones included; `errors` of them failed.
fn summarize(mut latencies: Vec<Duration>, errors: usize, elapsed: Duration) -> Sample {
    latencies.sort_unstable();
    let answered = latencies.len().saturating_sub(errors);
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[i - 1].as_secs_f64() * 1_000.0
    };
    Sample {
        rps: answered as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        errors,
    }
}

/// Open loop at `rate` requests/s for `seconds`; latency from each request's send, which
/// is its due time as closely as the timer allows (see the module's header).
async fn fixed_rate(target: &Target, rate: u64, seconds: u64) -> Sample {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total as usize);
    let mut lags = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let sent = Instant::now();
        lags.push(sent - due);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let ok = target.send().await;
            (ok, sent.elapsed())
        }));
    }
    lags.sort_unstable();
    let lag_p99 = lags[(lags.len() * 99 / 100).min(lags.len() - 1)];
    eprintln!(
        "  {rate} req/s: sends behind schedule by {:.3} ms at p99 (the timer's resolution is 1 ms)",
        lag_p99.as_secs_f64() * 1e3
    );
    let (mut latencies, mut errors) = (Vec::with_capacity(tasks.len()), 0);
    for task in tasks {
        let (ok, latency) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("every request answers within 30 s")
            .expect("request task");
        latencies.push(latency);
        errors += usize::from(!ok);
    }
    summarize(
        latencies,
        errors,
        start.elapsed().min(Duration::from_secs(seconds)),
    )
}

/// Closed loop: `connections` senders for `seconds`; latency from each send.
async fn saturation(target: &Target, connections: usize, seconds: u64) -> Sample {
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let senders: Vec<_> = (0..connections)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < end {
                    let sent = Instant::now();
                    let ok = target.send().await;
                    latencies.push(sent.elapsed());
                    errors += usize::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for sender in senders {
        let (l, e) = sender.await.expect("sender task");
        latencies.extend(l);
        errors += e;
    }
    summarize(latencies, errors, start.elapsed())
}

/// The upstream stub on loopback; returns its URL.
async fn start_stub() -> String {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/",
            post(|| async { ([("content-type", "application/json")], STUB_ANSWER) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stub");
    let url = format!("http://{}", listener.local_addr().expect("stub address"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("stub serves") });
    url
}

/// How the gateway validates keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// Keys from configuration (no call).
    Static,
    /// auth.hokus.ai's contract, spoken by the fake auth service on loopback; `cold`: no key
    /// cache (`AUTH_CACHE_TTL_SECONDS=0`), so requests validate upstream (concurrent ones
    /// for the same key share one call).
    Hokusai { cold: bool },
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Self::Static => "static keys",
            Self::Hokusai { cold: false } => "hokusai, key cache warm",
            Self::Hokusai { cold: true } => "hokusai, no key cache",
        }
    }
}

/// The gateway with the stub deployed as model `bench` through the `http` provider; with
/// the hokusai backend, validating against `fake`.
async fn start_gateway(
    stub: &str,
    auth: Auth,
    fake: Option<&FakeAuth>,
    limits: Option<Limiter>,
) -> TestApp {
    let app = match (auth, fake) {
        (Auth::Hokusai { cold }, Some(fake)) => {
            // The baseline key has no allowance to check (too large to measure); the
            // limited key one far above what the bench sends, so nothing is refused.
            fake.add_key(ADMIN_KEY, "bench-admin", &["admin", "predict"]);
            fake.set_limits(ADMIN_KEY, Some(u64::from(u32::MAX)), None);
            let unique = uuid::Uuid::new_v4().simple().to_string();
            fake.add_key(
                LIMITED_KEY,
                &format!("bench-limited-{unique}"),
                &["predict"],
            );
            fake.set_limits(LIMITED_KEY, Some(1_000_000_000), None);
            let ttl = if cold { "0" } else { "300" };
            let redis = std::env::var("REDIS_URL")
                .or_else(|_| std::env::var("HOKUSAI_TEST_REDIS_URL"))
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let mut overrides = vec![
                ("AUTH_CACHE_TTL_SECONDS", ttl),
                ("AUTH_NEGATIVE_CACHE_TTL_SECONDS", ttl),
            ];
            if limits == Some(Limiter::Redis) {
                overrides.push(("REDIS_URL", redis.as_str()));
            }
            TestApp::start_hokusai(Engine::Sqlite, &fake.url, &overrides).await
        }
        _ => TestApp::start(Engine::Sqlite, &[]).await,
    };
    let worker = app.worker();
    let body = json!({"provider": "http", "endpoint_url": stub, "model_version": "1"});
    app.deploy_and_serve(&worker, "bench", body).await;
    app
}

fn targets(stub: &str, gateway: &TestApp, connections: usize) -> (Target, Target, Target) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections * 2)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let direct = Target {
        client: client.clone(),
        url: format!("{stub}/"),
        key: None,
        body: Arc::new(json!({"inputs": "I love this movie"})),
    };
    let through = Target {
        client,
        url: format!("{}/api/v1/models/bench/predict", gateway.url),
        key: Some(ADMIN_KEY),
        body: Arc::new(json!({"inputs": "I love this movie"})),
    };
    let limited = Target {
        key: Some(LIMITED_KEY),
        ..through.clone()
    };
    (direct, through, limited)
}

/// Samples of one scenario, direct and through the gateway.
#[derive(Default)]
struct Series {
    direct: Vec<Sample>,
    gateway: Vec<Sample>,
    /// Through the gateway with the limiter checked (`--limits`).
    limited: Vec<Sample>,
}

async fn measure(
    args: &Args,
    direct: &Target,
    gateway: &Target,
    limited: Option<&Target>,
) -> (Series, Series, Series) {
    let (mut light, mut rate, mut sat) = (Series::default(), Series::default(), Series::default());
    for run in 1..=args.runs {
        eprintln!("run {run}/{}", args.runs);
        light
            .direct
            .push(fixed_rate(direct, args.light_rate, args.light_seconds).await);
        light
            .gateway
            .push(fixed_rate(gateway, args.light_rate, args.light_seconds).await);
        rate.direct
            .push(fixed_rate(direct, args.rate, args.seconds).await);
        rate.gateway
            .push(fixed_rate(gateway, args.rate, args.seconds).await);
        if let Some(limited) = limited {
            rate.limited
                .push(fixed_rate(limited, args.rate, args.seconds).await);
        }
        let seconds = args.saturation_seconds;
        sat.direct
            .push(saturation(direct, args.connections, seconds).await);
        sat.gateway
            .push(saturation(gateway, args.connections, seconds).await);
        if let Some(limited) = limited {
            sat.limited
                .push(saturation(limited, args.connections, seconds).await);
        }
    }
    (light, rate, sat)
}

fn median(samples: &[Sample], field: fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(field).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Medians of (requests/s, p50, p99, errors summed).
fn medians(samples: &[Sample]) -> (f64, f64, f64, usize) {
    let errors = samples.iter().map(|s| s.errors).sum();
    let (rps, p50, p99) = (
        median(samples, |s| s.rps),
        median(samples, |s| s.p50_ms),
        median(samples, |s| s.p99_ms),
    );
    (rps, p50, p99, errors)
}

/// What one placement measured.
struct Measured {
    placement: Placement,
    /// At `--light-rate`.
    light: Series,
    rate: Series,
    sat: Series,
    /// Validations the fake auth service answered during the measurement (hokusai backend).
    validations: Option<usize>,
}

fn report(args: &Args, m: &Measured) {
    let (light, rate, sat) = (&m.light, &m.rate, &m.sat);
    println!();
    println!("placement: {}", m.placement.label());
    println!(
        "predict path, medians of {} runs ({} s at {} req/s and {} s at {} req/s open loop; {} s saturation with {} connections)",
        args.runs,
        args.light_seconds,
        args.light_rate,
        args.seconds,
        args.rate,
        args.saturation_seconds,
        args.connections
    );
    println!(
        "| scenario | path | requests/s | p50 ms | p99 ms | errors |\n|---|---|---:|---:|---:|---:|"
    );
    let rows = [
        (
            format!("{} req/s", args.light_rate),
            "direct",
            &light.direct,
        ),
        (
            format!("{} req/s", args.light_rate),
            "gateway",
            &light.gateway,
        ),
        (format!("{} req/s", args.rate), "direct", &rate.direct),
        (format!("{} req/s", args.rate), "gateway", &rate.gateway),
        ("saturation".to_owned(), "direct", &sat.direct),
        ("saturation".to_owned(), "gateway", &sat.gateway),
    ];
    let limited_rows = [
        (format!("{} req/s", args.rate), &rate.limited),
        ("saturation".to_owned(), &sat.limited),
    ];
    let label = args.limits.map_or("", Limiter::label);
    let limited_rows = limited_rows
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(scenario, s)| (scenario, label, s));
    for (scenario, path, samples) in rows.into_iter().chain(limited_rows) {
        let (rps, p50, p99, errors) = medians(samples);
        println!("| {scenario} | {path} | {rps:.0} | {p50:.3} | {p99:.3} | {errors} |");
    }
    if let Some(limits) = args.limits {
        let (_, b50, b99, _) = medians(&rate.gateway);
        let (_, l50, l99, _) = medians(&rate.limited);
        println!(
            "added by {} at {} req/s: p50 {:.3} ms, p99 {:.3} ms (gateway without limits: p50 {b50:.3} ms, p99 {b99:.3} ms)",
            limits.label(),
            args.rate,
            l50 - b50,
            l99 - b99
        );
    }
    println!();
    print_verdicts(&figures(args, m));
    if let Some(validations) = m.validations {
        println!("auth.hokus.ai validations during the measurement: {validations}");
    }
}

/// The figures of one placement: added p50 and p99 at both fixed rates, and the throughput
/// ratio at saturation, each against the direct path of the same runs. Targets (the floors of
/// docs/benchmarks.md) on the latencies when pinned, on the ratio when shared.
fn figures(args: &Args, m: &Measured) -> Vec<Figure> {
    let (light, rate, sat) = (&m.light, &m.rate, &m.sat);
    let field =
        |samples: &[Sample], f: fn(&Sample) -> f64| -> Vec<f64> { samples.iter().map(f).collect() };
    let suffix = match m.placement {
        Placement::Pinned => "gateway on its own core",
        Placement::Shared => "all on shared cores",
    };
    let judged = |figure: Figure, goal: Goal, here: Placement| {
        if m.placement == here {
            figure.target(goal)
        } else {
            figure
        }
    };
    let p50 = (|s: &Sample| s.p50_ms) as fn(&Sample) -> f64;
    let p99 = (|s: &Sample| s.p99_ms) as fn(&Sample) -> f64;
    let mut all = Vec::new();
    for (series, at, p99_limit) in [(light, args.light_rate, 2.0), (rate, args.rate, 1.0)] {
        for (name, f, limit) in [("p50", p50, 0.3), ("p99", p99, p99_limit)] {
            all.push(judged(
                Figure::new(
                    &format!("predict {name} at {at} req/s, gateway ({suffix})"),
                    "ms",
                    field(&series.gateway, f),
                )
                .against(&format!("direct {name}"), field(&series.direct, f)),
                Goal::at_most(
                    Of::Difference,
                    limit,
                    &format!("added {name} <= {limit} ms"),
                ),
                Placement::Pinned,
            ));
        }
    }
    all.push(judged(
        Figure::new(
            &format!("predict throughput at saturation, gateway ({suffix})"),
            "req/s",
            field(&sat.gateway, |s| s.rps),
        )
        .against("direct throughput", field(&sat.direct, |s| s.rps)),
        Goal::at_least(Of::Ratio, 0.4, ">= 40 % of direct"),
        Placement::Shared,
    ));
    all.push(
        Figure::new(
            &format!("predict p99 at saturation, gateway ({suffix})"),
            "ms",
            field(&sat.gateway, |s| s.p99_ms),
        )
        .against("direct p99", field(&sat.direct, |s| s.p99_ms)),
    );
    if let Some(limits) = args.limits.filter(|_| !rate.limited.is_empty()) {
        for (name, f) in [("p50", p50), ("p99", p99)] {
            all.push(
                Figure::new(
                    &format!(
                        "predict {name} at {} req/s, {} ({suffix})",
                        args.rate,
                        limits.label()
                    ),
                    "ms",
                    field(&rate.limited, f),
                )
                .against(
                    &format!("gateway {name} without limits"),
                    field(&rate.gateway, f),
                ),
            );
        }
    }
    all
}

fn write_json(path: &std::path::Path, args: &Args, measured: &[Measured]) {
    let figures: Vec<Figure> = measured.iter().flat_map(|m| figures(args, m)).collect();
    let errors: usize = measured
        .iter()
        .flat_map(|m| {
            [
                &m.light.direct,
                &m.light.gateway,
                &m.rate.direct,
                &m.rate.gateway,
                &m.sat.direct,
                &m.sat.gateway,
            ]
        })
        .flat_map(|s| s.iter().map(|x| x.errors))
        .sum();
    let parameters = serde_json::json!({
        "seconds": args.seconds,
        "saturation_seconds": args.saturation_seconds,
        "rate": args.rate,
        "light_rate": args.light_rate,
        "light_seconds": args.light_seconds,
        "connections": args.connections,
        "runs": args.runs,
        "auth": args.auth.label(),
        "limits": args.limits.map(Limiter::label),
        "placements": measured.iter().map(|m| m.placement.label()).collect::<Vec<_>>(),
    });
    let mut notes = vec![format!(
        "failed requests over every run, placement and path: {errors}"
    )];
    if measured.iter().any(|m| m.placement == Placement::Shared) {
        notes.push(
            "all on shared cores: a request through the gateway is two HTTP exchanges on the \
             cores that also generate and answer the load, so its throughput ratio stays \
             below 50 % even for a gateway as cheap as the load generator and stub together; \
             the targets are judged with the gateway on its own core, as it is deployed \
             (docs/benchmarks.md)"
                .to_owned(),
        );
    }
    tests::bench::write_json(path, "predict", parameters, &figures, &notes);
}

/// Where the threads of the stub, the gateway and the load generator run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Each on its own multi-thread runtime over every core: all three compete for the same
    /// two cores, so every request through the gateway pays for four HTTP exchanges on the
    /// CPU that also generates the load and answers it.
    Shared,
    /// The gateway alone on core 1 (a one-worker runtime, as tokio sizes it on a 1-vCPU
    /// task); the load generator and the stub on core 0, one worker each. The direct run
    /// uses core 0 only, the gateway run adds core 1: the ratio says how much of what the
    /// client and its model endpoint can exchange one gateway core forwards.
    Pinned,
}

impl Placement {
    fn label(self) -> &'static str {
        match self {
            Self::Shared => "shared: stub, gateway and load generator on both cores",
            Self::Pinned => "pinned: gateway on core 1; load generator and stub on core 0",
        }
    }

    /// A runtime for `role`: on every core (shared) or on one core with one worker.
    fn runtime(self, role: &'static str) -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name(role);
        if self == Self::Pinned {
            let core = if role == "gateway" { 1 } else { 0 };
            let cores = core_affinity::get_core_ids().unwrap_or_default();
            let Some(id) = cores.into_iter().find(|c| c.id == core) else {
                eprintln!("--placement pinned needs cores 0 and 1");
                std::process::exit(2);
            };
            builder.worker_threads(1).on_thread_start(move || {
                assert!(
                    core_affinity::set_for_current(id),
                    "pin {role} to core {core}"
                );
            });
        }
        builder.build().expect("runtime")
    }
}

/// Starts the stub (and the fake auth service) and the gateway in `placement`, warms both
/// paths and measures them.
fn run(args: &Args, placement: Placement) -> Measured {
    let stubs = placement.runtime("stub");
    let gateways = placement.runtime("gateway");
    let stub = stubs.block_on(start_stub());
    let fake = match args.auth {
        Auth::Static => None,
        Auth::Hokusai { .. } => Some(stubs.block_on(FakeAuth::start())),
    };
    let gateway = gateways.block_on(start_gateway(&stub, args.auth, fake.as_ref(), args.limits));
    eprintln!("placement: {}", placement.label());
    let load = placement.runtime("load");
    let measured = load.block_on(async {
        let (direct, through, limited) = targets(&stub, &gateway, args.connections);
        let limited = args.limits.map(|_| limited);
        for target in [Some(&direct), Some(&through), limited.as_ref()]
            .into_iter()
            .flatten()
        {
            for _ in 0..200 {
                assert!(
                    target.send().await,
                    "warm-up request to {} failed",
                    target.url
                );
            }
        }
        let before = fake.as_ref().map(FakeAuth::validations);
        let (light, rate, sat) = measure(args, &direct, &through, limited.as_ref()).await;
        let validations = fake
            .as_ref()
            .zip(before)
            .map(|(fake, before)| fake.validations() - before);
        Measured {
            placement,
            light,
            rate,
            sat,
            validations,
        }
    });
    drop(load);
    drop(gateway);
    gateways.shutdown_timeout(Duration::from_secs(1));
    stubs.shutdown_timeout(Duration::from_secs(1));
    measured
}

fn main() {
    let args = args();
    println!("authentication: {}", args.auth.label());
    let measured: Vec<Measured> = args
        .placements
        .iter()
        .map(|placement| run(&args, *placement))
        .collect();
    for m in &measured {
        report(&args, m);
    }
    if let Some(path) = &args.json {
        write_json(path, &args, &measured);
    }
}
