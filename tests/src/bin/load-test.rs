//! Load test of the API (not a test): sustained predict traffic against the real binary
//! (`hokusai-serve dev`, a separate process, so its memory is its own) while its resident
//! memory is sampled from `/proc/<pid>/status` every 100 ms.
//!
//! `scripts/bench load [--seconds S] [--rate N] [--connections C] [--saturation-seconds S]
//! [--settle-seconds S] [--api-env KEY=VALUE]... [--json FILE]`. The API starts with a clean
//! environment (its settings are this program's); `--api-env` adds a variable to it, for
//! comparing a setting or an allocator option (`_RJEM_MALLOC_CONF`) on the same binary. The
//! model is an upstream stub on loopback served by this process ([`tests::upstream`]) and
//! deployed over HTTP with the `http` provider. Then:
//!
//! 1. memory before: the API's `VmRSS` once the model serves, before any load;
//! 2. `C` keep-alive connections are opened (C concurrent requests) and kept open;
//! 3. open loop: `N` requests/s for `S` seconds; request `i` is due at `start + i / N` and its
//!    latency counts from that due time (no coordinated omission);
//! 4. closed loop (saturation): `C` senders, each sending its next request when the last one
//!    answered, for the saturation seconds;
//! 5. the client is dropped (connections closed) and after the settle time (30 s by default)
//!    `VmRSS` is read again: does memory return?
//!
//! Traffic is a fixed mix, by request number: 70 % valid key and deployed model, 10 % an
//! invalid key, 10 % an undeployed model, 10 % a malformed JSON body. Every answer is counted
//! by status and by the `error` code of its body. The peak is `VmHWM` (the kernel's high
//! water mark), cross-checked with the largest `VmRSS` sample; the connections established
//! to the API's port are counted from `/proc/net/tcp{,6}` every second, so the connection
//! count is observed, not assumed. Each side needs `C` + some file descriptors: the run stops early when
//! `ulimit -n` is too low.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tests::bench::{Figure, Of, Target, json_arg, write_json_with};
use tests::process::{self, DevServer};

const KEY: &str = "hk_loadtest000000000000000000000000000000";
const INVALID_KEY: &str = "hk_not_a_key_000000000000000000000000000000";
const MODEL: &str = "loadtest";
const STUB_ANSWER: &str = r#"[{"label":"POSITIVE","score":0.99}]"#;
const MIB: f64 = 1024.0 * 1024.0;

struct Args {
    seconds: u64,
    rate: u64,
    connections: usize,
    saturation_seconds: u64,
    settle_seconds: u64,
    idle_seconds: u64,
    api_env: Vec<(String, String)>,
    json: Option<std::path::PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: load-test [--seconds S] [--rate N] [--connections C] \
         [--saturation-seconds S] [--settle-seconds S] [--idle-seconds S] \
         [--api-env KEY=VALUE]... [--json FILE]"
    );
    std::process::exit(2);
}

fn args() -> Args {
    let mut parsed = Args {
        seconds: 180,
        rate: 500,
        connections: 1_000,
        saturation_seconds: 20,
        settle_seconds: 30,
        idle_seconds: 30,
        api_env: Vec::new(),
        json: None,
    };
    let (json, argv) = json_arg();
    parsed.json = json;
    for pair in argv.chunks(2) {
        if pair[0] == "--api-env" {
            match pair.get(1).and_then(|v| v.split_once('=')) {
                Some((key, value)) if !key.is_empty() => {
                    parsed.api_env.push((key.to_owned(), value.to_owned()));
                    continue;
                }
                _ => usage(),
            }
        }
        let value = pair.get(1).and_then(|v| v.parse::<u64>().ok());
        match (pair[0].as_str(), value) {
            ("--seconds", Some(n)) if n > 0 => parsed.seconds = n,
            ("--rate", Some(n)) if n > 0 => parsed.rate = n,
            ("--connections", Some(n)) if n > 0 => parsed.connections = n as usize,
            ("--saturation-seconds", Some(n)) if n > 0 => parsed.saturation_seconds = n,
            ("--settle-seconds", Some(n)) => parsed.settle_seconds = n,
            ("--idle-seconds", Some(n)) if n > 0 => parsed.idle_seconds = n,
            _ => usage(),
        }
    }
    parsed
}

