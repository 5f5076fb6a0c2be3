//! The one retry-delay policy. Every retry in the code base — provider calls, MLflow calls,
//! queue commands, restarting a loop, a loop waiting out an outage — takes its delays from a
//! [`Backoff`].

use std::time::Duration;

/// Exponential backoff: `min · 2^attempt`, capped at `max`, with "equal jitter" (half the delay
/// fixed, half random, so retries of many clients spread out but never collapse to zero), at
/// most `max_times` retries when used with `backon`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// No delay is longer (unless a server asked for longer: [`Backoff::delay_after`]).
    pub max: Duration,
    /// Whether delays are jittered.
    pub jitter: bool,
    /// Retries at most (for `backon`); `None`: unbounded (the caller bounds them).
    pub max_times: Option<usize>,
}

impl Backoff {
    /// `min` doubling to `max`, jittered, unbounded.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            jitter: true,
            max_times: None,
        }
    }

    /// The same policy without jitter (exact delays, for schedules people read).
    pub const fn exact(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The same policy giving up after `times` retries.
    pub const fn with_max_times(mut self, times: usize) -> Self {
        self.max_times = Some(times);
        self
    }

    /// The delay before retry `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let ceiling = self.min.saturating_mul(factor).min(self.max).max(self.min);
        if !self.jitter {
            return ceiling;
        }
        let random = (uuid::Uuid::new_v4().as_u128() % 1_000) as u32;
        ceiling / 2 + (ceiling / 2) * random / 1_000
    }

    /// Like [`Backoff::delay`], but a delay the server asked for (`Retry-After`) wins.
    pub fn delay_after(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after.unwrap_or_else(|| self.delay(attempt))
    }
}

/// The delays of one retry sequence (what `backon` iterates).
#[derive(Debug, Clone)]
pub struct Delays {
    policy: Backoff,
    attempt: u32,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if let Some(max) = self.policy.max_times
            && self.attempt as usize >= max
        {
            return None;
        }
        let delay = self.policy.delay(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }
}

impl backon::BackoffBuilder for Backoff {
    type Backoff = Delays;

    fn build(self) -> Delays {
        Delays {
            policy: self,
            attempt: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn exact_delays_double_and_cap() {
        let policy = Backoff::new(S, 8 * S).exact();
        let delays: Vec<_> = (0..6).map(|a| policy.delay(a)).collect();
        assert_eq!(delays, [S, 2 * S, 4 * S, 8 * S, 8 * S, 8 * S]);
        assert_eq!(policy.delay(u32::MAX), 8 * S);
    }

    #[test]
    fn jittered_delays_stay_within_half_and_whole() {
        let policy = Backoff::new(S, 30 * S);
        for attempt in 0..10 {
            let ceiling = policy.exact().delay(attempt);
            for _ in 0..50 {
                let delay = policy.delay(attempt);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} vs {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn retry_after_wins() {
        let policy = Backoff::new(S, 2 * S);
        assert_eq!(policy.delay_after(0, Some(55 * S)), 55 * S);
        assert!(policy.delay_after(0, None) <= S);
    }

    #[test]
    fn backon_gets_at_most_max_times_delays() {
        use backon::BackoffBuilder;
        let delays: Vec<_> = Backoff::new(S, 8 * S)
            .exact()
            .with_max_times(3)
            .build()
            .collect();
        assert_eq!(delays, [S, 2 * S, 4 * S]);
    }
}
