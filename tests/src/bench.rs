//! Measurements shared by the benchmark binaries (`scripts/bench`): the queue's raw
//! throughput (`bench-queue`), which `bench-pipeline` prints next to deployments per second
//! so the saga's overhead over the bare queue is visible in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shared::domain::DeploymentId;
use shared::queue::{Envelope, MessageKind, Queue};

/// How the benchmark reaches PostgreSQL (`HOKUSAI_TEST_POSTGRES_URL`), as the server reports
/// its own session: `"TLS"` or `"no TLS"`. Printed above the PostgreSQL rows: on a 2-core
/// machine TLS on the loopback connection costs about a fifth of the pipeline's throughput
/// (docs/benchmarks.md), and `scripts/bench` connects without it, as the PostgreSQL queues
/// the floors compare with were measured.
pub async fn postgres_transport() -> String {
    use sea_orm::{ConnectionTrait, Statement};
    let url = crate::db::postgres_admin_url();
    let db = sea_orm::Database::connect(&url)
        .await
        .expect("PostgreSQL must be reachable (HOKUSAI_TEST_POSTGRES_URL)");
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ))
        .await
        .expect("read pg_stat_ssl");
    let tls = row
        .and_then(|r| r.try_get_by_index::<bool>(0).ok())
        .unwrap_or(false);
    db.close().await.ok();
    if tls { "TLS" } else { "no TLS" }.to_owned()
}

/// Publisher tasks (messages in flight) per queue measurement.
pub const PUBLISHERS: usize = 32;
/// Consumer tasks per queue measurement.
pub const CONSUMERS: usize = 4;