/// The kinds of request in the mix.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Valid,
    InvalidKey,
    UnknownModel,
    MalformedBody,
}

impl Kind {
    /// The mix by request number: 7 valid, then one of each error in every 10.
    fn of(i: u64) -> Kind {
        match i % 10 {
            7 => Kind::InvalidKey,
            8 => Kind::UnknownModel,
            9 => Kind::MalformedBody,
            _ => Kind::Valid,
        }
    }

    /// The status this kind must get.
    fn expected(self) -> u16 {
        match self {
            Kind::Valid => 200,
            Kind::InvalidKey => 401,
            Kind::UnknownModel => 404,
            Kind::MalformedBody => 400,
        }
    }
}

/// One answer: its status (0 for a transport error) and error code.
struct Answer {
    /// The status is the one its kind must get.
    expected: bool,
    status: u16,
    code: Option<String>,
    latency: Duration,
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(&self, kind: Kind, since: Instant) -> Answer {
        let model = match kind {
            Kind::UnknownModel => "not-deployed",
            _ => MODEL,
        };
        let url = format!("{}/api/v1/models/{model}/predict", self.base);
        let key = match kind {
            Kind::InvalidKey => INVALID_KEY,
            _ => KEY,
        };
        let body = match kind {
            Kind::MalformedBody => r#"{"inputs": "I love"#,
            _ => r#"{"inputs": "I love this movie"}"#,
        };
        let request = self
            .http
            .post(url)
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body);
        let (status, code) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let bytes = response.bytes().await.unwrap_or_default();
                let code = (status != 200)
                    .then(|| serde_json::from_slice::<Value>(&bytes).ok())
                    .flatten()
                    .and_then(|v| v["error"].as_str().map(str::to_owned));
                (status, code)
            }
            Err(_) => (0, Some("transport error".to_owned())),
        };
        Answer {
            expected: status == kind.expected(),
            status,
            code,
            latency: since.elapsed(),
        }
    }
}

/// What one phase saw.
struct Phase {
    elapsed: Duration,
    answers: Vec<Answer>,
}

impl Phase {
    fn percentile(&self, q: f64) -> f64 {
        let mut latencies: Vec<Duration> = self.answers.iter().map(|a| a.latency).collect();
        latencies.sort_unstable();
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len());
        latencies[i - 1].as_secs_f64() * 1_000.0
    }

    /// Requests answered with the status their kind must get, per second: a transport error
    /// or a wrong status is not throughput (it still counts in the latencies).
    fn throughput(&self) -> f64 {
        let answered = self.answers.iter().filter(|a| a.expected).count();
        answered as f64 / self.elapsed.as_secs_f64()
    }

    fn by_status(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.answers {
            *counts.entry(a.status.to_string()).or_default() += 1;
        }
        counts
    }

    fn by_code(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for a in &self.answers {
            let code = a.code.clone().unwrap_or_else(|| match a.status {
                200 => "ok".to_owned(),
                s => format!("{s} without error code"),
            });
            *counts.entry(code).or_default() += 1;
        }
        counts
    }

    /// Answers whose status is not what their kind must get (200, 401, 404, 400).
    fn unexpected(&self) -> usize {
        self.answers.iter().filter(|a| !a.expected).count()
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.answers.len(),
            "seconds": self.elapsed.as_secs_f64(),
            "throughput_rps": self.throughput(),
            "p50_ms": self.percentile(0.50),
            "p95_ms": self.percentile(0.95),
            "p99_ms": self.percentile(0.99),
            "by_status": self.by_status(),
            "by_error_code": self.by_code(),
            "unexpected_status": self.unexpected(),
        })
    }
}

