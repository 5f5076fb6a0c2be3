//! Counters of the authentication layer, kept in process (tests and `/metrics` read them)
//! and mirrored to the `metrics` facade under the names of docs/design/observability.md:
//! `hokusai_auth_validations_total{outcome}`, `hokusai_auth_cache_total{result}` and
//! `hokusai_auth_usage_reports_total{outcome}` (an addition to the design's list: usage reporting is
//! optional, and its drops must be visible). Without a recorder installed the facade
//! calls are no-ops; the atomics always count.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use shared::telemetry::metrics::names;

/// What one call to the auth service's validation route concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationOutcome {
    /// 200 with `is_valid: true`.
    Valid,
    /// 401 (or 200 with `is_valid: false`, or 400/403).
    Invalid,
    /// 429.
    RateLimited,
    /// 5xx, timeout, connection error, unreadable answer.
    Unavailable,
}

impl ValidationOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
        }
    }
}

/// How a lookup in the validation cache was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    /// A fresh cached verdict.
    Hit,
    /// No fresh verdict: the auth service was asked (or a concurrent ask was joined).
    Miss,
    /// The auth service failed and a recently valid verdict was served past its TTL.
    Stale,
}

impl CacheResult {
    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

/// What became of one usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    /// The auth service accepted it.
    Sent,
    /// The auth service refused it or could not be reached (never retried).
    Failed,
    /// The queue was full; the report was discarded.
    Dropped,
}

impl UsageOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Dropped => "dropped",
        }
    }
}

/// The counters; one instance per authenticator (or usage reporter).
#[derive(Debug, Default)]
pub struct AuthCounters {
    validations: [AtomicU64; 4],
    cache: [AtomicU64; 3],
    usage: [AtomicU64; 3],
    /// `hokusai_auth_cache_total` handles per result, registered on first use (after the
    /// recorder is installed): a lookup happens on every authenticated request.
    cache_series: [OnceLock<metrics::Counter>; 3],
}

impl AuthCounters {
    /// Counts one validation call and its outcome.
    pub fn validation(&self, outcome: ValidationOutcome) {
        self.validations[outcome as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::AUTH_VALIDATIONS, "outcome" => outcome.label()).increment(1);
    }

    /// Counts one cache lookup.
    pub fn cache(&self, result: CacheResult) {
        self.cache[result as usize].fetch_add(1, Ordering::Relaxed);
        self.cache_series[result as usize]
            .get_or_init(|| metrics::counter!(names::AUTH_CACHE, "result" => result.label()))
            .increment(1);
    }

    /// Counts one usage report.
    pub fn usage(&self, outcome: UsageOutcome) {
        self.usage[outcome as usize].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::AUTH_USAGE_REPORTS, "outcome" => outcome.label()).increment(1);
    }

    /// Validation calls that ended with `outcome` so far.
    pub fn validations(&self, outcome: ValidationOutcome) -> u64 {
        self.validations[outcome as usize].load(Ordering::Relaxed)
    }

    /// Cache lookups answered as `result` so far.
    pub fn cache_results(&self, result: CacheResult) -> u64 {
        self.cache[result as usize].load(Ordering::Relaxed)
    }

    /// Usage reports that ended as `outcome` so far.
    pub fn usage_reports(&self, outcome: UsageOutcome) -> u64 {
        self.usage[outcome as usize].load(Ordering::Relaxed)
    }
}
