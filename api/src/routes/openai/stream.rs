//! The streamed answers of the OpenAI-compatible routes: Server-Sent Events passed through
//! chunk by chunk, each wait bounded, token usage read from whole events on the way.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shared::domain::ModelId;
use shared::telemetry::metrics::names::{STREAM_ERRORS, TOKENS};

use crate::observe::{RequestContext, Tokens};
use crate::routing::ActiveRoute;

/// Adds the `usage` object's prompt and completion tokens to `hokusai_tokens_total` and
/// records them in the request's context, where the usage report reads them.
pub(super) fn count_tokens(model: &ModelId, usage: &Value, context: Option<&RequestContext>) {
    let read = |field: &str| usage.get(field).and_then(Value::as_u64);
    let tokens = Tokens {
        prompt: read("prompt_tokens"),
        completion: read("completion_tokens"),
    };
    for (n, kind) in [(tokens.prompt, "prompt"), (tokens.completion, "completion")] {
        if let Some(n) = n {
            metrics::counter!(TOKENS, "model_id" => model.as_str().to_owned(), "kind" => kind)
                .increment(n);
        }
    }
    if let Some(context) = context {
        context.set_tokens(tokens);
    }
}

/// The upstream event stream, chunk by chunk as it arrives, each wait bounded by `idle`; the
/// `usage` of its events is counted; an upstream failure ends it with an error event.
pub(super) fn sse(
    upstream: reqwest::Response,
    idle: Duration,
    route: Arc<ActiveRoute>,
    context: Option<RequestContext>,
) -> Response {
    struct Pass {
        upstream: Option<reqwest::Response>,
        route: Arc<ActiveRoute>,
        context: Option<RequestContext>,
        idle: Duration,
        /// The bytes of an event not yet complete (usage is read from whole events).
        pending: Vec<u8>,
    }
    let pass = Pass {
        upstream: Some(upstream),
        route,
        context,
        idle,
        pending: Vec::new(),
    };
    let stream = futures_util::stream::unfold(pass, |mut pass| async move {
        let upstream = pass.upstream.as_mut()?;
        let failure = match tokio::time::timeout(pass.idle, upstream.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                let model = &pass.route.model_id;
                scan_usage(&mut pass.pending, &chunk, model, pass.context.as_ref());
                return Some((Ok::<Bytes, std::convert::Infallible>(chunk), pass));
            }
            Ok(Ok(None)) => {
                pass.route.series.ok.increment(1);
                return None;
            }
            Ok(Err(_)) => "the model endpoint broke off the stream",
            Err(_) => "the model endpoint sent nothing within STREAM_IDLE_TIMEOUT_SECONDS",
        };
        pass.upstream = None;
        metrics::counter!(STREAM_ERRORS, "model_id" => pass.route.model_id.as_str().to_owned())
            .increment(1);
        tracing::warn!(model_id = %pass.route.model_id, failure, "stream ended early");
        let event = json!({"error": {"message": failure, "type": "upstream_error", "code": "upstream_error"}});
        Some((Ok(Bytes::from(format!("data: {event}\n\n"))), pass))
    });
    let mut response = axum::body::Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Appends `chunk` to the incomplete event in `pending`, counts the `usage` of every complete
/// `data:` event, keeps the rest (bounded: an event over 64 KiB is dropped from the scan).
fn scan_usage(
    pending: &mut Vec<u8>,
    chunk: &[u8],
    model: &ModelId,
    context: Option<&RequestContext>,
) {
    pending.extend_from_slice(chunk);
    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
        let event: Vec<u8> = pending.drain(..end + 2).collect();
        let Some(data) = event.strip_prefix(b"data: ") else {
            continue;
        };
        if let Ok(value) = serde_json::from_slice::<Value>(data.trim_ascii())
            && let Some(usage) = value.get("usage").filter(|u| u.is_object())
        {
            count_tokens(model, usage, context);
        }
    }
    if pending.len() > 64 * 1024 {
        pending.clear();
    }
}
