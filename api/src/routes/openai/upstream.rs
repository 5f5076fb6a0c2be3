//! The model container's side of a pass-through: its answer read within a bound, and its
//! failures and refusals mapped to our errors (messages kept only when they are the caller's,
//! and never with an internal URL).

use std::time::Duration;

use serde_json::Value;

use crate::error::ApiError;

/// The body of a non-streamed answer, at most `limit` bytes.
pub(super) async fn bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > limit => {
                return Err(ApiError::Upstream(
                    "the model endpoint's answer is too large".into(),
                ));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(_) => {
                return Err(ApiError::Upstream(
                    "the model endpoint broke off its answer".into(),
                ));
            }
        }
    }
}

/// An upstream answer with an error status: the caller's mistakes (4xx) keep their status and
/// the container's message (URLs removed); waking is 503, overload 429, the rest 502.
pub(super) fn upstream_refusal(status: u16, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| match &v["error"] {
            Value::String(message) => Some(message.clone()),
            Value::Object(error) => error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        });
    tracing::warn!(status, "the model endpoint refused an OpenAI request");
    match (status, message) {
        (503, _) => ApiError::ModelNotReady {
            detail: "the model endpoint is not ready (waking up or scaling)".into(),
            retry_after: Duration::from_secs(5),
        },
        (429 | 424, _) => ApiError::RateLimited {
            detail: "the model endpoint is overloaded".into(),
            retry_after: Duration::from_secs(1),
        },
        (413, _) => ApiError::PayloadTooLarge,
        (404, _) => ApiError::BadRequest("the model endpoint has no such route".into()),
        (400..=499, Some(message)) => ApiError::Validation(without_urls(&message)),
        (400..=499, None) => ApiError::BadRequest("the model rejected the request".into()),
        _ => ApiError::Upstream("the model endpoint failed".into()),
    }
}

/// `text` with every `http://` or `https://` word replaced: a container's message must not
/// reveal internal addresses.
fn without_urls(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.contains("http://") || word.contains("https://") {
                "<url>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