/// Open loop at `rate` for `seconds`.
async fn open_loop(client: &Client, rate: u64, seconds: u64) -> Phase {
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        tasks.push(tokio::spawn(
            async move { client.send(Kind::of(i), due).await },
        ));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("request task"));
    }
    Phase {
        elapsed: start.elapsed().max(Duration::from_secs(seconds)),
        answers,
    }
}

/// Closed loop: `connections` senders for `seconds`.
async fn closed_loop(client: &Client, connections: usize, seconds: u64) -> Phase {
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let senders: Vec<_> = (0..connections)
        .map(|c| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut i = c as u64;
                while Instant::now() < end {
                    answers.push(client.send(Kind::of(i), Instant::now()).await);
                    i += connections as u64;
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for sender in senders {
        answers.extend(sender.await.expect("sender task"));
    }
    Phase {
        elapsed: start.elapsed(),
        answers,
    }
}

/// `VmRSS` and `VmHWM` of `pid` in bytes.
/// CPU time (user + system) the process has used so far, from `/proc/{pid}/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Established TCP connections whose local port is `port` (the API's side of its clients'
/// connections), from `/proc/net/tcp` and `/proc/net/tcp6`.
fn connections(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let mut fields = line.split_whitespace();
                    let local = fields.nth(1).unwrap_or("");
                    let state = fields.nth(1).unwrap_or("");
                    local.ends_with(&port) && state == "01"
                })
                .count()
        })
        .sum()
}

/// The soft "Max open files" of `pid` (`self` for this process).
fn fd_limit(pid: &str) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Samples of the API's memory (every 100 ms) and sockets (every second).
#[derive(Default)]
struct Samples {
    /// (seconds since start, VmRSS bytes).
    rss: Vec<(f64, u64)>,
    /// Largest VmHWM seen.
    hwm: u64,
    /// (seconds since start, connections established to the API).
    sockets: Vec<(f64, usize)>,
}

