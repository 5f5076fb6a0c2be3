//! Bounded work per request: at most `MAX_CONCURRENT_REQUESTS` requests in flight (past it
//! a request is shed at once with 503 `OVERLOADED` and `Retry-After`, so an overload costs
//! callers a retry instead of costing every request its latency), and non-predict requests
//! bounded by `REQUEST_TIMEOUT_SECONDS`, body reading included (a client sending its body
//! slowly cannot hold a request open). Predictions keep `PREDICT_TIMEOUT_SECONDS` and
//! `SCALE_UP_TIMEOUT_SECONDS` of their own. Health, readiness and metrics ([`PROBES`]) are
//! never shed: an overloaded task must not look dead to its load balancer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::config::ApiSettings;
use shared::telemetry::metrics::names;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// The limits of [`bound`].
#[derive(Debug)]
pub struct Bounds {
    permits: Arc<Semaphore>,
    request_timeout: Duration,
}

impl Bounds {
    /// From `MAX_CONCURRENT_REQUESTS` and `REQUEST_TIMEOUT_SECONDS`.
    pub fn new(settings: &ApiSettings) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            request_timeout: settings.request_timeout,
        }
    }
}

/// Routes never shed nor timed out here: the probes of load balancers and orchestrators (ours,
/// and the Open Inference Protocol's that KServe-style deployments probe).
pub(crate) const PROBES: [&str; 5] = [
    "/health",
    "/ready",
    "/metrics",
    "/v2/health/live",
    "/v2/health/ready",
];

/// The middleware.
pub async fn bound(State(bounds): State<Arc<Bounds>>, request: Request, next: Next) -> Response {
    if PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = bounds.permits.clone().try_acquire_owned() else {
        metrics::counter!(names::LIMITED, "limit" => "concurrency").increment(1);
        return ApiError::Overloaded.into_response();
    };
    let predict = crate::observe::is_prediction(request.extensions().get::<MatchedPath>());
    if predict {
        return next.run(request).await;
    }
    match tokio::time::timeout(bounds.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::RequestTimeout(bounds.request_timeout.as_secs()).into_response(),
    }
}
