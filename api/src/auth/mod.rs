//! Authentication and authorization of API keys.
//!
//! Routes take an [`Authenticated`] extractor and call [`Principal::require`] (or
//! [`Principal::require_predict`]) with the scope of docs/design/http-api.md. Who validates a
//! key is an [`Authenticator`] chosen once at start-up: [`static_keys`] (development, tests) or
//! [`hokusai`] (auth.hokus.ai, behind the [`cache`]) — route code does not change with the
//! backend. [`usage`] reports authenticated requests back to auth.hokus.ai when enabled;
//! [`counters`] counts validations, cache results and usage reports.
//!
//! Keys are read from `Authorization: Bearer <key>`, `Authorization: ApiKey <key>` or
//! `X-API-Key: <key>`, and never logged. The client IP passed to the authenticator is, with
//! `TRUST_FORWARDED_FOR=true`, the `X-Forwarded-For` entry appended by the outermost of
//! `TRUSTED_PROXY_HOPS` proxies (counted from the right: entries further left are written
//! by the client and prove nothing), else the TCP peer.
//!
//! Before a key is checked, a client IP over `FAILED_AUTH_PER_IP_PER_MINUTE` gets 429
//! without an auth-service call; after it is accepted, the key's own limits are counted
//! ([`crate::limits`]), before the handler looks anything up.

pub mod cache;
pub mod counters;
pub mod hokusai;
pub mod static_keys;
pub mod usage;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use shared::domain::ModelId;

use crate::error::ApiError;
use crate::limits::Decision;
use crate::observe::RequestContext;
use crate::state::AppState;
use shared::telemetry::metrics::names;

/// Who is calling, as the authenticator established it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// The key's id (never the key).
    pub key_id: String,
    /// The key owner.
    pub user_id: Option<String>,
    /// The service the key is valid for.
    pub service_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Hourly request allowance (enforced by [`crate::limits`]; `None`: no limit).
    pub rate_limit_per_hour: Option<u32>,
    /// Predictions allowed per calendar month (UTC); `None`: no quota.
    pub monthly_prediction_limit: Option<u64>,
}

/// The scopes routes require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Read deployments, status, costs.
    Read,
    /// Deploy, roll back, undeploy.
    ModelWrite,
    /// Dead-letter operations.
    Admin,
}

impl Scope {
    /// The scope's name, as shown in a 403.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::ModelWrite => "model:write",
            Self::Admin => "admin",
        }
    }

    /// Scope names that grant this scope (docs/contracts/hokusai-auth.md).
    fn granted_by(self) -> &'static [&'static str] {
        match self {
            Self::Read => &["read", "admin", "full_access"],
            Self::ModelWrite => &[
                "model:write",
                "write",
                "admin",
                "full_access",
                "mlflow:write",
            ],
            Self::Admin => &["admin", "full_access"],
        }
    }
}

impl Principal {
    fn has(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s == name)
    }

    /// 403 naming `scope` unless the key has it (or a scope that grants it).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if scope.granted_by().iter().any(|s| self.has(s)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str().to_owned()))
        }
    }

    /// 403 unless the key may deploy, roll back and undeploy `model`: `model:write` (or a
    /// scope granting it, every model) or `model:write:{model_id}` (that model only).
    /// Called with the raw path segment, before the model is parsed or looked up, so a key
    /// limited to one model learns nothing about others (403, never 404).
    pub fn require_model_write(&self, model: &str) -> Result<(), ApiError> {
        let specific = format!("model:write:{model}");
        if self.require(Scope::ModelWrite).is_ok() || self.has(&specific) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(specific))
        }
    }

    /// 403 unless the key may predict with `model`: `predict` (any model),
    /// `predict:{model_id}` (that model only) or `full_access`.
    pub fn require_predict(&self, model: &ModelId) -> Result<(), ApiError> {
        let specific = format!("predict:{model}");
        if self.has("predict") || self.has(&specific) || self.has("full_access") {
            Ok(())
        } else {
            Err(ApiError::Forbidden(specific))
        }
    }
}

/// Why a key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown, expired, revoked or not for this service.
    #[error("invalid or expired API key")]
    Invalid,
    /// The validator rate-limited this key.
    #[error("rate limited by the authentication service")]
    RateLimited,
    /// The validator cannot answer (5xx, timeout, connection error).
    #[error("authentication service unavailable: {0}")]
    Unavailable(String),
}

/// Validates API keys.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// Who holds `key`, calling from `client_ip`.
    async fn authenticate(
        &self,
        key: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Principal, AuthError>;
}

/// The key of a request, from the first header that carries one.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("apikey"))
                .then_some(key.trim())
        });
    from_authorization
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|key| !key.is_empty())
}

/// The caller's address. Behind `hops` trusted proxies (`Some(hops)`), each appending the
/// address it saw to `X-Forwarded-For`, the client is the entry `hops` from the right: the
/// one the outermost trusted proxy appended. Entries left of it were written by the client.
/// With fewer entries than hops, or one that does not parse, the request did not come
/// through the proxies as configured: the TCP peer is used. Without trust, the TCP peer.
pub fn client_ip(parts: &Parts, trusted_hops: Option<usize>) -> Option<IpAddr> {
    let peer = || {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    };
    let forwarded = |hops: usize| -> Option<IpAddr> {
        let header = parts.headers.get_all("x-forwarded-for");
        let entries: Vec<&str> = header
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let index = entries.len().checked_sub(hops)?;
        entries[index].parse().ok()
    };
    trusted_hops.and_then(forwarded).or_else(peer)
}