/// Publishes `n` envelopes from [`PUBLISHERS`] tasks while [`CONSUMERS`] tasks receive and
/// ack; returns messages per second until the last one was consumed.
///
/// The clock stops when the `n`-th ack returned — for the embedded queue, which commits acks
/// behind the handlers, once [`Queue::drain`] returned after it, so a message counts once its
/// ack is durable. Consumers still waiting in `receive` at that moment (up to its 200 ms
/// timeout) are not counted: they would add a constant to every run, 13 % of a
/// 5,000-message one ([`LastAck`]).
pub async fn queue_throughput(queue: Arc<dyn Queue>, n: usize) -> f64 {
    let last = Arc::new(LastAck::new(n));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let queue = queue.clone();
        let count = n / PUBLISHERS + usize::from(p < n % PUBLISHERS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                let e = Envelope::new(
                    MessageKind::CheckStatus,
                    DeploymentId::new(),
                    serde_json::Value::Null,
                );
                queue.publish(&e, None).await.expect("publish");
            }
        }));
    }
    for _ in 0..CONSUMERS {
        let (queue, last) = (queue.clone(), last.clone());
        tasks.push(tokio::spawn(async move {
            while !last.all_acked() {
                if let Some(d) = queue
                    .receive(Duration::from_millis(200))
                    .await
                    .expect("receive")
                {
                    d.ack().await.expect("ack");
                    if last.acked() {
                        queue.drain().await.expect("drain");
                        last.stop_clock();
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    last.rate()
}

/// Counts the acks of a throughput measurement of `n` messages and keeps the clock: it
/// starts when created and stops when the consumer of the `n`-th ack calls
/// [`LastAck::stop_clock`] (after its own drain, where acks are written behind). Every ack
/// is counted after it returned, so the `n`-th count comes after every other ack.
pub struct LastAck {
    n: usize,
    acked: AtomicUsize,
    started: Instant,
    stopped: std::sync::OnceLock<Instant>,
}

impl LastAck {
    /// The clock starts now.
    pub fn new(n: usize) -> LastAck {
        LastAck {
            n,
            acked: AtomicUsize::new(0),
            started: Instant::now(),
            stopped: std::sync::OnceLock::new(),
        }
    }

    /// Counts an ack that returned; true for the `n`-th, whose consumer stops the clock.
    pub fn acked(&self) -> bool {
        self.acked.fetch_add(1, Ordering::SeqCst) + 1 == self.n
    }

    /// Whether all `n` acks returned.
    pub fn all_acked(&self) -> bool {
        self.acked.load(Ordering::SeqCst) >= self.n
    }

    /// Stops the clock (the first call counts).
    pub fn stop_clock(&self) {
        let _ = self.stopped.set(Instant::now());
    }

    /// Messages per second from the start to the stopped clock (to now if never stopped).
    pub fn rate(&self) -> f64 {
        let end = self.stopped.get().copied().unwrap_or_else(Instant::now);
        self.n as f64 / (end - self.started).as_secs_f64()
    }
}

/// The median of `values` (the upper one of an even count); `values` must not be empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a figure's target is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Of {
    /// The figure itself.
    Value,
    /// The figure divided by its baseline.
    Ratio,
    /// The figure minus its baseline.
    Difference,
}

/// A target of a figure: `of` must stay at most (or at least) `limit`.
#[derive(Debug, Clone)]
pub struct Target {
    /// What is compared.
    pub of: Of,
    /// True for "at most", false for "at least".
    pub at_most: bool,
    /// The limit.
    pub limit: f64,
    /// The target as a reader reads it (`≥ 70 % of raw lapin`).
    pub text: String,
}

impl Target {
    /// `of` ≤ `limit`.
    pub fn at_most(of: Of, limit: f64, text: &str) -> Target {
        let text = text.to_owned();
        Target {
            of,
            at_most: true,
            limit,
            text,
        }
    }

    /// `of` ≥ `limit`.
    pub fn at_least(of: Of, limit: f64, text: &str) -> Target {
        let text = text.to_owned();
        Target {
            of,
            at_most: false,
            limit,
            text,
        }
    }
}

/// The same measurement of the reference (raw broker, direct upstream), taken in the same run.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// What the baseline is (`raw lapin`).
    pub name: String,
    /// One value per repetition.
    pub samples: Vec<f64>,
}

/// One figure of a benchmark: a value per repetition, its median, the baseline of the same
/// run and the target.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What is measured (`rabbitmq throughput`).
    pub name: String,
    /// Its unit (`msg/s`, `ms`, `MiB`).
    pub unit: String,
    /// One value per repetition.
    pub samples: Vec<f64>,
    /// The reference measured in the same run, if any.
    pub baseline: Option<Baseline>,
    /// The target, if the issue set one.
    pub target: Option<Target>,
}

impl Figure {
    /// A figure without baseline nor target.
    pub fn new(name: &str, unit: &str, samples: Vec<f64>) -> Figure {
        Figure {
            name: name.to_owned(),
            unit: unit.to_owned(),
            samples,
            baseline: None,
            target: None,
        }
    }

    /// With the baseline `name` measured as `samples` in the same run.
    pub fn against(mut self, name: &str, samples: Vec<f64>) -> Figure {
        self.baseline = Some(Baseline {
            name: name.to_owned(),
            samples,
        });
        self
    }

    /// With a target.
    pub fn target(mut self, target: Target) -> Figure {
        self.target = Some(target);
        self
    }

    /// The median of the samples (NaN when there are none, e.g. a skipped row).
    pub fn median(&self) -> f64 {
        if self.samples.is_empty() {
            f64::NAN
        } else {
            median(self.samples.clone())
        }
    }

    /// The baseline's median.
    pub fn baseline_median(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?;
        (!b.samples.is_empty()).then(|| median(b.samples.clone()))
    }

    /// Median over baseline median.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline_median().map(|b| self.median() / b)
    }

    /// Median minus baseline median.
    pub fn difference(&self) -> Option<f64> {
        self.baseline_median().map(|b| self.median() - b)
    }

    /// Whether the target is met (`None` without a target or without a value to compare).
    pub fn met(&self) -> Option<bool> {
        let target = self.target.as_ref()?;
        let value = match target.of {
            Of::Value => Some(self.median()),
            Of::Ratio => self.ratio(),
            Of::Difference => self.difference(),
        }
        .filter(|v| v.is_finite())?;
        Some(if target.at_most {
            value <= target.limit
        } else {
            value >= target.limit
        })
    }

    /// The figure as JSON (the report's `figures[]` entries).
    pub fn to_json(&self) -> serde_json::Value {
        let finite = |v: f64| v.is_finite().then_some(v);
        serde_json::json!({
            "name": self.name,
            "unit": self.unit,
            "repetitions": self.samples.len(),
            "samples": self.samples,
            "median": finite(self.median()),
            "baseline": self.baseline.as_ref().map(|b| serde_json::json!({
                "name": b.name,
                "samples": b.samples,
                "median": self.baseline_median(),
            })),
            "ratio": self.ratio().and_then(finite),
            "difference": self.difference().and_then(finite),
            "target": self.target.as_ref().map(|t| serde_json::json!({
                "of": match t.of { Of::Value => "value", Of::Ratio => "ratio", Of::Difference => "difference" },
                "op": if t.at_most { "<=" } else { ">=" },
                "limit": t.limit,
                "text": t.text,
            })),
            "met": self.met(),
        })
    }
}

/// Prints one verdict line per figure that has a target: `PASS`/`MISS`, the compared
/// value and the target.
pub fn print_verdicts(figures: &[Figure]) {
    for figure in figures {
        let Some(target) = &figure.target else {
            continue;
        };
        let value = match target.of {
            Of::Value => Some(figure.median()),
            Of::Ratio => figure.ratio(),
            Of::Difference => figure.difference(),
        };
        let verdict = match figure.met() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a ",
        };
        let shown = value
            .filter(|v| v.is_finite())
            .map_or("-".to_owned(), |v| format!("{v:.3}"));
        println!(
            "verdict {verdict} {}: {shown} (target {})",
            figure.name, target.text
        );
    }
}

/// Writes one benchmark's results to `path` as `{benchmark, parameters, figures, notes}`,
/// the input of `bench-report`.
pub fn write_json(
    path: &std::path::Path,
    benchmark: &str,
    parameters: serde_json::Value,
    figures: &[Figure],
    notes: &[String],
) {
    write_json_with(
        path,
        benchmark,
        parameters,
        figures,
        notes,
        serde_json::Value::Null,
    );
}

/// [`write_json`] with `details`: what the figures summarize (counts per status, samples).
pub fn write_json_with(
    path: &std::path::Path,
    benchmark: &str,
    parameters: serde_json::Value,
    figures: &[Figure],
    notes: &[String],
    details: serde_json::Value,
) {
    let body = serde_json::json!({
        "benchmark": benchmark,
        "parameters": parameters,
        "figures": figures.iter().map(Figure::to_json).collect::<Vec<_>>(),
        "notes": notes,
        "details": details,
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).expect("create the JSON folder");
    }
    let text = serde_json::to_string_pretty(&body).expect("serialize");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Splits `--json FILE` out of the program's arguments; returns (the file, the rest).
pub fn json_arg() -> (Option<std::path::PathBuf>, Vec<String>) {
    let mut rest = Vec::new();
    let mut json = None;
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        if arg == "--json" {
            json = argv.next().map(std::path::PathBuf::from);
            if json.is_none() {
                eprintln!("--json needs a file");
                std::process::exit(2);
            }
        } else {
            rest.push(arg);
        }
    }
    (json, rest)
}

/// Seconds and counts of one histogram by label set, read from a Prometheus text
/// exposition: `labels` (as written between the braces) → (sum, count).
pub fn histogram_totals(
    exposition: &str,
    name: &str,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut totals = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for line in exposition.lines() {
        let (series, is_sum) = if let Some(rest) = line.strip_prefix(&format!("{name}_sum")) {
            (rest, true)
        } else if let Some(rest) = line.strip_prefix(&format!("{name}_count")) {
            (rest, false)
        } else {
            continue;
        };
        let Some((labels, value)) = series.rsplit_once(' ') else {
            continue;
        };
        let labels = labels.trim().trim_start_matches('{').trim_end_matches('}');
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let entry = totals.entry(labels.to_owned()).or_default();
        if is_sum {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    totals
}

/// `after − before` of [`histogram_totals`] (what one run added).
pub fn histogram_delta(
    before: &str,
    after: &str,
    name: &str,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let before = histogram_totals(before, name);
    let mut delta = histogram_totals(after, name);
    for (labels, (sum, count)) in &mut delta {
        if let Some((s, c)) = before.get(labels) {
            *sum -= s;
            *count -= c;
        }
    }
    delta.retain(|_, (_, count)| *count > 0.0);
    delta
}
