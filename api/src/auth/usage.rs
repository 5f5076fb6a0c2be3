//! Usage reporting to the auth service (`AUTH_USAGE_REPORTING=true`,
//! docs/contracts/hokusai-auth.md "Usage reporting").
//!
//! [`track`] is a middleware around every route, inside the observation middleware: the
//! [`super::Authenticated`] extractor records the [`super::Principal`] in the request's
//! [`RequestContext`] once a key is accepted (the request itself is consumed by the handler,
//! so the context is how the principal comes back out). After the response is built (for a
//! Server-Sent Events stream: once it ended), a record
//! `{endpoint, response_time_ms, status_code, service_id, model_id}` — plus `prompt_tokens`
//! and `completion_tokens` on the OpenAI-compatible routes — is offered to a bounded
//! queue with `try_send`: the request never waits, and a full queue drops the record and
//! counts it. A background task drains the queue in batches and posts each record to
//! `POST {auth}/api/v1/usage/{key_id}` with a few calls in flight; a failed post is counted
//! and forgotten, never retried. Requests without an accepted key are not reported.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::observe::RequestContext;

use super::counters::{AuthCounters, UsageOutcome};

/// Records waiting to be sent, at most.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Records taken from the queue at once.
const BATCH_SIZE: usize = 100;
/// Posts in flight at once.
const CONCURRENT_POSTS: usize = 8;

/// One authenticated request, as the auth service's usage route takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRecord {
    /// Goes in the URL, not the body.
    #[serde(skip)]
    pub key_id: String,
    /// The request path (no query string: it may carry secrets).
    pub endpoint: String,
    /// Time from request to response, in milliseconds.
    pub response_time_ms: u64,
    /// The response status.
    pub status_code: u16,
    /// `AUTH_SERVICE_ID`.
    pub service_id: String,
    /// The route's `{model_id}`, when it has one.
    pub model_id: Option<String>,
    /// On the OpenAI-compatible routes, the answer's `usage.prompt_tokens` (left out when
    /// unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// On the OpenAI-compatible routes, the answer's `usage.completion_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
}

/// The queue's producing end; cheap to share.
pub struct UsageReporter {
    queue: mpsc::Sender<UsageRecord>,
    service_id: String,
    counters: Arc<AuthCounters>,
}

impl UsageReporter {
    /// Starts the sending task (on the current runtime) posting to `service_url`.
    pub fn start(
        service_url: &str,
        service_id: &str,
        http: reqwest::Client,
        counters: Arc<AuthCounters>,
    ) -> Arc<Self> {
        let (reporter, queue) = Self::with_queue(QUEUE_CAPACITY, service_id, counters.clone());
        let sender = Sender {
            http,
            base_url: service_url.trim_end_matches('/').to_owned(),
            counters,
        };
        tokio::spawn(sender.run(queue));
        Arc::new(reporter)
    }

    fn with_queue(
        capacity: usize,
        service_id: &str,
        counters: Arc<AuthCounters>,
    ) -> (Self, mpsc::Receiver<UsageRecord>) {
        let (queue, receiver) = mpsc::channel(capacity);
        let reporter = Self {
            queue,
            service_id: service_id.to_owned(),
            counters,
        };
        (reporter, receiver)
    }

    /// Queues `record` without waiting; drops (and counts) it when the queue is full.
    pub fn report(&self, record: UsageRecord) {
        if self.queue.try_send(record).is_err() {
            self.counters.usage(UsageOutcome::Dropped);
        }
    }
}

