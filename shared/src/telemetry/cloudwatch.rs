//! CloudWatch metrics (docs/design/observability.md, namespace `CLOUDWATCH_NAMESPACE`, default
//! `Hokusai/API`) written as the Embedded Metric Format: JSON lines on stdout that the
//! CloudWatch Logs agent of ECS (`awslogs` driver) turns into metrics.
//!
//! Why EMF rather than `PutMetricData`: no API call, credentials or network on any path;
//! nothing is lost or slowed when CloudWatch throttles; the figures arrive with the logs the
//! task already ships; and the cost is one log line per model and minute instead of one API
//! call per batch. Figures are aggregated in memory for `CLOUDWATCH_FLUSH_SECONDS` and
//! written as one line per dimension set: counts summed, latencies as value arrays (at most
//! 100 values per line, as EMF allows). A distribution keeps at most [`MAX_KEPT`] values per
//! dimension set and flush — past that, a uniform sample of everything recorded (reservoir
//! sampling) — so neither the memory held between flushes nor the lines written grow with
//! the request rate; the exact counts travel in the summed metrics (`PredictionRequests`).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::config::TelemetrySettings;

/// The metrics of docs/design/observability.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Predictions answered (Count).
    PredictionRequests,
    /// Prediction latency as the client saw it (Milliseconds).
    PredictionLatency,
    /// Predictions answered with an error (Count).
    PredictionErrors,
    /// Deployments that ended `failed` or `rollback_failed` (Count).
    DeploymentFailures,
    /// Cost accrued since the previous figure (None, USD): sums over any period.
    ProviderCostUsd,
    /// Messages moved to the dead-letter queue (Count).
    DeadLetteredMessages,
    /// Outbox rows not yet relayed, sampled (Count; no dimension; alarms take Maximum).
    OutboxPending,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Self::PredictionRequests => "PredictionRequests",
            Self::PredictionLatency => "PredictionLatency",
            Self::PredictionErrors => "PredictionErrors",
            Self::DeploymentFailures => "DeploymentFailures",
            Self::ProviderCostUsd => "ProviderCostUSD",
            Self::DeadLetteredMessages => "DeadLetteredMessages",
            Self::OutboxPending => "OutboxPending",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::PredictionLatency => "Milliseconds",
            Self::ProviderCostUsd => "None",
            _ => "Count",
        }
    }

    /// Whether values are kept one by one (a distribution, or samples of a gauge) rather
    /// than summed.
    fn is_distribution(self) -> bool {
        matches!(self, Self::PredictionLatency | Self::OutboxPending)
    }
}

/// EMF allows at most 100 values per metric and line.
const MAX_VALUES: usize = 100;

/// Values of one distribution kept per dimension set between two flushes: at most 10 lines
/// per model and flush, however many predictions it served.
pub const MAX_KEPT: usize = 1_000;

/// One metric's figures for one dimension set since the last flush.
#[derive(Debug, Default)]
struct Figures {
    /// A count's sum (one element), or a distribution's values: all of them up to
    /// [`MAX_KEPT`], then a uniform sample of that size.
    values: Vec<f64>,
    /// Values recorded, kept or not.
    seen: u64,
}

impl Figures {
    fn add(&mut self, metric: Metric, value: f64) {
        self.seen += 1;
        if !metric.is_distribution() {
            match self.values.first_mut() {
                Some(sum) => *sum += value,
                None => self.values.push(value),
            }
        } else if self.values.len() < MAX_KEPT {
            self.values.push(value);
        } else {
            // Algorithm R: the n-th value replaces a kept one with probability MAX_KEPT / n,
            // so every value recorded is kept with the same probability.
            let slot = fastrand::u64(..self.seen);
            if let Ok(slot) = usize::try_from(slot)
                && slot < MAX_KEPT
            {
                self.values[slot] = value;
            }
        }
    }
}

