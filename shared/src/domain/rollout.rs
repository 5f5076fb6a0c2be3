//! How a new version takes over from the serving one (docs/design/rollouts.md): at once
//! (`blue_green`, the default) or in weighted canary steps, each baked and judged on the
//! gateway's own measurements of the new version.
//!
//! [`RolloutSpec::parse`] is the one validation of a rollout, for the API's deploy body and
//! the MLflow version tag `hokusai.rollout` alike; its error names the field and the rule.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How traffic moves to a new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// All traffic at once when the new endpoint is ready (the default).
    BlueGreen,
    /// Weighted steps, each held for the bake period and judged before the next.
    Canary,
    /// A copy of each step's share of requests goes to the new version, whose answers are
    /// only measured (the caller gets the stable answer); promoted after the last step.
    Shadow,
}

impl Strategy {
    /// The stored and accepted name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BlueGreen => "blue_green",
            Self::Canary => "canary",
            Self::Shadow => "shadow",
        }
    }
}

/// A validated rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// The strategy.
    pub strategy: Strategy,
    /// The new version's share of traffic at each step, in percent: strictly increasing,
    /// each 1–100, ending at 100 (reaching 100 promotes the new version).
    pub steps: Vec<u8>,
    /// How long each step runs before it is judged.
    pub bake_seconds: u64,
    /// The highest error rate (5xx and upstream failures over requests, 0–1) a step may show.
    pub max_error_rate: f64,
    /// The highest 95th-percentile latency a step may show, when set.
    pub max_latency_p95_ms: Option<u64>,
    /// Requests the new version must have served in a step before it is judged.
    pub min_requests: u64,
}

/// Defaults of a canary that leaves fields out.
pub const DEFAULT_STEPS: [u8; 3] = [10, 50, 100];
/// Default bake period.
pub const DEFAULT_BAKE_SECONDS: u64 = 300;
/// Default error-rate limit.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.02;
/// Default requests before a judgement.
pub const DEFAULT_MIN_REQUESTS: u64 = 50;
/// The longest bake period accepted (a week): a longer one is a typo, not a rollout.
pub const MAX_BAKE_SECONDS: u64 = 7 * 24 * 3600;
/// The most steps accepted.
pub const MAX_STEPS: usize = 20;

/// Why a rollout is refused: the field (`rollout.steps`) and the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct InvalidRollout {
    /// The offending field, dotted from `rollout`.
    pub field: String,
    /// The rule, for the requester.
    pub rule: String,
}

fn invalid(field: &str, rule: impl Into<String>) -> InvalidRollout {
    InvalidRollout {
        field: format!("rollout.{field}"),
        rule: rule.into(),
    }
}

impl RolloutSpec {
    /// Blue/green: today's behaviour.
    pub fn blue_green() -> Self {
        Self {
            strategy: Strategy::BlueGreen,
            steps: vec![100],
            bake_seconds: 0,
            max_error_rate: 1.0,
            max_latency_p95_ms: None,
            min_requests: 0,
        }
    }