/// The middleware: times the request and reports it once the response exists.
pub async fn track(
    State(reporter): State<Arc<UsageReporter>>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let Some(context) = parts.extensions.get::<RequestContext>().cloned() else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let model_id = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|params| {
            params
                .iter()
                .find(|(name, _)| *name == "model_id")
                .map(|(_, value)| value.to_owned())
        });
    let endpoint = parts.uri.path().to_owned();
    let response = next.run(Request::from_parts(parts, body)).await;
    let Some(principal) = context.principal() else {
        return response;
    };
    let pending = Pending {
        reporter,
        context: context.clone(),
        record: Some(UsageRecord {
            key_id: principal.key_id.clone(),
            endpoint,
            response_time_ms: 0,
            status_code: response.status().as_u16(),
            service_id: String::new(),
            model_id,
            prompt_tokens: None,
            completion_tokens: None,
        }),
    };
    let streamed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        drop(pending); // reports now
        return response;
    }
    // A stream's time and token counts are known when it ends: the record goes when the
    // body is done or dropped (the client went away).
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _ = &pending;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// A record reported when dropped, with the time and tokens known by then.
struct Pending {
    reporter: Arc<UsageReporter>,
    context: RequestContext,
    record: Option<UsageRecord>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let elapsed = self.context.started().elapsed().as_millis();
        record.response_time_ms = u64::try_from(elapsed).unwrap_or(u64::MAX);
        record.service_id.clone_from(&self.reporter.service_id);
        if let Some(tokens) = self.context.tokens() {
            record.prompt_tokens = tokens.prompt;
            record.completion_tokens = tokens.completion;
        }
        self.reporter.report(record);
    }
}

/// The consuming end: posts records until every reporter is gone.
struct Sender {
    http: reqwest::Client,
    base_url: String,
    counters: Arc<AuthCounters>,
}

impl Sender {
    async fn run(self, mut queue: mpsc::Receiver<UsageRecord>) {
        let mut batch = Vec::with_capacity(BATCH_SIZE);
        while queue.recv_many(&mut batch, BATCH_SIZE).await > 0 {
            futures_util::stream::iter(batch.drain(..))
                .for_each_concurrent(CONCURRENT_POSTS, |record| self.post(record))
                .await;
        }
    }

    async fn post(&self, record: UsageRecord) {
        let Ok(mut url) = reqwest::Url::parse(&self.base_url) else {
            self.counters.usage(UsageOutcome::Failed);
            return;
        };
        if let Ok(mut segments) = url.path_segments_mut() {
            segments
                .pop_if_empty()
                .extend(["api", "v1", "usage", &record.key_id]);
        }
        let sent = self.http.post(url).json(&record).send().await;
        match sent {
            Ok(response) if response.status().is_success() => {
                self.counters.usage(UsageOutcome::Sent);
            }
            Ok(response) => {
                tracing::debug!(status = response.status().as_u16(), "usage report refused");
                self.counters.usage(UsageOutcome::Failed);
            }
            Err(error) => {
                tracing::debug!(timeout = error.is_timeout(), "usage report not delivered");
                self.counters.usage(UsageOutcome::Failed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u16) -> UsageRecord {
        UsageRecord {
            key_id: "k1".into(),
            endpoint: "/api/v1/models".into(),
            response_time_ms: 3,
            status_code: n,
            service_id: "platform".into(),
            model_id: None,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let counters = Arc::new(AuthCounters::default());
        let (reporter, mut queue) = UsageReporter::with_queue(2, "platform", counters.clone());

        for status in [200, 201, 202, 203] {
            reporter.report(record(status));
        }

        assert_eq!(counters.usage_reports(UsageOutcome::Dropped), 2);
        assert_eq!(queue.recv().await.map(|r| r.status_code), Some(200));
        assert_eq!(queue.recv().await.map(|r| r.status_code), Some(201));
        assert!(queue.try_recv().is_err());
    }

    #[test]
    fn the_body_carries_the_contract_fields_and_not_the_key_id() {
        let body = serde_json::to_value(record(200)).expect("json");

        assert_eq!(
            body,
            serde_json::json!({"endpoint": "/api/v1/models", "response_time_ms": 3,
                "status_code": 200, "service_id": "platform", "model_id": null})
        );
    }
}
