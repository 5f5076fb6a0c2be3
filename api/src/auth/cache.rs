//! The in-process cache of key validations (docs/contracts/hokusai-auth.md, "Cache").
//!
//! Entries are keyed by the SHA-256 digest of the key, never the key. A valid verdict lives
//! the positive TTL, an invalid one the (short) negative TTL, so a flood of bad keys cannot
//! flood the auth service. Concurrent misses for one key share one validation (moka's
//! `try_get_with` runs one `init` future and hands its result to every waiter). Failures
//! (429, outage) are never cached.
//!
//! Stale-if-error (RFC 5861 sense): a second, bounded map remembers the last valid verdict
//! of each key for `ttl + stale_if_error`; when the auth service is unavailable, a key
//! found there keeps working. A key whose latest verdict was invalid is removed from it,
//! so it never gets stale service.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::counters::{AuthCounters, CacheResult};
use super::{AuthError, Principal};

/// Most keys remembered at once (each map); beyond it the least useful entries go.
pub const DEFAULT_MAX_ENTRIES: u64 = 100_000;

/// SHA-256 of an API key: the only form in which a key is kept.
type KeyDigest = [u8; 32];

/// What the auth service said about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid, for this principal.
    Valid(Arc<Principal>),
    /// Unknown, expired, revoked, or not for this service.
    Invalid,
}

impl Verdict {
    fn into_result(self) -> Result<Principal, AuthError> {
        match self {
            Self::Valid(principal) => Ok(Principal::clone(&principal)),
            Self::Invalid => Err(AuthError::Invalid),
        }
    }
}

/// How long verdicts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// `AUTH_CACHE_TTL_SECONDS`: valid verdicts.
    pub ttl: Duration,
    /// `AUTH_NEGATIVE_CACHE_TTL_SECONDS`: invalid verdicts.
    pub negative_ttl: Duration,
    /// `AUTH_STALE_IF_ERROR_SECONDS`: how long past `ttl` a valid verdict may stand in for
    /// an unavailable auth service (zero: fail closed).
    pub stale_if_error: Duration,
    /// Bound of each map, in entries.
    pub max_entries: u64,
}

/// Valid verdicts expire after the positive TTL, invalid ones after the negative TTL.
struct VerdictExpiry(CachePolicy);

impl Expiry<KeyDigest, Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &KeyDigest, value: &Verdict, _: Instant) -> Option<Duration> {
        Some(match value {
            Verdict::Valid(_) => self.0.ttl,
            Verdict::Invalid => self.0.negative_ttl,
        })
    }
}

/// The cache in front of the auth service.
pub struct ValidationCache {
    verdicts: Cache<KeyDigest, Verdict>,
    /// Last valid verdicts for stale-if-error; `None` when the window is zero.
    last_valid: Option<Cache<KeyDigest, Arc<Principal>>>,
    counters: Arc<AuthCounters>,
}

impl ValidationCache {
    /// An empty cache with `policy`, counting into `counters`.
    pub fn new(policy: CachePolicy, counters: Arc<AuthCounters>) -> Self {
        let verdicts = Cache::builder()
            .name("auth-verdicts")
            .max_capacity(policy.max_entries)
            .expire_after(VerdictExpiry(policy))
            .build();
        let last_valid = (!policy.stale_if_error.is_zero()).then(|| {
            Cache::builder()
                .name("auth-last-valid")
                .max_capacity(policy.max_entries)
                .time_to_live(policy.ttl + policy.stale_if_error)
                .build()
        });
        Self {
            verdicts,
            last_valid,
            counters,
        }
    }

    /// The principal of `key`: from a fresh cached verdict, else from `validate` (run at most
    /// once for concurrent callers with the same key), else — if the auth service is
    /// unavailable and the key was recently valid — from the stale map.
    pub async fn resolve<F>(&self, key: &str, validate: F) -> Result<Principal, AuthError>
    where
        F: Future<Output = Result<Verdict, AuthError>>,
    {
        let digest: KeyDigest = Sha256::digest(key.as_bytes()).into();
        if let Some(verdict) = self.verdicts.get(&digest).await {
            self.counters.cache(CacheResult::Hit);
            return verdict.into_result();
        }
        self.counters.cache(CacheResult::Miss);
        let fetched = self
            .verdicts
            .try_get_with(digest, async {
                let verdict = validate.await?;
                self.remember(digest, &verdict).await;
                Ok::<_, AuthError>(verdict)
            })
            .await;
        match fetched {
            Ok(verdict) => verdict.into_result(),
            Err(error) => self.stale_or(digest, AuthError::clone(&error)).await,
        }
    }

