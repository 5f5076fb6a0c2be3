//! [`ProviderError`]: what went wrong at a provider, typed so that callers decide retry,
//! compensation and HTTP mapping from the variant, never from strings.
//!
//! Every variant carries the provider's own message (already stripped of secrets) so it can
//! be written to `deployed_models.error_message` and to the event log as is.

use std::time::Duration;

/// A failure reported by (or while talking to) a provider.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// A temporary failure (network error, timeout, 408, 5xx): retry, maybe after a delay.
    #[error("provider temporarily failed: {message}")]
    Transient {
        /// The provider's message.
        message: String,
        /// How long the provider asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout: the call may or may not have taken effect; retry.
    #[error("provider did not answer in time: {message}")]
    Timeout {
        /// What timed out.
        message: String,
    },
    /// The provider throttles us (429): retry after the delay.
    #[error("provider rate limit: {message}")]
    RateLimited {
        /// The provider's message.
        message: String,
        /// How long to wait (from `Retry-After` or `RateLimit`, else a default).
        retry_after: Duration,
    },
    /// The endpoint exists but cannot serve now (cold start, waking from scale-to-zero).
    #[error("endpoint not ready: {message}")]
    Unavailable {
        /// The provider's message.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// The endpoint (or namespace) does not exist.
    #[error("not found at the provider: {message}")]
    NotFound {
        /// The provider's message.
        message: String,
    },
    /// A resource with this name exists and does not match what we asked for.
    #[error("conflict at the provider: {message}")]
    Conflict {
        /// The provider's message.
        message: String,
    },
    /// The request can never succeed as sent (bad spec, unknown hardware): the user's fault.
    #[error("invalid request: {message}")]
    Invalid {
        /// The provider's message.
        message: String,
    },
    /// Our credentials were refused (bad token, no billing, missing scope).
    #[error("provider refused our credentials: {message}")]
    Unauthorized {
        /// The provider's message.
        message: String,
    },
}

impl ProviderError {
    /// A [`ProviderError::Transient`] without a delay.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A [`ProviderError::Invalid`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
    }

    /// A [`ProviderError::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound {
            message: message.into(),
        }
    }

    /// A [`ProviderError::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
        }
    }

    /// Whether trying the same call again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Transient { .. }
                | Self::Timeout { .. }
                | Self::RateLimited { .. }
                | Self::Unavailable { .. }
        )
    }

    /// The delay the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::RateLimited { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The provider's message.
    pub fn message(&self) -> &str {
        match self {
            Self::Transient { message, .. }
            | Self::Timeout { message }
            | Self::RateLimited { message, .. }
            | Self::Unavailable { message, .. }
            | Self::NotFound { message }
            | Self::Conflict { message }
            | Self::Invalid { message }
            | Self::Unauthorized { message } => message,
        }
    }

    /// A stable, low-cardinality name for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transient { .. } => "transient",
            Self::Timeout { .. } => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable { .. } => "unavailable",
            Self::NotFound { .. } => "not_found",
            Self::Conflict { .. } => "conflict",
            Self::Invalid { .. } => "invalid",
            Self::Unauthorized { .. } => "unauthorized",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_variants_are_exactly_the_temporary_ones() {
        let second = Duration::from_secs(1);
        let retryable = [
            ProviderError::transient("x"),
            ProviderError::RateLimited {
                message: "x".into(),
                retry_after: second,
            },
            ProviderError::Unavailable {
                message: "x".into(),
                retry_after: second,
            },
        ];
        let permanent = [
            ProviderError::not_found("x"),
            ProviderError::conflict("x"),
            ProviderError::invalid("x"),
            ProviderError::Unauthorized {
                message: "x".into(),
            },
        ];
        assert!(retryable.iter().all(ProviderError::is_retryable));
        assert!(!permanent.iter().any(ProviderError::is_retryable));
        assert_eq!(retryable[1].retry_after(), Some(second));
        assert_eq!(permanent[0].retry_after(), None);
        assert_eq!(permanent[2].message(), "x");
    }
}
