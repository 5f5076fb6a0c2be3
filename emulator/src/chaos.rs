//! Chaos and control: injected 429s (with `Retry-After`), 500s and latency on the
//! management API, per-endpoint 500s on inference ([`EndpointChaos`]), and the `/_emulator`
//! routes that change chaos at run time, list the endpoints held, make one fail or make its
//! inference routes answer errors. The control routes are not part of HF's API:
//!
//! - `GET|POST /_emulator/chaos`: the global [`ChaosConfig`].
//! - `GET /_emulator/endpoints`: every endpoint, with its state and `predict_error_rate`.
//! - `POST /_emulator/endpoints/{namespace}/{name}/fail`: the endpoint ends `failed` now.
//! - `POST /_emulator/endpoints/{namespace}/{name}/chaos` with `{"predict_error_rate": r}`
//!   (0.0 to 1.0; 0.0 turns it off): that share of the endpoint's inference requests answers
//!   500 while it stays `running`; 200 with the endpoint's [`EndpointChaos`], 404 for an
//!   unknown endpoint, 422 for a body without a valid rate.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};

use crate::config::ChaosConfig;
use crate::management::base_url;
use crate::store::{ApiError, Store};

/// Middleware on the management routes: maybe a 429 or a 500 instead of the answer.
pub async fn inject_failures(State(store): State<Store>, request: Request, next: Next) -> Response {
    let retry_after = store.chaos().retry_after_secs.max(1);
    match store.chaos_for_next_request() {
        Some(error @ ApiError::Json(status, _)) if status.as_u16() == 429 => {
            let mut response = error.into_response();
            let value = retry_after
                .to_string()
                .parse()
                .expect("digits are a header value");
            response.headers_mut().insert(header::RETRY_AFTER, value);
            response
        }
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

/// Middleware on every route: the configured latency.
pub async fn add_latency(State(store): State<Store>, request: Request, next: Next) -> Response {
    let latency = store.chaos().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    next.run(request).await
}

/// `/_emulator/*`.
pub fn control() -> Router<Store> {
    Router::new()
        .route("/_emulator/chaos", get(get_chaos).post(set_chaos))
        .route("/_emulator/endpoints", get(endpoints))
        .route("/_emulator/endpoints/{namespace}/{name}/fail", post(fail))
        .route(
            "/_emulator/endpoints/{namespace}/{name}/chaos",
            post(set_endpoint_chaos),
        )
}

async fn get_chaos(State(store): State<Store>) -> Json<ChaosConfig> {
    Json(store.chaos())
}

async fn set_chaos(
    State(store): State<Store>,
    Json(chaos): Json<ChaosConfig>,
) -> Json<ChaosConfig> {
    store.set_chaos(chaos);
    Json(store.chaos())
}

async fn endpoints(State(store): State<Store>, headers: axum::http::HeaderMap) -> Json<Value> {
    let items: Vec<Value> = store
        .list(None, &base_url(&headers))
        .into_iter()
        .map(|e| {
            json!({"namespace": e.namespace, "name": e.name, "state": e.state,
                   "predict_error_rate": e.predict_error_rate, "endpoint": e.raw})
        })
        .collect();
    Json(json!({"items": items}))
}

async fn fail(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    store.fail(&ns, &name, "Endpoint failed: emulated failure (chaos)")?;
    Ok(Json(json!({"failed": name})))
}

/// One endpoint's injected inference failures. It lives in the endpoint's record, so it dies
/// with the endpoint: a deleted and recreated endpoint starts without any.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EndpointChaos {
    /// The share of the endpoint's inference requests answered 500, from 0.0 (none) to 1.0.
    pub predict_error_rate: f64,
    /// Inference requests counted since the rate was set.
    #[serde(skip)]
    requests: u64,
}

impl EndpointChaos {
    /// Fails `predict_error_rate` of the requests from now on, counting from request 0.
    pub fn new(predict_error_rate: f64) -> Self {
        Self {
            predict_error_rate,
            requests: 0,
        }
    }

    /// Counts an inference request; true when it must fail. Request n (0-based) fails exactly
    /// when floor((n+1)·rate) > floor(n·rate), so the first k requests after the rate was
    /// set hold floor(k·rate) failures: 1.0 fails every request, 0.5 every second one, 0.1
    /// the tenth of every ten.
    pub fn next_request_fails(&mut self) -> bool {
        let n = self.requests;
        self.requests += 1;
        let rate = self.predict_error_rate;
        failures_among(n + 1, rate) > failures_among(n, rate)
    }
}

/// floor(k·rate), forgiving the binary rounding of a decimal rate (0.29 × 100 computes as
/// 28.999…, which must count 29).
fn failures_among(k: u64, rate: f64) -> u64 {
    let product = k as f64 * rate;
    (product + product * 1e-12).floor() as u64
}

/// What every 422 of `POST /_emulator/endpoints/{namespace}/{name}/chaos` asks for.
const RATE_RULE: &str = "predict_error_rate must be a number from 0.0 to 1.0";

/// The `predict_error_rate` of a `{"predict_error_rate": r}` body; 422 naming the field and
/// the rule when the body is not JSON, lacks the field, or holds a non-number or a number
/// outside 0.0–1.0.
fn parse_predict_error_rate(body: &[u8]) -> Result<f64, ApiError> {
    let invalid = |problem: String| {
        ApiError::Json(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{RATE_RULE}: {problem}"),
        )
    };
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not valid JSON ({e})")))?;
    let value = body
        .get("predict_error_rate")
        .ok_or_else(|| invalid("the field is missing".into()))?;
    match value.as_f64() {
        Some(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        Some(rate) => Err(invalid(format!("{rate} is out of range"))),
        None => Err(invalid(format!("{value} is not a number"))),
    }
}

async fn set_endpoint_chaos(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<EndpointChaos>, ApiError> {
    let rate = parse_predict_error_rate(&body)?;
    store.with_endpoint(&ns, &name, |r| {
        r.chaos = EndpointChaos::new(rate);
        Ok(Json(r.chaos.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of the first `k` requests fail at `rate`.
    fn failing(rate: f64, k: u64) -> Vec<u64> {
        let mut chaos = EndpointChaos::new(rate);
        (0..k).filter(|_| chaos.next_request_fails()).collect()
    }

    #[test]
    fn the_rate_fails_a_deterministic_share_of_requests() {
        assert_eq!(failing(1.0, 4), vec![0, 1, 2, 3]);
        assert_eq!(failing(0.5, 6), vec![1, 3, 5]);
        assert_eq!(failing(0.1, 20), vec![9, 19]);
        assert_eq!(failing(0.25, 8), vec![3, 7]);
        assert!(failing(0.0, 100).is_empty());
        assert_eq!(failing(0.29, 100).len(), 29, "decimal rates count exactly");
        assert_eq!(failing(0.57, 100).len(), 57, "decimal rates count exactly");
    }

    #[test]
    fn only_a_number_from_zero_to_one_is_a_rate() {
        assert_eq!(
            parse_predict_error_rate(br#"{"predict_error_rate": 0}"#).unwrap(),
            0.0
        );
        assert_eq!(
            parse_predict_error_rate(br#"{"predict_error_rate": 1}"#).unwrap(),
            1.0
        );
        let bad: [&[u8]; 7] = [
            br#"{"predict_error_rate": 1.5}"#,
            br#"{"predict_error_rate": -0.1}"#,
            br#"{"predict_error_rate": "x"}"#,
            br#"{"predict_error_rate": null}"#,
            br#"{}"#,
            br#"[0.5]"#,
            br#"{"predict_error_rate": "#,
        ];
        for body in bad {
            let Err(ApiError::Json(status, message)) = parse_predict_error_rate(body) else {
                panic!("accepted {}", String::from_utf8_lossy(body));
            };
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(message.starts_with(RATE_RULE), "{message}");
        }
    }
}
