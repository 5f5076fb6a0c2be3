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
//! `X-API-Key: <key>`, and never logged. The client IP passed to the authenticator is the
//! first `X-Forwarded-For` entry when `TRUST_FORWARDED_FOR=true`, else the TCP peer.

pub mod cache;
pub mod counters;
pub mod hokusai;
pub mod static_keys;
pub mod usage;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use shared::domain::ModelId;

use crate::error::ApiError;
use crate::observe::RequestContext;
use crate::state::AppState;

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
    /// Hourly request allowance.
    pub rate_limit_per_hour: Option<u32>,
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

/// The caller's address: the first `X-Forwarded-For` entry when the proxy in front is
/// trusted to set it (and it parses), else the TCP peer.
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    let forwarded = || {
        parts
            .headers
            .get("x-forwarded-for")?
            .to_str()
            .ok()?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    trust_forwarded_for.then(forwarded).flatten().or_else(|| {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })
}

/// Extracts and validates the caller's key; rejects with 401, 429 or 503.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Principal>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = api_key(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized("an API key is required".into()))?;
        let client_ip = client_ip(parts, state.settings.auth.trust_forwarded_for);
        match state.authenticator.authenticate(key, client_ip).await {
            Ok(principal) => {
                // Shared with the request context (log line, usage report), not copied.
                let principal = Arc::new(principal);
                if let Some(context) = parts.extensions.get::<RequestContext>() {
                    context.set_principal(&principal);
                }
                Ok(Self(principal))
            }
            Err(AuthError::Invalid) => {
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

        assert_eq!(client_ip(&parts, true), Some([203, 0, 113, 7].into()));
        assert_eq!(client_ip(&parts, false), Some(peer));
        let (garbage, ()) = axum::http::Request::builder()
            .header("x-forwarded-for", "not-an-ip")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(client_ip(&garbage, true), None);
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
