//! Our own limits on callers (docs/operator-guide.md, "Threat model"): per key, the hourly
//! allowance the auth service grants (`rate_limit_per_hour`), counted on every
//! authenticated request before any model lookup; per key and month, the predictions of
//! `monthly_prediction_limit`; per client IP, failed authentications
//! (`FAILED_AUTH_PER_IP_PER_MINUTE`), so random keys cannot each cost an auth-service call.
//!
//! Per-key limits are exact ([`gcra`]) and shared by every API process through Redis
//! ([`redis`], `REDIS_URL`) in one atomic script per request; without `REDIS_URL` they are
//! kept in process. **Redis unreachable: local fallback.** Each process then limits alone
//! (a key may get up to N× its allowance across N processes for the outage), counted in
//! `hokusai_rate_limit_fallbacks_total` and logged once per outage; requests are neither
//! refused nor let through unlimited. Failed authentications are limited per process.

pub mod gcra;
pub mod redis;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use shared::telemetry::metrics::names;

use gcra::{Local, Outcome, Rate};
use redis::{Answer, RedisLimiter};

/// The window of the per-key allowance.
const HOUR: Duration = Duration::from_secs(3600);

/// What a request may do, as the limits say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No limit applies (the key has no allowance, e.g. static development keys).
    Unlimited,
    /// Within the allowance; the `RateLimit-*` headers say how much is left.
    Allowed(Allowance),
    /// Over the hourly allowance.
    Limited(Allowance, Duration),
    /// The monthly prediction quota is used up; retry at the start of next month.
    QuotaExceeded(Duration),
}

/// The state of a key's allowance, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// `RateLimit-Limit`: requests per hour.
    pub limit: u32,
    /// `RateLimit-Remaining`.
    pub remaining: u32,
    /// `RateLimit-Reset`: until the allowance is whole again.
    pub reset: Duration,
}

/// The limits of one API process.
#[derive(Debug)]
pub struct Limits {
    redis: Option<RedisLimiter>,
    local: Local,
    failed_auth: Option<Rate>,
    failed_auth_by_ip: Local,
    /// Whether the last Redis call failed (to warn once per outage).
    redis_down: AtomicBool,
    /// Until when (µs since the epoch) Redis is not tried after a failure: a Redis that
    /// hangs must not cost every request the call timeout.
    redis_retry_at: AtomicU64,
}

/// How long Redis is left alone after a failed call.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Limits {
    /// Limits shared through `redis_url` (or in process), with `failed_auth_per_minute`
    /// failed authentications per client IP (0: no limit).
    pub fn new(redis_url: Option<&str>, failed_auth_per_minute: u32) -> anyhow::Result<Self> {
        Ok(Self {
            redis: redis_url.map(RedisLimiter::new).transpose()?,
            local: Local::default(),
            failed_auth: Rate::new(failed_auth_per_minute, Duration::from_secs(60)),
            failed_auth_by_ip: Local::default(),
            redis_down: AtomicBool::new(false),
            redis_retry_at: AtomicU64::new(0),
        })
    }

    /// Counts one request of `key_id` against `per_hour` (and, for a prediction, one against
    /// `monthly_quota`).
    pub async fn check(
        &self,
        key_id: &str,
        per_hour: Option<u32>,
        monthly_quota: Option<u64>,
    ) -> Decision {
        let Some(rate) = per_hour.and_then(|n| Rate::new(n, HOUR)) else {
            return match monthly_quota {
                Some(quota) => self.quota_only(key_id, quota).await,
                None => Decision::Unlimited,
            };
        };
        let month = Utc::now().format("%Y%m");
        let rate_key = format!("hokusai:rl:{key_id}");
        let quota_key = format!("hokusai:quota:{key_id}:{month}");
        let resting = gcra::now_us() < self.redis_retry_at.load(Ordering::Relaxed);
        let answer = match &self.redis {
            Some(_) if resting => {
                metrics::counter!(names::RATE_LIMIT_FALLBACKS).increment(1);
                self.local_check(&rate_key, &quota_key, rate, monthly_quota)
            }
            Some(redis) => match redis
                .check(&rate_key, &quota_key, rate, monthly_quota)
                .await
            {
                Ok(answer) => {
                    if self.redis_down.swap(false, Ordering::Relaxed) {
                        tracing::info!("Redis answers again; rate limits are shared again");
                    }
                    answer
                }
                Err(error) => self.fallback(&error, &rate_key, &quota_key, rate, monthly_quota),
            },
            None => self.local_check(&rate_key, &quota_key, rate, monthly_quota),
        };
        decide(answer, rate)
    }

    async fn quota_only(&self, key_id: &str, quota: u64) -> Decision {
        // No hourly allowance but a quota: the in-process counter (keys of the hokusai
        // backend always carry an allowance, so this is the static backend's case).
        let key = format!("hokusai:quota:{key_id}:{}", Utc::now().format("%Y%m"));
        if self.local.count(&key, quota) {
            Decision::Unlimited
        } else {
            Decision::QuotaExceeded(until_next_month())
        }
    }

    fn fallback(
        &self,
        error: &anyhow::Error,
        rate_key: &str,
        quota_key: &str,
        rate: Rate,
        quota: Option<u64>,
    ) -> Answer {
        metrics::counter!(names::RATE_LIMIT_FALLBACKS).increment(1);
        let rest = u64::try_from(REDIS_RETRY_AFTER.as_micros()).unwrap_or(u64::MAX);
        (self.redis_retry_at).store(gcra::now_us().saturating_add(rest), Ordering::Relaxed);
        if !self.redis_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %error, "Redis unreachable: rate limits are per process until it answers");
        }
        self.local_check(rate_key, quota_key, rate, quota)
    }

    fn local_check(
        &self,
        rate_key: &str,
        quota_key: &str,
        rate: Rate,
        quota: Option<u64>,
    ) -> Answer {
        if let Some(quota) = quota {
            let outcome = self.local.take(rate_key, rate);
            if !outcome.allowed {
                return Answer::Rate(outcome);
            }
            if !self.local.count(quota_key, quota) {
                return Answer::QuotaExhausted;
            }
            return Answer::Rate(outcome);
        }
        Answer::Rate(self.local.take(rate_key, rate))
    }

    /// How long `ip` must wait before it may try a key again, when its failed
    /// authentications exceed `FAILED_AUTH_PER_IP_PER_MINUTE`.
    pub fn auth_blocked(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let (rate, ip) = (self.failed_auth?, ip?);
        self.failed_auth_by_ip.would_refuse(&ip.to_string(), rate)
    }

    /// Records a failed authentication from `ip`.
    pub fn auth_failed(&self, ip: Option<IpAddr>) {
        if let (Some(rate), Some(ip)) = (self.failed_auth, ip) {
            self.failed_auth_by_ip.record(&ip.to_string(), rate);
        }
    }
}

fn decide(answer: Answer, rate: Rate) -> Decision {
    match answer {
        Answer::QuotaExhausted => Decision::QuotaExceeded(until_next_month()),
        Answer::Rate(Outcome {
            allowed,
            remaining,
            reset,
            retry_after,
        }) => {
            let allowance = Allowance {
                limit: rate.limit,
                remaining,
                reset,
            };
            if allowed {
                Decision::Allowed(allowance)
            } else {
                Decision::Limited(allowance, retry_after)
            }
        }
    }
}

/// Until the first second of next month (UTC), when monthly quotas start again.
fn until_next_month() -> Duration {
    let now = Utc::now();
    let (year, month) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .and_then(|next| (next - now).to_std().ok())
        .unwrap_or(Duration::from_secs(86_400))
}