    /// Reads and validates a rollout object; absent fields take the defaults above.
    pub fn parse(value: &Value) -> Result<Self, InvalidRollout> {
        let Value::Object(map) = value else {
            return Err(InvalidRollout {
                field: "rollout".into(),
                rule: "must be an object".into(),
            });
        };
        const KNOWN: [&str; 6] = [
            "strategy",
            "steps",
            "bake_seconds",
            "max_error_rate",
            "max_latency_p95_ms",
            "min_requests",
        ];
        if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(invalid(
                unknown,
                format!("unknown field; known: {}", KNOWN.join(", ")),
            ));
        }
        let strategy = match map.get("strategy") {
            None | Some(Value::Null) => Strategy::BlueGreen,
            Some(Value::String(s)) if s == "blue_green" => Strategy::BlueGreen,
            Some(Value::String(s)) if s == "canary" => Strategy::Canary,
            Some(Value::String(s)) if s == "shadow" => Strategy::Shadow,
            Some(other) => {
                return Err(invalid(
                    "strategy",
                    format!("unknown strategy {other}; known: blue_green, canary, shadow"),
                ));
            }
        };
        if strategy == Strategy::BlueGreen {
            return match map.keys().find(|k| *k != "strategy") {
                Some(field) => Err(invalid(
                    field,
                    "applies to the canary and shadow strategies only",
                )),
                None => Ok(Self::blue_green()),
            };
        }
        let spec = Self {
            strategy,
            steps: steps(map.get("steps"))?,
            bake_seconds: whole(map.get("bake_seconds"), "bake_seconds")?
                .unwrap_or(DEFAULT_BAKE_SECONDS),
            max_error_rate: rate(map.get("max_error_rate"))?.unwrap_or(DEFAULT_MAX_ERROR_RATE),
            max_latency_p95_ms: whole(map.get("max_latency_p95_ms"), "max_latency_p95_ms")?,
            min_requests: whole(map.get("min_requests"), "min_requests")?
                .unwrap_or(DEFAULT_MIN_REQUESTS),
        };
        if spec.bake_seconds > MAX_BAKE_SECONDS {
            return Err(invalid(
                "bake_seconds",
                format!("at most {MAX_BAKE_SECONDS} (a week)"),
            ));
        }
        if spec.max_latency_p95_ms == Some(0) {
            return Err(invalid("max_latency_p95_ms", "must be at least 1"));
        }
        Ok(spec)
    }

    /// Whether the new version takes traffic in steps (a rollout to run) rather than at once.
    pub fn is_progressive(&self) -> bool {
        matches!(self.strategy, Strategy::Canary | Strategy::Shadow)
    }

    /// Whether the new version's share is a copy of requests (answers discarded) rather than
    /// requests of its own.
    pub fn is_shadow(&self) -> bool {
        self.strategy == Strategy::Shadow
    }
}

/// Upper bounds (milliseconds) of the latency histogram's buckets; one more bucket counts
/// everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000,
];

/// What was measured of one deployment in one step: requests, errors (5xx and upstream
/// failures) and a latency histogram. Several API processes' figures add up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Requests answered.
    pub requests: u64,
    /// Of which failed (5xx, upstream failures).
    pub errors: u64,
    /// Counts per bucket of [`LATENCY_BOUNDS_MS`], then the overflow bucket.
    pub latency_buckets: Vec<u64>,
}

impl Figures {
    /// Counts one request.
    pub fn record(&mut self, failed: bool, latency: std::time::Duration) {
        self.requests += 1;
        self.errors += u64::from(failed);
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        if self.latency_buckets.len() <= LATENCY_BOUNDS_MS.len() {
            self.latency_buckets.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
        }
        self.latency_buckets[bucket] += 1;
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Self) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (mine, theirs) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *mine += theirs;
        }
    }

    /// Errors over requests; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// The 95th percentile in milliseconds, interpolated linearly inside the bucket that holds
    /// it (as Prometheus' `histogram_quantile` does), so a limit between two bounds is judged
    /// against an estimate within that bucket, not against its upper bound. `None` without
    /// requests; a p95 in the overflow bucket reads as the last bound (30 s).
    pub fn p95_ms(&self) -> Option<u64> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total * 95).div_ceil(100);
        let last = LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1];
        let mut seen = 0;
        for (i, &count) in self.latency_buckets.iter().enumerate() {
            if seen + count >= rank && count > 0 {
                let Some(&upper) = LATENCY_BOUNDS_MS.get(i) else {
                    return Some(last);
                };
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let within = rank - seen;
                return Some(lower + ((upper - lower) * within + count / 2) / count);
            }
            seen += count;
        }
        Some(last)
    }
}

/// The judgement of a baked step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Fewer requests than `min_requests`: the step goes on.
    TooFewRequests,
    /// Over a limit: the rollout is aborted; the sentence quotes the figure and the limit.
    Breached(String),
    /// Within the limits: the next step.
    Healthy,
}

