//! The `hokusai` authenticator: keys validated by auth.hokus.ai
//! (docs/contracts/hokusai-auth.md), behind the [`ValidationCache`].
//!
//! One call: `POST {HOKUSAI_AUTH_SERVICE_URL}/api/v1/keys/validate` with the key as Bearer
//! and `{"service_id", "client_ip"}` (the IP omitted when unknown), bounded by
//! `AUTH_SERVICE_TIMEOUT`, over one pooled client. The answer is read tolerantly (unknown
//! fields ignored, `scopes` default `[]`, `rate_limit_per_hour` default 1000, a nested
//! `user{id}` accepted) and mapped as the contract's table says: a 200 is valid only with
//! `is_valid: true`; 401 (and 400/403) invalid; 429 rate-limited; anything else — 5xx,
//! timeout, connection error, unreadable body — unavailable, never invalid.
//!
//! The key goes only into the `Authorization` header of that call; error texts built here
//! never contain it.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::config::AuthSettings;

use super::cache::{CachePolicy, DEFAULT_MAX_ENTRIES, ValidationCache, Verdict};
use super::counters::{AuthCounters, ValidationOutcome};
use super::{AuthError, Authenticator, Principal};

/// The hourly allowance assumed when the auth service does not say.
pub const DEFAULT_RATE_LIMIT_PER_HOUR: u32 = 1000;

/// The HTTP client for the auth service: pooled, with `AUTH_SERVICE_TIMEOUT` on every
/// call. Build it once and share it (validation and usage reports).
pub fn http_client(settings: &AuthSettings) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(settings.service_timeout)
        .connect_timeout(settings.service_timeout)
        .user_agent(concat!("hokusai-serve/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the auth service HTTP client")
}

/// Validates keys against auth.hokus.ai, through the cache.
pub struct HokusaiAuthenticator {
    client: ValidationClient,
    cache: ValidationCache,
    counters: Arc<AuthCounters>,
}

impl HokusaiAuthenticator {
    /// An authenticator configured by `settings`, calling through `http`.
    pub fn new(
        settings: &AuthSettings,
        http: reqwest::Client,
        counters: Arc<AuthCounters>,
    ) -> Self {
        let policy = CachePolicy {
            ttl: settings.cache_ttl,
            negative_ttl: settings.negative_cache_ttl,
            stale_if_error: settings.stale_if_error,
            max_entries: DEFAULT_MAX_ENTRIES,
        };
        Self {
            client: ValidationClient {
                http,
                url: format!("{}/api/v1/keys/validate", settings.service_url),
                service_id: settings.service_id.clone(),
                counters: counters.clone(),
            },
            cache: ValidationCache::new(policy, counters.clone()),
            counters,
        }
    }

    /// Validations, cache results and usage reports so far.
    pub fn counters(&self) -> &AuthCounters {
        &self.counters
    }
}

#[async_trait]
impl Authenticator for HokusaiAuthenticator {
    async fn authenticate(
        &self,
        key: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        // The auth service may judge by the IP (allow-lists), so a verdict holds for the key
        // *from that address* only: the cache entry is keyed by both.
        let entry = match client_ip {
            Some(ip) => format!("{key}\u{0}{ip}"),
            None => key.to_owned(),
        };
        self.cache
            .resolve(&entry, self.client.validate(key, client_ip))
            .await
    }
}

/// One validation call, without cache.
struct ValidationClient {
    http: reqwest::Client,
    url: String,
    service_id: String,
    counters: Arc<AuthCounters>,
}

#[derive(Debug, Serialize)]
struct ValidateRequest<'a> {
    service_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_ip: Option<String>,
}

/// The 200 body. Every field is optional; ids may arrive as strings or numbers.
#[derive(Debug, Default, Deserialize)]
struct ValidateResponse {
    is_valid: Option<bool>,
    key_id: Option<Value>,
    user_id: Option<Value>,
    service_id: Option<Value>,
    scopes: Option<Vec<String>>,
    rate_limit_per_hour: Option<u64>,
    monthly_prediction_limit: Option<u64>,
    /// Newer versions nest the owner: `user{id, email, roles, is_admin}`.
    user: Option<Value>,
}

impl ValidationClient {
    async fn validate(&self, key: &str, client_ip: Option<IpAddr>) -> Result<Verdict, AuthError> {
        let result = self.call(key, client_ip).await;
        self.counters.validation(match &result {
            Ok(Verdict::Valid(_)) => ValidationOutcome::Valid,
            Ok(Verdict::Invalid) => ValidationOutcome::Invalid,
            Err(AuthError::RateLimited) => ValidationOutcome::RateLimited,
            Err(_) => ValidationOutcome::Unavailable,
        });
        result
    }