fn sample(
    pid: u32,
    port: u16,
    stop: Arc<AtomicBool>,
    started: Instant,
) -> std::thread::JoinHandle<Samples> {
    std::thread::spawn(move || {
        let mut samples = Samples::default();
        let mut tick = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let at = started.elapsed().as_secs_f64();
            if let Some((rss, hwm)) = memory(pid) {
                samples.rss.push((at, rss));
                samples.hwm = samples.hwm.max(hwm);
            }
            if tick.is_multiple_of(10) {
                samples.sockets.push((at, connections(port)));
            }
            tick += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

/// Largest value of `series` between `from` and `to` seconds.
fn peak<T: Copy + Ord + Default>(series: &[(f64, T)], from: f64, to: f64) -> T {
    series
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .map(|(_, v)| *v)
        .max()
        .unwrap_or_default()
}

/// Polls predict until the deployed model answers 200 (at most 60 s).
async fn wait_serving(client: &Client) {
    let start = Instant::now();
    loop {
        let answer = client.send(Kind::Valid, Instant::now()).await;
        if answer.status == 200 {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the model does not serve after 60 s (last status {}, {:?})",
            answer.status,
            answer.code
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let limit = fd_limit("self").unwrap_or(0);
    let needed = args.connections as u64 + 64;
    if limit < needed {
        eprintln!(
            "ulimit -n is {limit}: {} connections need at least {needed} descriptors on each \
             side (raise it with `ulimit -n {}`)",
            args.connections,
            needed * 2
        );
        std::process::exit(2);
    }
    let stub = tests::upstream::start(200, STUB_ANSWER, Duration::ZERO).await;
    let dir = process::scratch_dir();
    // 10 % of the traffic is invalid keys from one address: the mix, not a flood to limit.
    let mut envs = vec![
        ("HOKUSAI_DEV_API_KEY", KEY),
        ("RUST_LOG", "warn"),
        ("FAILED_AUTH_PER_IP_PER_MINUTE", "0"),
    ];
    envs.extend(args.api_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut server = DevServer::start(&dir, &envs).await;
    let pid = server.child.id().expect("the API runs");
    let api_limit = fd_limit(&pid.to_string()).unwrap_or(0);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .pool_idle_timeout(None)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let client = Client {
        http,
        base: server.base_url.clone(),
    };
    let deploy = json!({"provider": "http", "endpoint_url": stub, "model_version": "1"});
    let response = client
        .http
        .post(format!("{}/api/v1/models/{MODEL}/deployments", client.base))
        .bearer_auth(KEY)
        .json(&deploy)
        .send()
        .await
        .expect("deploy request");
    assert_eq!(response.status(), 202, "deploy accepted");
    wait_serving(&client).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Idle: a model deployed, no traffic; what the process spends on its own loops.
    let (idle_from, idle_clock) = (cpu_time(pid).expect("the API's CPU time"), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_cpu = cpu_time(pid).expect("the API's CPU time") - idle_from;
    let idle_ms_per_s = idle_cpu.as_secs_f64() * 1_000.0 / idle_clock.elapsed().as_secs_f64();
    eprintln!(
        "idle: {idle_ms_per_s:.2} ms of CPU per second over {} s",
        args.idle_seconds
    );

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let port: u16 = (server.base_url.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("the API's port");
    let sampler = sample(pid, port, stop.clone(), started);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, _) = memory(pid).expect("the API's memory");
    eprintln!(
        "API pid {pid}: VmRSS before load {:.1} MiB",
        before as f64 / MIB
    );

    // Open every connection at once and keep them in the pool.
    let opened = Instant::now();
    let burst: Vec<_> = (0..args.connections)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send(Kind::Valid, Instant::now()).await })
        })
        .collect();
    for task in burst {
        task.await.expect("burst task");
    }
    eprintln!(
        "{} connections opened in {:.1} s",
        args.connections,
        opened.elapsed().as_secs_f64()
    );
    let open_from = started.elapsed().as_secs_f64();
    let open = open_loop(&client, args.rate, args.seconds).await;
    let open_to = started.elapsed().as_secs_f64();
    eprintln!(
        "open loop: {:.0} req/s, p99 {:.1} ms",
        open.throughput(),
        open.percentile(0.99)
    );
    let saturated = closed_loop(&client, args.connections, args.saturation_seconds).await;
    let saturated_to = started.elapsed().as_secs_f64();
    eprintln!(
        "saturation: {:.0} req/s, p99 {:.1} ms",
        saturated.throughput(),
        saturated.percentile(0.99)
    );
    drop(client);
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let (after, hwm) = memory(pid).expect("the API's memory");
    let sockets_after = connections(port);
    stop.store(true, Ordering::SeqCst);
    let samples = sampler.join().expect("sampler");
    server.child.kill().await.ok();
    std::fs::remove_dir_all(&dir).ok();

    let hwm = hwm.max(samples.hwm);
    let peak_rss = peak(&samples.rss, 0.0, saturated_to);
    let (open_sockets, sat_sockets) = (
        peak(&samples.sockets, open_from, open_to),
        peak(&samples.sockets, open_to, saturated_to),
    );
    let mib = |b: u64| b as f64 / MIB;
    println!(
        "API load test: {} connections, open loop {} req/s for {} s, saturation {} s, \
         memory {} s after",
        args.connections, args.rate, args.seconds, args.saturation_seconds, args.settle_seconds
    );
    println!("| phase | requests | req/s | p50 ms | p95 ms | p99 ms | connections (peak) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, phase, socks) in [
        ("open loop", &open, open_sockets),
        ("saturation", &saturated, sat_sockets),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {socks} |",
            phase.answers.len(),
            phase.throughput(),
            phase.percentile(0.5),
            phase.percentile(0.95),
            phase.percentile(0.99)
        );
        println!("  by status: {:?}", phase.by_status());
        println!("  by error code: {:?}", phase.by_code());
        println!(
            "  answers with another status than their kind's: {}",
            phase.unexpected()
        );
    }
    println!(
        "idle dev: {idle_ms_per_s:.2} ms of CPU per second over {} s (a model deployed, no traffic)",
        args.idle_seconds
    );
    println!(
        "API memory: before {:.1} MiB, peak VmHWM {:.1} MiB (largest VmRSS sample {:.1} MiB), \
         {} s after {:.1} MiB; connections after {sockets_after}; ulimit -n {limit} (API {api_limit})",
        mib(before),
        mib(hwm),
        mib(peak_rss),
        args.settle_seconds,
        mib(after)
    );

    if let Some(path) = &args.json {
        let one = |v: f64| vec![v];
        let figures = [
            Figure::new(
                &format!("load open loop throughput at {} req/s", args.rate),
                "req/s",
                one(open.throughput()),
            )
            .target(Target::at_least(
                Of::Value,
                args.rate as f64 * 0.95,
                "keeps >= 95 % of the offered rate",
            )),
            Figure::new(
                "load answers with an unexpected status",
                "requests",
                one((open.unexpected() + saturated.unexpected()) as f64),
            )
            .target(Target::at_most(
                Of::Value,
                0.0,
                "0 (valid 200, bad key 401, no model 404, bad JSON 400)",
            )),
            Figure::new(
                "dev idle CPU (a model deployed, no traffic)",
                "ms/s",
                one(idle_ms_per_s),
            )
            .target(Target::at_most(Of::Value, 5.0, "<= 5 ms of CPU per second")),
            Figure::new("load open loop p50", "ms", one(open.percentile(0.50))),
            Figure::new("load open loop p95", "ms", one(open.percentile(0.95))),
            Figure::new("load open loop p99", "ms", one(open.percentile(0.99))),
            Figure::new(
                &format!(
                    "load saturation throughput ({} connections)",
                    args.connections
                ),
                "req/s",
                one(saturated.throughput()),
            ),
            Figure::new("load saturation p50", "ms", one(saturated.percentile(0.50))),
            Figure::new("load saturation p95", "ms", one(saturated.percentile(0.95))),
            Figure::new("load saturation p99", "ms", one(saturated.percentile(0.99))),
            Figure::new(
                &format!("API peak RSS (VmHWM) at {} connections", args.connections),
                "MiB",
                one(mib(hwm)),
            )
            .target(Target::at_most(Of::Value, 64.0, "<= 64 MiB")),
            Figure::new(
                &format!("API RSS {} s after the load", args.settle_seconds),
                "MiB",
                one(mib(after)),
            )
            .against("RSS before the load", one(mib(before)))
            .target(Target::at_most(
                Of::Ratio,
                1.25,
                "memory returns: <= 1.25 x before",
            )),
        ];
        let parameters = json!({
            "seconds": args.seconds,
            "rate": args.rate,
            "connections": args.connections,
            "saturation_seconds": args.saturation_seconds,
            "settle_seconds": args.settle_seconds,
            "api_env": args.api_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
            "idle_seconds": args.idle_seconds,
            "mix": "70 % valid, 10 % invalid key, 10 % undeployed model, 10 % malformed body",
            "api": "hokusai-serve dev (API, worker, HF emulator and SQLite in one process), RUST_LOG=warn",
        });
        let details = json!({
            "open_loop": open.json(),
            "saturation": saturated.json(),
            "memory_mib": {
                "before": mib(before),
                "peak_vmhwm": mib(hwm),
                "peak_vmrss_sample": mib(peak_rss),
                "after": mib(after),
                "samples": samples.rss.len(),
            },
            "api_connections": {
                "open_loop_peak": open_sockets,
                "saturation_peak": sat_sockets,
                "after": sockets_after,
            },
            "fd_limit": {"load_generator": limit, "api": api_limit},
        });
        let notes = [format!(
            "connections to the API observed: {open_sockets} during the open loop, \
             {sat_sockets} at saturation, {sockets_after} after (asked: {})",
            args.connections
        )];
        write_json_with(path, "load", parameters, &figures, &notes, details);
    }
}