impl RolloutSpec {
    /// Judges the new version's `figures` of a baked step against the limits.
    pub fn judge(&self, figures: &Figures) -> Verdict {
        if figures.requests < self.min_requests.max(1) {
            return Verdict::TooFewRequests;
        }
        let rate = figures.error_rate().unwrap_or(0.0);
        if rate > self.max_error_rate {
            return Verdict::Breached(format!(
                "error rate {rate:.3} ({} of {} requests) is over max_error_rate {}",
                figures.errors, figures.requests, self.max_error_rate
            ));
        }
        if let (Some(limit), Some(p95)) = (self.max_latency_p95_ms, figures.p95_ms())
            && p95 > limit
        {
            return Verdict::Breached(format!(
                "latency p95 about {p95} ms over {} requests is over max_latency_p95_ms {limit}",
                figures.requests
            ));
        }
        Verdict::Healthy
    }
}

fn steps(value: Option<&Value>) -> Result<Vec<u8>, InvalidRollout> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(DEFAULT_STEPS.to_vec());
    };
    let Value::Array(items) = value else {
        return Err(invalid("steps", "must be an array of percentages"));
    };
    if items.is_empty() || items.len() > MAX_STEPS {
        return Err(invalid(
            "steps",
            format!("must hold 1 to {MAX_STEPS} percentages"),
        ));
    }
    let mut steps = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let weight = item
            .as_u64()
            .filter(|w| (1..=100).contains(w))
            .ok_or_else(|| {
                invalid(
                    &format!("steps[{i}]"),
                    "must be a whole number from 1 to 100",
                )
            })?;
        let weight = u8::try_from(weight).unwrap_or(100);
        if steps.last().is_some_and(|last| *last >= weight) {
            return Err(invalid(
                &format!("steps[{i}]"),
                "steps must be strictly increasing",
            ));
        }
        steps.push(weight);
    }
    if steps.last() != Some(&100) {
        return Err(invalid("steps", "the last step must be 100"));
    }
    Ok(steps)
}

fn whole(value: Option<&Value>, field: &str) -> Result<Option<u64>, InvalidRollout> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(field, "must be a whole number, not negative")),
    }
}

