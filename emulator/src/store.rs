//! The emulator's state: endpoints by namespace and name, the chaos settings and a request
//! counter, behind one mutex that is never held across an await.
//!
//! Each operation returns the rendered Endpoint object or an [`ApiError`] shaped like the
//! real API's (JSON `{"error"}` usually, plain text where HF answers plain text).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{ChaosConfig, EmulatorConfig};
use crate::endpoint::{Phase, Record};

/// An error answer of the emulated API.
#[derive(Debug)]
pub enum ApiError {
    /// `{"error": message}` with this status.
    Json(StatusCode, String),
    /// A plain-text body (HF's JSON syntax errors).
    Text(StatusCode, String),
}

impl ApiError {
    /// 400 `{"error"}`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::Json(StatusCode::BAD_REQUEST, message.into())
    }

    fn not_found(namespace: &str, name: &str) -> Self {
        Self::Json(
            StatusCode::NOT_FOUND,
            format!("Endpoint {namespace}/{name} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Json(status, message) => {
                (status, axum::Json(json!({"error": message}))).into_response()
            }
            Self::Text(status, message) => (status, message).into_response(),
        }
    }
}

/// A summary of one held endpoint, for tests comparing the emulator with the database.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointInfo {
    /// Owner namespace.
    pub namespace: String,
    /// Endpoint name.
    pub name: String,
    /// v2 state string.
    pub state: String,
    /// The share of its inference requests answered 500 (chaos; 0.0 = none).
    pub predict_error_rate: f64,
    /// The Endpoint object as `GET` would return it.
    pub raw: Value,
}

struct Inner {
    endpoints: BTreeMap<(String, String), Record>,
    chaos: ChaosConfig,
    management_requests: u64,
}

/// Shared emulator state.
#[derive(Clone)]
pub struct Store {
    config: Arc<EmulatorConfig>,
    inner: Arc<Mutex<Inner>>,
}

impl Store {
    /// An empty store.
    pub fn new(config: EmulatorConfig) -> Self {
        let chaos = config.chaos.clone();
        Self {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner {
                endpoints: BTreeMap::new(),
                chaos,
                management_requests: 0,
            })),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters to an emulator; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the endpoint after applying due transitions.
    pub fn with_endpoint<T>(
        &self,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Record) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let record = inner
            .endpoints
            .get_mut(&key)
            .ok_or_else(|| ApiError::not_found(namespace, name))?;
        record.advance(Instant::now(), &self.config);
        f(record)
    }

    /// Adds a new endpoint; 409 if the name is taken in the namespace.
    pub fn insert(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
        spec: Value,
        base: &str,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if inner.endpoints.contains_key(&key) {
            return Err(ApiError::Json(
                StatusCode::CONFLICT,
                format!("Endpoint name {name} already exists in {namespace}"),
            ));
        }
        let doomed = inner.chaos.fail_next_deploys > 0;
        if doomed {
            inner.chaos.fail_next_deploys -= 1;
        }
        let record = Record::new(namespace, name, kind, spec, doomed);
        let json = record.to_json(base);
        inner.endpoints.insert(key, record);
        Ok(json)
    }

    /// Removes an endpoint.
    pub fn remove(&self, namespace: &str, name: &str) -> Result<(), ApiError> {
        let key = (namespace.to_owned(), name.to_owned());
        match self.lock().endpoints.remove(&key) {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found(namespace, name)),
        }
    }

    /// The endpoints of `namespace` (every namespace when `None`), rendered at `base`.
    pub fn list(&self, namespace: Option<&str>, base: &str) -> Vec<EndpointInfo> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner
            .endpoints
            .values_mut()
            .filter(|r| namespace.is_none_or(|ns| r.namespace == ns))
            .map(|r| {
                r.advance(now, &self.config);
                EndpointInfo {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    state: r.state().to_owned(),
                    predict_error_rate: r.chaos.predict_error_rate,
                    raw: r.to_json(base),
                }
            })
            .collect()
    }

    /// Makes an endpoint `failed` now (tests of a provider losing an endpoint).
    pub fn fail(&self, namespace: &str, name: &str, reason: &str) -> Result<(), ApiError> {
        self.with_endpoint(namespace, name, |r| {
            r.enter(Phase::Failed(reason.to_owned()));
            Ok(())
        })
    }

    /// Counts an inference request to the endpoint; true when its `predict_error_rate`
    /// makes this one answer 500.
    pub fn inference_fails(&self, namespace: &str, name: &str) -> Result<bool, ApiError> {
        self.with_endpoint(namespace, name, |r| Ok(r.chaos.next_request_fails()))
    }

    /// The current chaos settings.
    pub fn chaos(&self) -> ChaosConfig {
        self.lock().chaos.clone()
    }

    /// Replaces the chaos settings.
    pub fn set_chaos(&self, chaos: ChaosConfig) {
        self.lock().chaos = chaos;
    }

    /// Counts a management request and decides whether chaos answers it instead.
    pub fn chaos_for_next_request(&self) -> Option<ApiError> {
        let mut inner = self.lock();
        inner.management_requests += 1;
        let n = inner.management_requests;
        let chaos = &mut inner.chaos;
        let every = |k: u32| k > 0 && n.is_multiple_of(u64::from(k));
        if chaos.rate_limit_next > 0 || every(chaos.rate_limit_every) {
            chaos.rate_limit_next = chaos.rate_limit_next.saturating_sub(1);
            return Some(ApiError::Json(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests (emulated rate limit)".into(),
            ));
        }
        if chaos.forbidden_next > 0 {
            chaos.forbidden_next -= 1;
            return Some(ApiError::Json(
                StatusCode::FORBIDDEN,
                "Forbidden: the token lacks the permission (emulated)".into(),
            ));
        }
        if chaos.server_error_next > 0 || every(chaos.server_error_every) {
            chaos.server_error_next = chaos.server_error_next.saturating_sub(1);
            return Some(ApiError::Json(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error (emulated)".into(),
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::chaos::EndpointChaos;

    #[test]
    fn an_endpoints_error_rate_dies_with_it() {
        let store = Store::new(EmulatorConfig::default());
        let spec = json!({"model": {"repository": "a/b"}});
        store
            .insert("ns", "e", "public", spec.clone(), "http://h")
            .unwrap();
        store
            .with_endpoint("ns", "e", |r| {
                r.chaos = EndpointChaos::new(1.0);
                Ok(())
            })
            .unwrap();
        let doomed = store.inference_fails("ns", "e").unwrap();

        store.remove("ns", "e").unwrap();
        store.insert("ns", "e", "public", spec, "http://h").unwrap();

        assert!(doomed);
        assert!(!store.inference_fails("ns", "e").unwrap());
        assert_eq!(store.list(None, "http://h")[0].predict_error_rate, 0.0);
        assert!(store.inference_fails("ns", "nope").is_err());
    }
}