/// Dimension names and values, sorted by name (`ModelId`, `Provider`, or `Queue`).
type Dimensions = Vec<(&'static str, String)>;

/// Figures aggregated since the last flush, and where lines go.
pub struct Emf {
    namespace: String,
    pending: Mutex<BTreeMap<Dimensions, BTreeMap<Metric, Figures>>>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Emf {
    /// A sink writing to `out`.
    pub fn new(namespace: impl Into<String>, out: Box<dyn Write + Send>) -> Self {
        Self {
            namespace: namespace.into(),
            pending: Mutex::new(BTreeMap::new()),
            out: Mutex::new(out),
        }
    }

    /// Adds a figure.
    pub fn record(&self, metric: Metric, dimensions: &[(&'static str, &str)], value: f64) {
        let mut key: Dimensions = dimensions
            .iter()
            .map(|(k, v)| (*k, (*v).to_owned()))
            .collect();
        key.sort();
        let mut pending = self.pending.lock().expect("emf lock");
        (pending.entry(key).or_default().entry(metric).or_default()).add(metric, value);
    }

    /// Writes one line per dimension set (more when a distribution exceeds 100 values) and
    /// forgets the figures. Returns the number of lines written.
    pub fn flush(&self) -> usize {
        let pending = std::mem::take(&mut *self.pending.lock().expect("emf lock"));
        let lines: Vec<String> = pending
            .into_iter()
            .flat_map(|(dimensions, metrics)| self.lines(&dimensions, metrics))
            .collect();
        let mut out = self.out.lock().expect("emf writer lock");
        for line in &lines {
            // A lost metrics line must not take the process down; stdout is the log stream.
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
        lines.len()
    }

    fn lines(&self, dimensions: &Dimensions, metrics: BTreeMap<Metric, Figures>) -> Vec<String> {
        let metrics: BTreeMap<Metric, Vec<f64>> =
            metrics.into_iter().map(|(m, f)| (m, f.values)).collect();
        let chunks = metrics
            .values()
            .map(|v| v.len().div_ceil(MAX_VALUES))
            .max()
            .unwrap_or(0);
        (0..chunks)
            .map(|chunk| {
                let mut line = Map::new();
                let mut declared = Vec::new();
                for (metric, values) in &metrics {
                    let part: Vec<f64> = values
                        .iter()
                        .skip(chunk * MAX_VALUES)
                        .take(MAX_VALUES)
                        .copied()
                        .collect();
                    let value = match part.as_slice() {
                        [] => continue,
                        [one] if !metric.is_distribution() => json!(one),
                        many => json!(many),
                    };
                    declared.push(json!({"Name": metric.name(), "Unit": metric.unit()}));
                    line.insert(metric.name().into(), value);
                }
                for (name, value) in dimensions {
                    line.insert((*name).into(), json!(value));
                }
                let names: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
                // Per model and provider, and rolled up per provider: CloudWatch alarms
                // cannot take a ratio or percentile across dimension sets.
                let sets = if names.contains(&"ModelId") && names.contains(&"Provider") {
                    json!([names, ["Provider"]])
                } else {
                    json!([names])
                };
                line.insert(
                    "_aws".into(),
                    json!({
                        "Timestamp": Utc::now().timestamp_millis(),
                        "CloudWatchMetrics": [{
                            "Namespace": self.namespace,
                            "Dimensions": sets,
                            "Metrics": declared,
                        }],
                    }),
                );
                Value::Object(line).to_string()
            })
            .collect()
    }
}

static SINK: OnceLock<Arc<Emf>> = OnceLock::new();
static FLUSH_EVERY: OnceLock<Duration> = OnceLock::new();

/// Starts writing CloudWatch metrics to stdout when `METRICS_CLOUDWATCH_ENABLED=true`. Once
/// per process; the process flushes every [`flush_period`] ([`super::supervise`]).
pub fn install(settings: &TelemetrySettings) {
    install_to(settings, Box::new(std::io::stdout()));
}

/// [`install`] writing the lines to `out` instead of stdout (tests read what the process
/// sends). Returns whether this call installed the sink (false when disabled or when one
/// was installed before).
pub fn install_to(settings: &TelemetrySettings, out: Box<dyn Write + Send>) -> bool {
    if !settings.cloudwatch_enabled {
        return false;
    }
    let namespace = settings.cloudwatch_namespace.clone();
    let mut installed = false;
    SINK.get_or_init(|| {
        installed = true;
        Arc::new(Emf::new(namespace, out))
    });
    if installed {
        let _ = FLUSH_EVERY.set(settings.cloudwatch_flush.max(Duration::from_millis(100)));
    }
    installed
}

/// How often the installed sink should be flushed (`CLOUDWATCH_FLUSH_SECONDS`); `None` when
/// CloudWatch metrics are off.
pub fn flush_period() -> Option<Duration> {
    SINK.get().and(FLUSH_EVERY.get().copied())
}

/// Records a figure when CloudWatch metrics are enabled (a no-op otherwise).
pub fn record(metric: Metric, dimensions: &[(&'static str, &str)], value: f64) {
    if let Some(sink) = SINK.get() {
        sink.record(metric, dimensions, value);
    }
}

/// Writes what is pending now (at shutdown).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buffer: &Buffer) -> Vec<Value> {
        String::from_utf8(buffer.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    /// Checks a line against the EMF specification: every declared metric and dimension is
    /// a top-level member, values are numbers or arrays of at most 100 numbers.
    fn assert_valid_emf(line: &Value) {
        let aws = &line["_aws"];
        assert!(aws["Timestamp"].is_i64(), "{line}");
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Hokusai/API");
        for set in directive["Dimensions"].as_array().unwrap() {
            for name in set.as_array().unwrap() {
                assert!(line[name.as_str().unwrap()].is_string(), "{line}");
            }
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            let value = &line[metric["Name"].as_str().unwrap()];
            match value {
                Value::Number(_) => {}
                Value::Array(values) => {
                    assert!(values.len() <= 100 && values.iter().all(Value::is_number))
                }
                other => panic!("{other} is not a metric value"),
            }
        }
    }

    #[test]
    fn aggregates_per_dimension_set_and_writes_valid_emf() {
        let buffer = Buffer::default();
        let emf = Emf::new("Hokusai/API", Box::new(buffer.clone()));
        let a = [("ModelId", "model-a"), ("Provider", "huggingface")];
        let b = [("ModelId", "model-b"), ("Provider", "huggingface")];
        for ms in [10.0, 20.0, 30.0] {
            emf.record(Metric::PredictionRequests, &a, 1.0);
            emf.record(Metric::PredictionLatency, &a, ms);
        }
        emf.record(Metric::PredictionErrors, &a, 1.0);
        emf.record(Metric::PredictionRequests, &b, 1.0);
        assert_eq!(emf.flush(), 2);
        let lines = lines(&buffer);
        lines.iter().for_each(assert_valid_emf);
        let first = &lines[0];
        assert_eq!(first["ModelId"], "model-a");
        assert_eq!(first["PredictionRequests"], 3.0);
        assert_eq!(first["PredictionErrors"], 1.0);
        assert_eq!(first["PredictionLatency"], json!([10.0, 20.0, 30.0]));
        assert_eq!(
            first["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["ModelId", "Provider"], ["Provider"]]),
            "per model, and rolled up per provider"
        );
        assert_eq!(lines[1]["ModelId"], "model-b");
        assert_eq!(emf.flush(), 0, "flushed figures are forgotten");
    }

    #[test]
    fn gauges_without_dimensions_are_samples() {
        let buffer = Buffer::default();
        let emf = Emf::new("Hokusai/API", Box::new(buffer.clone()));
        emf.record(Metric::OutboxPending, &[], 3.0);
        emf.record(Metric::OutboxPending, &[], 5.0);
        assert_eq!(emf.flush(), 1);
        let line = &lines(&buffer)[0];
        assert_valid_emf(line);
        assert_eq!(line["OutboxPending"], json!([3.0, 5.0]));
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
    }

    #[test]
    fn splits_distributions_above_100_values() {
        let buffer = Buffer::default();
        let emf = Emf::new("Hokusai/API", Box::new(buffer.clone()));
        let a = [("ModelId", "m"), ("Provider", "huggingface")];
        for i in 0..250 {
            emf.record(Metric::PredictionRequests, &a, 1.0);
            emf.record(Metric::PredictionLatency, &a, f64::from(i));
        }
        assert_eq!(emf.flush(), 3);
        let lines = lines(&buffer);
        lines.iter().for_each(assert_valid_emf);
        let counts: usize = lines
            .iter()
            .map(|l| l["PredictionLatency"].as_array().unwrap().len())
            .sum();
        assert_eq!(counts, 250);
        assert_eq!(lines[0]["PredictionRequests"], 250.0, "counts only once");
        assert!(lines[1].get("PredictionRequests").is_none());
    }

    /// Between two flushes a distribution keeps at most MAX_KEPT values, a uniform sample of
    /// all it recorded (here values 0..n, so the sample's mean is near n / 2 and both halves
    /// are represented), while the count stays exact.
    #[test]
    fn a_distribution_keeps_a_bounded_uniform_sample() {
        let buffer = Buffer::default();
        let emf = Emf::new("Hokusai/API", Box::new(buffer.clone()));
        let a = [("ModelId", "m"), ("Provider", "huggingface")];
        let n = 20 * MAX_KEPT;
        for i in 0..n {
            emf.record(Metric::PredictionRequests, &a, 1.0);
            emf.record(Metric::PredictionLatency, &a, i as f64);
        }
        let written = emf.flush();
        assert_eq!(
            written,
            MAX_KEPT.div_ceil(MAX_VALUES),
            "lines bounded by MAX_KEPT"
        );
        let lines = lines(&buffer);
        lines.iter().for_each(assert_valid_emf);
        assert_eq!(
            lines[0]["PredictionRequests"], n as f64,
            "the count is exact"
        );
        let kept: Vec<f64> = lines
            .iter()
            .flat_map(|l| l["PredictionLatency"].as_array().unwrap().clone())
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(kept.len(), MAX_KEPT);
        let mean = kept.iter().sum::<f64>() / kept.len() as f64;
        let late = kept.iter().filter(|v| **v >= (n / 2) as f64).count();
        println!(
            "recorded {n}, kept {}, mean {mean:.0} (expected ~{}), {late} from the second half",
            kept.len(),
            n / 2
        );
        // The standard error of the mean of 1,000 uniform draws over 0..20,000 is ~183: a
        // band of ±1,500 (8 standard errors) fails only for a sample that is not uniform
        // (e.g. the first MAX_KEPT values: mean 500).
        assert!((mean - (n / 2) as f64).abs() < 1_500.0, "mean {mean}");
        assert!(
            (350..=650).contains(&late),
            "{late} of {} from the second half",
            kept.len()
        );
    }
}