    /// Keeps the stale map in step with the latest verdict.
    async fn remember(&self, digest: KeyDigest, verdict: &Verdict) {
        let Some(last_valid) = &self.last_valid else {
            return;
        };
        match verdict {
            Verdict::Valid(principal) => last_valid.insert(digest, principal.clone()).await,
            Verdict::Invalid => last_valid.invalidate(&digest).await,
        }
    }

    /// On an outage, the last valid verdict if it is within the window; else `error`.
    async fn stale_or(&self, digest: KeyDigest, error: AuthError) -> Result<Principal, AuthError> {
        if !matches!(error, AuthError::Unavailable(_)) {
            return Err(error);
        }
        let stale = match &self.last_valid {
            Some(last_valid) => last_valid.get(&digest).await,
            None => None,
        };
        match stale {
            Some(principal) => {
                self.counters.cache(CacheResult::Stale);
                tracing::warn!(
                    key_id = %principal.key_id,
                    "auth service unavailable; serving a recently valid key from cache"
                );
                Ok(Principal::clone(&principal))
            }
            None => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn policy(stale_if_error: u64) -> CachePolicy {
        CachePolicy {
            ttl: Duration::from_millis(150),
            negative_ttl: Duration::from_millis(150),
            stale_if_error: Duration::from_secs(stale_if_error),
            max_entries: 100,
        }
    }

    fn valid(key_id: &str) -> Verdict {
        Verdict::Valid(Arc::new(Principal {
            key_id: key_id.into(),
            user_id: None,
            service_id: None,
            scopes: vec!["read".into()],
            rate_limit_per_hour: Some(1000),
            monthly_prediction_limit: None,
        }))
    }

    async fn answer(
        calls: &AtomicUsize,
        verdict: Result<Verdict, AuthError>,
    ) -> Result<Verdict, AuthError> {
        calls.fetch_add(1, Ordering::SeqCst);
        verdict
    }

    #[tokio::test]
    async fn hits_count_and_skip_validation_until_the_ttl_lapses() {
        let counters = Arc::new(AuthCounters::default());
        let cache = ValidationCache::new(policy(0), counters.clone());
        let calls = AtomicUsize::new(0);

        let first = cache.resolve("hk_a", answer(&calls, Ok(valid("k1")))).await;
        let second = cache
            .resolve("hk_a", answer(&calls, Ok(Verdict::Invalid)))
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let after_ttl = cache
            .resolve("hk_a", answer(&calls, Ok(Verdict::Invalid)))
            .await;

        assert_eq!(first.expect("valid").key_id, "k1");
        assert_eq!(second.expect("cached").key_id, "k1");
        assert_eq!(after_ttl, Err(AuthError::Invalid));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(counters.cache_results(CacheResult::Hit), 1);
        assert_eq!(counters.cache_results(CacheResult::Miss), 2);
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_fail_closed_without_a_stale_window() {
        let cache = ValidationCache::new(policy(0), Arc::new(AuthCounters::default()));
        let calls = AtomicUsize::new(0);
        let down = || Err(AuthError::Unavailable("test".into()));

        cache
            .resolve("hk_a", answer(&calls, Ok(valid("k1"))))
            .await
            .expect("valid");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let during_outage = cache.resolve("hk_a", answer(&calls, down())).await;
        let limited = cache
            .resolve("hk_a", answer(&calls, Err(AuthError::RateLimited)))
            .await;

        assert!(matches!(during_outage, Err(AuthError::Unavailable(_))));
        assert_eq!(limited, Err(AuthError::RateLimited));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stale_window_serves_keys_last_seen_valid_and_never_invalid_ones() {
        let counters = Arc::new(AuthCounters::default());
        let cache = ValidationCache::new(policy(30), counters.clone());
        let calls = AtomicUsize::new(0);
        let down = || Err(AuthError::Unavailable("test".into()));

        cache
            .resolve("hk_a", answer(&calls, Ok(valid("k1"))))
            .await
            .expect("valid");
        cache
            .resolve("hk_b", answer(&calls, Ok(valid("k2"))))
            .await
            .expect("valid");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let revoked = cache
            .resolve("hk_b", answer(&calls, Ok(Verdict::Invalid)))
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let stale = cache.resolve("hk_a", answer(&calls, down())).await;
        let once_revoked = cache.resolve("hk_b", answer(&calls, down())).await;
        let unknown = cache.resolve("hk_c", answer(&calls, down())).await;

        assert_eq!(revoked, Err(AuthError::Invalid));
        assert_eq!(stale.expect("served stale").key_id, "k1");
        assert!(matches!(once_revoked, Err(AuthError::Unavailable(_))));
        assert!(matches!(unknown, Err(AuthError::Unavailable(_))));
        assert_eq!(counters.cache_results(CacheResult::Stale), 1);
    }
}
