//! Retries of HF management calls with `backon`: the one [`Backoff`] (1 s doubling to 8 s,
//! like the official client, with equal jitter), only for [`ProviderError::is_retryable`]
//! failures, bounded by `HUGGINGFACE_MAX_RETRIES`.
//!
//! A `Retry-After` (or `RateLimit`) delay replaces the computed one. A delay longer than
//! `HUGGINGFACE_TIMEOUT` is not waited in-process: the error is returned with its
//! `retry_after`, and the queue redelivers the command later instead of holding a worker.
//! The sleeper is swappable so tests observe the delays without waiting them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{Retryable, Sleeper};

use crate::provider::ProviderError;
use crate::runtime::Backoff;

/// Delays between tries.
const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));

/// Every delay a [`RetrySleeper::Recorded`] was asked to sleep, in order.
#[derive(Debug, Clone, Default)]
pub struct SleepLog(Arc<Mutex<Vec<Duration>>>);

impl SleepLog {
    /// The delays so far.
    pub fn delays(&self) -> Vec<Duration> {
        self.0.lock().map(|d| d.clone()).unwrap_or_default()
    }

    fn push(&self, delay: Duration) {
        if let Ok(mut delays) = self.0.lock() {
            delays.push(delay);
        }
    }
}

/// How retries wait.
#[derive(Debug, Clone, Default)]
pub enum RetrySleeper {
    /// `tokio::time::sleep` (virtual under `tokio::time::pause`).
    #[default]
    Tokio,
    /// Returns at once and records the delay: virtual time for tests that talk to a real
    /// socket, where a paused clock would also fire the HTTP client's timeouts.
    Recorded(SleepLog),
}

impl Sleeper for RetrySleeper {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn sleep(&self, delay: Duration) -> Self::Sleep {
        match self {
            Self::Tokio => Box::pin(tokio::time::sleep(delay)),
            Self::Recorded(log) => {
                log.push(delay);
                Box::pin(std::future::ready(()))
            }
        }
    }
}

/// When and how long to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The longest provider-requested delay still waited in-process.
    pub max_wait: Duration,
    /// How to wait.
    pub sleeper: RetrySleeper,
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails permanently, or the retries run out.
    pub async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        attempt: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let backoff = BACKOFF.with_max_times(self.max_retries as usize);
        attempt
            .retry(backoff)
            .sleep(self.sleeper.clone())
            .when(ProviderError::is_retryable)
            .adjust(|err, next| self.delay(err, next))
            .notify(|err, delay| {
                tracing::warn!(
                    operation,
                    error.kind = err.kind(),
                    error.message = err.message(),
                    delay_ms = delay.as_millis() as u64,
                    "retrying HuggingFace call"
                );
            })
            .await
    }

    /// The delay before the next attempt, `None` to stop.
    fn delay(&self, err: &ProviderError, computed: Option<Duration>) -> Option<Duration> {
        let computed = computed?;
        match err.retry_after() {
            Some(asked) if asked > self.max_wait => None,
            Some(asked) => Some(asked),
            None => Some(computed),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(max_retries: u32) -> (RetryPolicy, SleepLog) {
        let log = SleepLog::default();
        let policy = RetryPolicy {
            max_retries,
            max_wait: Duration::from_secs(30),
            sleeper: RetrySleeper::Recorded(log.clone()),
        };
        (policy, log)
    }

    async fn failing(policy: &RetryPolicy, err: ProviderError) -> (ProviderError, u32) {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = policy
            .run("test", || {
                calls.fetch_add(1, Ordering::SeqCst);
                let err = err.clone();
                async move { Err(err) }
            })
            .await;
        (result.unwrap_err(), calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_exponentially_with_jitter_up_to_the_limit() {
        let policy = RetryPolicy {
            max_retries: 5,
            max_wait: Duration::from_secs(30),
            sleeper: RetrySleeper::Tokio,
        };
        let start = tokio::time::Instant::now();
        let (_, calls) = failing(&policy, ProviderError::transient("boom")).await;
        assert_eq!(calls, 6);
        // 1, 2, 4, 8, 8 seconds (the 8 s ceiling), each jittered within its upper half.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(11_500), "{waited:?}");
        assert!(waited <= Duration::from_secs(23), "{waited:?}");
    }

    #[tokio::test]
    async fn retry_after_replaces_the_computed_delay() {
        let (policy, log) = policy(2);
        let err = ProviderError::RateLimited {
            message: "slow down".into(),
            retry_after: Duration::from_secs(7),
        };
        let (returned, calls) = failing(&policy, err.clone()).await;
        assert_eq!((returned, calls), (err, 3));
        assert_eq!(log.delays(), vec![Duration::from_secs(7); 2]);
    }

    #[tokio::test]
    async fn a_delay_longer_than_the_timeout_is_left_to_the_queue() {
        let (policy, log) = policy(5);
        let err = ProviderError::RateLimited {
            message: "later".into(),
            retry_after: Duration::from_secs(55),
        };
        let (returned, calls) = failing(&policy, err).await;
        assert_eq!(calls, 1);
        assert_eq!(returned.retry_after(), Some(Duration::from_secs(55)));
        assert!(log.delays().is_empty());
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let (policy, log) = policy(5);
        for err in [
            ProviderError::invalid("bad"),
            ProviderError::not_found("gone"),
            ProviderError::Unauthorized {
                message: "token".into(),
            },
        ] {
            let (_, calls) = failing(&policy, err).await;
            assert_eq!(calls, 1);
        }
        assert!(log.delays().is_empty());
    }
}