fn rate(value: Option<&Value>) -> Result<Option<f64>, InvalidRollout> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|r| (0.0..=1.0).contains(r))
            .map(Some)
            .ok_or_else(|| invalid("max_error_rate", "must be a number from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn field(value: Value) -> String {
        RolloutSpec::parse(&value).expect_err("refused").field
    }

    #[test]
    fn a_canary_takes_its_fields_and_defaults_the_rest() {
        let spec = RolloutSpec::parse(&json!({"strategy": "canary", "steps": [50, 100],
            "bake_seconds": 10, "max_error_rate": 0.1, "min_requests": 10}))
        .expect("valid");

        assert_eq!(spec.steps, vec![50, 100]);
        assert_eq!((spec.bake_seconds, spec.min_requests), (10, 10));
        assert_eq!(spec.max_latency_p95_ms, None);
        assert!(spec.is_progressive());
        let defaults = RolloutSpec::parse(&json!({"strategy": "canary"})).expect("valid");
        assert_eq!(defaults.steps, DEFAULT_STEPS.to_vec());
        assert_eq!(defaults.bake_seconds, DEFAULT_BAKE_SECONDS);
    }

    #[test]
    fn blue_green_is_the_default_and_takes_no_canary_fields() {
        assert_eq!(
            RolloutSpec::parse(&json!({})),
            Ok(RolloutSpec::blue_green())
        );
        assert!(!RolloutSpec::blue_green().is_progressive());
        assert_eq!(field(json!({"steps": [100]})), "rollout.steps");
    }

    #[test]
    fn bad_rollouts_name_the_field_and_the_rule() {
        let canary = |extra: Value| {
            let mut body = json!({"strategy": "canary"});
            body.as_object_mut()
                .expect("object")
                .extend(extra.as_object().expect("object").clone());
            body
        };
        assert_eq!(field(json!("canary")), "rollout");
        assert_eq!(field(json!({"strategy": "shadowy"})), "rollout.strategy");
        assert!(
            RolloutSpec::parse(&json!({"strategy": "shadow", "steps": [25, 100]}))
                .is_ok_and(|s| s.is_shadow() && s.is_progressive())
        );
        assert_eq!(
            field(canary(json!({"steps": [50, 10, 100]}))),
            "rollout.steps[1]"
        );
        assert_eq!(
            field(canary(json!({"steps": [10, 10, 100]}))),
            "rollout.steps[1]"
        );
        assert_eq!(field(canary(json!({"steps": [10, 50]}))), "rollout.steps");
        assert_eq!(
            field(canary(json!({"steps": [0, 100]}))),
            "rollout.steps[0]"
        );
        assert_eq!(
            field(canary(json!({"steps": [10, 101]}))),
            "rollout.steps[1]"
        );
        assert_eq!(field(canary(json!({"steps": []}))), "rollout.steps");
        assert_eq!(field(canary(json!({"steps": "10,100"}))), "rollout.steps");
        assert_eq!(
            field(canary(json!({"bake_seconds": -1}))),
            "rollout.bake_seconds"
        );
        assert_eq!(
            field(canary(json!({"bake_seconds": 1e12}))),
            "rollout.bake_seconds"
        );
        assert_eq!(
            field(canary(json!({"max_error_rate": 1.5}))),
            "rollout.max_error_rate"
        );
        assert_eq!(
            field(canary(json!({"max_error_rate": -0.1}))),
            "rollout.max_error_rate"
        );
        assert_eq!(
            field(canary(json!({"min_requests": 2.5}))),
            "rollout.min_requests"
        );
        assert_eq!(
            field(canary(json!({"max_latency_p95_ms": 0}))),
            "rollout.max_latency_p95_ms"
        );
        assert_eq!(field(canary(json!({"colour": "blue"}))), "rollout.colour");
    }

    #[test]
    fn figures_add_up_and_judge_against_the_limits() {
        let spec = RolloutSpec::parse(&json!({"strategy": "canary", "steps": [50, 100],
            "max_error_rate": 0.1, "min_requests": 10, "max_latency_p95_ms": 100}))
        .expect("valid");
        let mut a = Figures::default();
        for i in 0..8 {
            a.record(i == 0, std::time::Duration::from_millis(20));
        }
        assert_eq!(spec.judge(&a), Verdict::TooFewRequests);
        let mut b = Figures::default();
        for _ in 0..12 {
            b.record(false, std::time::Duration::from_millis(40));
        }
        b.add(&a);
        assert_eq!((b.requests, b.errors), (20, 1));
        // Rank 19 of 20: the 11th of the 12 requests in (25, 50] ms.
        assert_eq!(b.p95_ms(), Some(48));
        assert_eq!(spec.judge(&b), Verdict::Healthy);
        let mut failing = b.clone();
        for _ in 0..5 {
            failing.record(true, std::time::Duration::from_millis(1));
        }
        assert!(
            matches!(spec.judge(&failing), Verdict::Breached(why) if why.contains("error rate"))
        );
        let mut slow = b;
        for _ in 0..20 {
            slow.record(false, std::time::Duration::from_secs(2));
        }
        assert!(matches!(spec.judge(&slow), Verdict::Breached(why) if why.contains("p95")));
    }

    proptest! {
        /// Whatever the input, parsing answers a valid spec or names a `rollout` field.
        #[test]
        fn any_input_is_a_valid_spec_or_a_named_refusal(
            steps in prop::collection::vec(-5i64..120, 0..6),
            bake in -10i64..1_000_000,
            rate in -1.0f64..2.0,
            min in -5i64..100,
        ) {
            let value = json!({"strategy": "canary", "steps": steps, "bake_seconds": bake,
                               "max_error_rate": rate, "min_requests": min});
            match RolloutSpec::parse(&value) {
                Ok(spec) => {
                    prop_assert_eq!(spec.steps.last(), Some(&100));
                    prop_assert!(spec.steps.windows(2).all(|w| w[0] < w[1]));
                    prop_assert!((0.0..=1.0).contains(&spec.max_error_rate));
                }
                Err(e) => prop_assert!(e.field.starts_with("rollout"), "{}", e),
            }
        }
    }
}