    async fn call(&self, key: &str, client_ip: Option<IpAddr>) -> Result<Verdict, AuthError> {
        let body = ValidateRequest {
            service_id: &self.service_id,
            client_ip: client_ip.map(|ip| ip.to_string()),
        };
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status.is_success() {
            let body: ValidateResponse = response.json().await.map_err(|e| {
                if e.is_timeout() {
                    transport_error(e)
                } else {
                    AuthError::Unavailable("unreadable validation response".into())
                }
            })?;
            return Ok(verdict(body));
        }
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                Ok(Verdict::Invalid)
            }
            StatusCode::TOO_MANY_REQUESTS => Err(AuthError::RateLimited),
            other => Err(AuthError::Unavailable(format!(
                "validation answered HTTP {}",
                other.as_u16()
            ))),
        }
    }
}

/// Why a call failed, in words that never contain the key.
fn transport_error(error: reqwest::Error) -> AuthError {
    let reason = if error.is_timeout() {
        "validation timed out"
    } else if error.is_connect() {
        "cannot connect to the auth service"
    } else {
        "validation request failed"
    };
    AuthError::Unavailable(reason.into())
}

/// A 200 is valid only when it says `is_valid: true` and names the key.
fn verdict(body: ValidateResponse) -> Verdict {
    let key_id = body.key_id.as_ref().and_then(text);
    let (true, Some(key_id)) = (body.is_valid == Some(true), key_id) else {
        return Verdict::Invalid;
    };
    let nested_user_id = body.user.as_ref().and_then(|u| u.get("id")).and_then(text);
    Verdict::Valid(Arc::new(Principal {
        key_id,
        user_id: body.user_id.as_ref().and_then(text).or(nested_user_id),
        service_id: body.service_id.as_ref().and_then(text),
        scopes: body.scopes.unwrap_or_default(),
        rate_limit_per_hour: Some(
            body.rate_limit_per_hour
                .map_or(DEFAULT_RATE_LIMIT_PER_HOUR, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                }),
        ),
        monthly_prediction_limit: body.monthly_prediction_limit,
    }))
}

/// A string or a number as text; anything else (null included) as nothing.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Verdict {
        verdict(serde_json::from_value(body).expect("parses"))
    }

    #[test]
    fn documented_valid_answer_becomes_a_principal() {
        let body = json!({"is_valid": true, "key_id": "550e8400", "user_id": "u_123",
            "service_id": "platform", "scopes": ["predict", "read"], "rate_limit_per_hour": 5000,
            "billing_plan": "free", "monthly_prediction_limit": null});

        let Verdict::Valid(principal) = parse(body) else {
            panic!("valid answer refused")
        };

        assert_eq!(principal.key_id, "550e8400");
        assert_eq!(principal.user_id.as_deref(), Some("u_123"));
        assert_eq!(principal.service_id.as_deref(), Some("platform"));
        assert_eq!(principal.scopes, ["predict", "read"]);
        assert_eq!(principal.rate_limit_per_hour, Some(5000));
    }

    #[test]
    fn newer_answers_with_a_nested_user_and_missing_optionals_are_accepted() {
        let body = json!({"is_valid": true, "key_id": 42, "email": "a@b.c", "is_admin": false,
            "user": {"id": "u_9", "email": "a@b.c", "roles": ["x"], "is_admin": false}});

        let Verdict::Valid(principal) = parse(body) else {
            panic!("valid answer refused")
        };

        assert_eq!(principal.key_id, "42");
        assert_eq!(principal.user_id.as_deref(), Some("u_9"));
        assert!(principal.scopes.is_empty());
        assert_eq!(
            principal.rate_limit_per_hour,
            Some(DEFAULT_RATE_LIMIT_PER_HOUR)
        );
    }

    #[test]
    fn a_200_is_invalid_unless_it_says_is_valid_true_and_names_the_key() {
        let invalid_in_200 = json!({"is_valid": false, "key_id": null, "user_id": null,
            "scopes": null, "error": "API key has expired"});

        assert_eq!(parse(invalid_in_200), Verdict::Invalid);
        assert_eq!(parse(json!({"key_id": "k"})), Verdict::Invalid);
        assert_eq!(parse(json!({"is_valid": true})), Verdict::Invalid);
        assert_eq!(
            parse(json!({"is_valid": true, "key_id": null})),
            Verdict::Invalid
        );
    }

    #[test]
    fn the_client_ip_is_omitted_when_unknown() {
        let unknown = ValidateRequest {
            service_id: "platform",
            client_ip: None,
        };
        let known = ValidateRequest {
            service_id: "platform",
            client_ip: Some("203.0.113.7".into()),
        };

        assert_eq!(
            serde_json::to_value(unknown).expect("json"),
            json!({"service_id": "platform"})
        );
        assert_eq!(
            serde_json::to_value(known).expect("json"),
            json!({"service_id": "platform", "client_ip": "203.0.113.7"})
        );
    }
}
