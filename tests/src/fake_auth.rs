//! A faithful fake of auth.hokus.ai (docs/contracts/hokusai-auth.md) for tests: an axum app on
//! `127.0.0.1:0` speaking the validation and usage routes.
//!
//! Tests add keys with scopes, then change them while the API runs (revoke, expire, make
//! the service answer `is_valid: false` inside a 200), force every call to answer 429 or
//! 500, slow every call down, or stop the service outright (connection refused). The fake
//! counts validation calls and keeps the last request body and every usage report, so a
//! test can assert what the API sent and how often.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the fake answers for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// 200, `is_valid: true`.
    Active,
    /// 401 "API key is inactive or has been revoked".
    Revoked,
    /// 401 "API key has expired".
    Expired,
    /// 200 with `is_valid: false` (what the old caller wrongly accepted).
    InvalidIn200,
}

#[derive(Debug, Clone)]
struct FakeKey {
    key_id: String,
    user_id: String,
    scopes: Vec<String>,
    state: KeyState,
    rate_limit_per_hour: Option<u64>,
    monthly_prediction_limit: Option<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    keys: HashMap<String, FakeKey>,
    forced_status: Option<u16>,
    delay: Duration,
    validations: usize,
    last_request: Option<Value>,
    usage: Vec<(String, Value)>,
}

/// A running fake auth service; dropping it leaves the server running until the test ends.
pub struct FakeAuth {
    /// `http://127.0.0.1:PORT` — what `HOKUSAI_AUTH_SERVICE_URL` is set to.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl FakeAuth {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> FakeAuth {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/v1/keys/validate", post(validate))
            .route("/api/v1/usage/{key_id}", post(usage))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake auth service");
        let address: SocketAddr = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .expect("fake auth service runs");
        });
        FakeAuth {
            url: format!("http://{address}"),
            inner,
            stop: Mutex::new(Some((stop, server))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake auth state")
    }

    /// Accepts `key` (as `key_id`, held by `user-of-{key_id}`) with `scopes`.
    pub fn add_key(&self, key: &str, key_id: &str, scopes: &[&str]) {
        self.add_user_key(key, key_id, &format!("user-of-{key_id}"), scopes);
    }

    /// Accepts `key` (as `key_id`, held by `user_id`) with `scopes`.
    pub fn add_user_key(&self, key: &str, key_id: &str, user_id: &str, scopes: &[&str]) {
        let fake = FakeKey {
            key_id: key_id.to_owned(),
            user_id: user_id.to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            state: KeyState::Active,
            rate_limit_per_hour: Some(5000),
            monthly_prediction_limit: None,
        };
        self.lock().keys.insert(key.to_owned(), fake);
    }

    /// Sets the allowance the service grants `key`: `rate_limit_per_hour` (5000 unless
    /// set; `None` sends `null`) and `monthly_prediction_limit` (`null` unless set).
    pub fn set_limits(&self, key: &str, per_hour: Option<u64>, monthly: Option<u64>) {
        let mut inner = self.lock();
        let fake = inner.keys.get_mut(key).expect("a known key");
        fake.rate_limit_per_hour = per_hour;
        fake.monthly_prediction_limit = monthly;
    }

    /// Changes how `key` is answered from now on (revocation, expiry…).
    pub fn set_state(&self, key: &str, state: KeyState) {
        self.lock().keys.get_mut(key).expect("a known key").state = state;
    }

    /// Every validation answers this status (429, 500…) until `None`.
    pub fn force_status(&self, status: Option<u16>) {
        self.lock().forced_status = status;
    }

    /// Every validation waits this long before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Validation calls received so far.
    pub fn validations(&self) -> usize {
        self.lock().validations
    }

    /// The JSON body of the latest validation call.
    pub fn last_request(&self) -> Option<Value> {
        self.lock().last_request.clone()
    }

    /// Usage reports received so far: `(key_id from the path, body)`.
    pub fn usage_reports(&self) -> Vec<(String, Value)> {
        self.lock().usage.clone()
    }

    /// Stops listening; later calls fail to connect.
    pub async fn stop(&self) {
        let running = self.stop.lock().expect("fake auth stop").take();
        if let Some((stop, server)) = running {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .expect("the fake auth service stops")
                .expect("the fake auth service task");
        }
    }
}

type Answer = (StatusCode, Json<Value>);

async fn validate(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Answer {
    let (delay, forced) = {
        let mut inner = inner.lock().expect("fake auth state");
        inner.validations += 1;
        inner.last_request = Some(body.clone());
        (inner.delay, inner.forced_status)
    };
    tokio::time::sleep(delay).await;
    if let Some(status) = forced {
        let status = StatusCode::from_u16(status).expect("a status code");
        return (status, Json(json!({"detail": "forced by the test"})));
    }
    let Some(key) = bearer(&headers) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"detail": "No API key provided"})),
        );
    };
    let found = inner
        .lock()
        .expect("fake auth state")
        .keys
        .get(key)
        .cloned();
    answer(found, body["service_id"].as_str())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn answer(key: Option<FakeKey>, service_id: Option<&str>) -> Answer {
    let key = match key {
        None => return invalid(StatusCode::UNAUTHORIZED, "Invalid API key"),
        Some(key) => key,
    };
    if service_id != Some("platform") {
        return invalid(
            StatusCode::UNAUTHORIZED,
            "Key not authorized for this service",
        );
    }
    match key.state {
        KeyState::Revoked => invalid(
            StatusCode::UNAUTHORIZED,
            "API key is inactive or has been revoked",
        ),
        KeyState::Expired => invalid(StatusCode::UNAUTHORIZED, "API key has expired"),
        KeyState::InvalidIn200 => invalid(StatusCode::OK, "API key has expired"),
        KeyState::Active => (
            StatusCode::OK,
            Json(json!({
                "is_valid": true, "key_id": key.key_id, "user_id": key.user_id,
                "service_id": "platform", "scopes": key.scopes,
                "rate_limit_per_hour": key.rate_limit_per_hour, "billing_plan": "free",
                "monthly_prediction_limit": key.monthly_prediction_limit,
                "user": {"id": key.user_id, "email": "someone@example.com", "roles": [],
                         "is_admin": false}
            })),
        ),
    }
}

fn invalid(status: StatusCode, error: &str) -> Answer {
    (
        status,
        Json(json!({
            "is_valid": false, "key_id": null, "user_id": null, "service_id": null,
            "scopes": null, "rate_limit_per_hour": null, "billing_plan": null,
            "monthly_prediction_limit": null, "error": error
        })),
    )
}

async fn usage(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(key_id): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    inner
        .lock()
        .expect("fake auth state")
        .usage
        .push((key_id, body));
    StatusCode::CREATED
}