/// Extracts and validates the caller's key; rejects with 401, 429 or 503.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Principal>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = api_key(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("an API key is required".into()))?;
        let auth = &state.settings.auth;
        let client_ip = client_ip(
            parts,
            auth.trust_forwarded_for.then_some(auth.trusted_proxy_hops),
        );
        if let Some(retry_after) = state.limits.auth_blocked(client_ip) {
            metrics::counter!(names::LIMITED, "limit" => "failed_auth").increment(1);
            return Err(ApiError::RateLimited {
                detail: "too many failed authentications from this address".into(),
                retry_after,
            });
        }
        match state.authenticator.authenticate(key, client_ip).await {
            Ok(principal) => {
                // Shared with the request context (log line, usage report), not copied.
                let principal = Arc::new(principal);
                let context = parts.extensions.get::<RequestContext>();
                if let Some(context) = context {
                    context.set_principal(&principal);
                }
                let predict = crate::observe::is_prediction(parts.extensions.get::<MatchedPath>());
                enforce_limits(state, &principal, predict, context).await?;
                Ok(Self(principal))
            }
            Err(AuthError::Invalid) => {
                state.limits.auth_failed(client_ip);
                Err(ApiError::Unauthorized("Invalid or expired API key".into()))
            }
            Err(AuthError::RateLimited) => Err(ApiError::RateLimited {
                detail: "rate limit exceeded for this API key".into(),
                retry_after: std::time::Duration::from_secs(60),
            }),
            Err(AuthError::Unavailable(reason)) => {
                tracing::warn!(reason, "authentication service unavailable");
                Err(ApiError::AuthUnavailable {
                    retry_after: std::time::Duration::from_secs(1),
                })
            }
        }
    }
}

/// Counts the request against the key's hourly allowance (and, for a prediction, its
/// monthly quota); the allowance left goes to the `RateLimit-*` headers.
async fn enforce_limits(
    state: &AppState,
    principal: &Principal,
    predict: bool,
    context: Option<&RequestContext>,
) -> Result<(), ApiError> {
    let quota = predict
        .then_some(principal.monthly_prediction_limit)
        .flatten();
    let decision = state
        .limits
        .check(&principal.key_id, principal.rate_limit_per_hour, quota)
        .await;
    match decision {
        Decision::Unlimited => Ok(()),
        Decision::Allowed(allowance) => {
            if let Some(context) = context {
                context.set_allowance(allowance);
            }
            Ok(())
        }
        Decision::Limited(allowance, retry_after) => {
            if let Some(context) = context {
                context.set_allowance(allowance);
            }
            metrics::counter!(names::LIMITED, "limit" => "key").increment(1);
            Err(ApiError::RateLimited {
                detail: format!(
                    "this API key's allowance of {} requests per hour is used up",
                    allowance.limit
                ),
                retry_after,
            })
        }
        Decision::QuotaExceeded(retry_after) => {
            metrics::counter!(names::LIMITED, "limit" => "quota").increment(1);
            Err(ApiError::QuotaExceeded { retry_after })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            key_id: "k".into(),
            user_id: None,
            service_id: None,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            rate_limit_per_hour: None,
            monthly_prediction_limit: None,
        }
    }

    #[test]
    fn keys_are_read_from_the_three_documented_places() {
        for (name, value) in [
            ("authorization", "Bearer hk_1"),
            ("authorization", "ApiKey hk_1"),
            ("x-api-key", "hk_1"),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.parse().expect("header"));
            assert_eq!(api_key(&headers), Some("hk_1"), "{name}: {value}");
        }
        let mut basic = HeaderMap::new();
        basic.insert(
            "authorization",
            "Basic dXNlcjpwYXNz".parse().expect("header"),
        );
        assert_eq!(api_key(&basic), None);
        assert_eq!(api_key(&HeaderMap::new()), None);
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let request = axum::http::Request::builder()
            .header("x-forwarded-for", "203.0.113.7, 10.0.0.1")
            .extension(ConnectInfo(SocketAddr::from(([10, 0, 0, 9], 4000))))
            .body(())
            .expect("request");
        let (parts, ()) = request.into_parts();
        let peer: IpAddr = [10, 0, 0, 9].into();

        assert_eq!(client_ip(&parts, Some(1)), Some([10, 0, 0, 1].into()));
        assert_eq!(client_ip(&parts, Some(2)), Some([203, 0, 113, 7].into()));
        assert_eq!(
            client_ip(&parts, Some(3)),
            Some(peer),
            "fewer entries than hops"
        );
        assert_eq!(client_ip(&parts, None), Some(peer));
        let (garbage, ()) = axum::http::Request::builder()
            .header("x-forwarded-for", "not-an-ip")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(client_ip(&garbage, Some(1)), None);
    }

    #[test]
    fn write_scope_aliases_and_model_restricted_predict() {
        for alias in [
            "model:write",
            "write",
            "admin",
            "full_access",
            "mlflow:write",
        ] {
            assert!(
                principal(&[alias]).require(Scope::ModelWrite).is_ok(),
                "{alias}"
            );
        }
        assert!(principal(&["predict"]).require(Scope::ModelWrite).is_err());
        let only_a = principal(&["predict:model-a"]);
        assert!(
            only_a
                .require_predict(&ModelId::parse("model-a").expect("id"))
                .is_ok()
        );
        let refused = only_a.require_predict(&ModelId::parse("model-b").expect("id"));
        assert!(matches!(refused, Err(ApiError::Forbidden(ref s)) if s == "predict:model-b"));
        assert!(
            matches!(principal(&["read"]).require(Scope::Admin), Err(ApiError::Forbidden(ref s)) if s == "admin")
        );
    }
}
