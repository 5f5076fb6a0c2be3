//! The generic cell rate algorithm (GCRA), exact: a key with `limit` requests per `period`
//! may make `limit` at once and then one every `period / limit`; there is no window edge
//! at which twice the limit passes (the flaw of fixed windows). One number per key, the
//! theoretical arrival time (TAT). [`step`] is the whole algorithm; the Redis script of
//! [`super::redis`] is the same arithmetic, so both backends answer alike.
//!
//! [`Local`] keeps TATs in process: the limiter when no Redis is configured, the fallback
//! when it cannot be reached, and the failed-authentication limit per client IP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A rate: `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Microseconds between two requests at the sustained rate.
    pub interval_us: u64,
    /// Microseconds of credit a full bucket holds (`interval × limit`).
    pub burst_us: u64,
    /// Requests per period.
    pub limit: u32,
}

impl Rate {
    /// `limit` per `period`; `None` when the limit is too high to measure (no limit).
    pub fn new(limit: u32, period: Duration) -> Option<Self> {
        let period_us = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        let interval_us = period_us / u64::from(limit.max(1));
        (interval_us > 0 && limit > 0).then_some(Self {
            interval_us,
            burst_us: interval_us * u64::from(limit),
            limit,
        })
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Requests left at once after this one.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// When refused: until one request passes.
    pub retry_after: Duration,
}

/// One GCRA step at `now_us` for a key whose stored TAT is `tat_us` (0: never seen).
/// Returns the outcome and the TAT to store (unchanged when refused).
pub fn step(rate: Rate, tat_us: u64, now_us: u64) -> (Outcome, u64) {
    let tat = tat_us.max(now_us);
    let new_tat = tat + rate.interval_us;
    if new_tat - now_us > rate.burst_us {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset: Duration::from_micros(tat - now_us),
            retry_after: Duration::from_micros(new_tat - rate.burst_us - now_us),
        };
        return (outcome, tat_us);
    }
    let left = (rate.burst_us - (new_tat - now_us)) / rate.interval_us;
    let outcome = Outcome {
        allowed: true,
        remaining: u32::try_from(left).unwrap_or(u32::MAX),
        reset: Duration::from_micros(new_tat - now_us),
        retry_after: Duration::ZERO,
    };
    (outcome, new_tat)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Most keys remembered in process; past it, keys whose bucket is full again are dropped.
const MAX_KEYS: usize = 100_000;

/// TATs in process memory.
#[derive(Debug, Default)]
pub struct Local {
    tats: Mutex<HashMap<String, u64>>,
    counts: Mutex<HashMap<String, u64>>,
}

impl Local {
    /// One step for `key` (the TAT is stored only when allowed).
    pub fn take(&self, key: &str, rate: Rate) -> Outcome {
        let now = now_us();
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() >= MAX_KEYS {
            tats.retain(|_, tat| *tat > now);
        }
        let (outcome, tat) = step(rate, tats.get(key).copied().unwrap_or(0), now);
        if outcome.allowed {
            tats.insert(key.to_owned(), tat);
        }
        outcome
    }

    /// Whether `key` would be refused now, without taking anything.
    pub fn would_refuse(&self, key: &str, rate: Rate) -> Option<Duration> {
        let now = now_us();
        let tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let (outcome, _) = step(rate, tats.get(key).copied().unwrap_or(0), now);
        (!outcome.allowed).then_some(outcome.retry_after)
    }

    /// Records one event for `key` whether or not it fits (failed authentications).
    pub fn record(&self, key: &str, rate: Rate) {
        let now = now_us();
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() >= MAX_KEYS {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.entry(key.to_owned()).or_insert(0);
        *tat = (*tat).max(now) + rate.interval_us;
    }

    /// Adds one to the counter `key` unless it reached `limit`; whether it was below.
    pub fn count(&self, key: &str, limit: u64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.len() >= MAX_KEYS && !counts.contains_key(key) {
            counts.clear();
        }
        let used = counts.entry(key.to_owned()).or_insert(0);
        if *used >= limit {
            return false;
        }
        *used += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_passes_then_one_per_interval() {
        let rate = Rate::new(3, Duration::from_secs(3600)).expect("rate");
        let mut tat = 0;
        let now = 1_000_000_000;
        let mut answers = Vec::new();
        for _ in 0..4 {
            let (outcome, next) = step(rate, tat, now);
            tat = next;
            answers.push((outcome.allowed, outcome.remaining));
        }
        assert_eq!(answers, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        let (refused, _) = step(rate, tat, now);
        assert_eq!(refused.retry_after, Duration::from_secs(1200));
        let (later, _) = step(rate, tat, now + 1_200_000_000);
        assert!(later.allowed);
    }

    #[test]
    fn no_window_edge_lets_twice_the_limit_through() {
        let rate = Rate::new(10, Duration::from_secs(60)).expect("rate");
        let (mut tat, mut passed) = (0, 0);
        // 10 at the end of a "minute", 10 more just after: a fixed window would pass 20.
        for now in [59_999_000u64; 10].into_iter().chain([60_001_000; 10]) {
            let (outcome, next) = step(rate, tat, now);
            tat = next;
            passed += u32::from(outcome.allowed);
        }
        assert_eq!(passed, 10);
    }

    #[test]
    fn failures_are_recorded_and_peeked_per_key() {
        let local = Local::default();
        let rate = Rate::new(2, Duration::from_secs(60)).expect("rate");
        local.record("1.2.3.4", rate);
        assert_eq!(local.would_refuse("1.2.3.4", rate), None);
        local.record("1.2.3.4", rate);
        assert!(local.would_refuse("1.2.3.4", rate).is_some());
        assert_eq!(local.would_refuse("5.6.7.8", rate), None);
        assert!(local.count("q", 1));
        assert!(!local.count("q", 1));
    }
}
