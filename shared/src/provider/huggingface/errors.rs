//! Turning HF answers into [`ProviderError`]s.
//!
//! The message is read where HF puts it: the `X-Error-Message` header, then the JSON
//! `error` field, then the raw body (JSON syntax errors come back as plain text). Delays come
//! from `Retry-After` (seconds or an HTTP date) or from `RateLimit: "api";r=0;t=55`.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::provider::ProviderError;

/// The delay assumed for a 429 or 503 that does not say how long to wait.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest message kept from a body (a proxy may answer with a whole HTML page).
const MAX_MESSAGE_LEN: usize = 500;

/// The error for a non-success answer of the management API.
pub async fn from_response(response: reqwest::Response) -> ProviderError {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.unwrap_or_default();
    classify(status, &headers, &body)
}

/// The error for `status` with these headers and body.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> ProviderError {
    let message = message_of(status, headers, body);
    let retry_after = retry_after(headers);
    match status.as_u16() {
        400 if message.to_lowercase().contains("already exist") => {
            ProviderError::Conflict { message }
        }
        400 | 413 | 422 => ProviderError::Invalid { message },
        401 | 403 => ProviderError::Unauthorized { message },
        404 => ProviderError::NotFound { message },
        409 => ProviderError::Conflict { message },
        429 => ProviderError::RateLimited {
            message,
            retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        408 | 500..=599 => ProviderError::Transient {
            message,
            retry_after,
        },
        _ => ProviderError::Invalid { message },
    }
}

/// The error for a request that got no answer (connection refused, reset, timeout).
pub fn from_transport(err: &reqwest::Error) -> ProviderError {
    let what = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_decode() {
        "answered with an unreadable body"
    } else {
        "request failed"
    };
    // For logs (never sent to API clients); credentials in the URL, if any, redacted.
    let url = err
        .url()
        .map(|u| format!(" ({})", crate::config::redact_url_password(u.as_str())))
        .unwrap_or_default();
    if err.is_timeout() {
        return ProviderError::Timeout {
            message: format!("provider {what}{url}"),
        };
    }
    ProviderError::transient(format!("provider {what}{url}"))
}

/// The provider's message: `X-Error-Message`, then JSON `error`, then the text body.
pub fn message_of(status: StatusCode, headers: &HeaderMap, body: &str) -> String {
    let header = headers.get("x-error-message").and_then(|v| v.to_str().ok());
    if let Some(m) = header.map(str::trim).filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    let json_error = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned())
        .and_then(|e| match e {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        });
    let text = json_error.unwrap_or_else(|| body.trim().to_owned());
    if text.is_empty() {
        return format!("HTTP {status}");
    }
    truncate(text)
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_LEN {
        let mut cut = MAX_MESSAGE_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The delay asked for by `Retry-After` or, failing that, an exhausted `RateLimit` policy.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    header(RETRY_AFTER.as_str())
        .and_then(parse_retry_after)
        .or_else(|| header("ratelimit").and_then(parse_ratelimit))
}

/// `Retry-After`: delta-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// `RateLimit: "api";r=0;t=55`: when no request remains (`r=0`), wait `t` seconds.
fn parse_ratelimit(value: &str) -> Option<Duration> {
    let mut remaining = None;
    let mut reset = None;
    for part in value.split(';').skip(1) {
        match part.trim().split_once('=') {
            Some(("r", v)) => remaining = v.trim().parse::<u64>().ok(),
            Some(("t", v)) => reset = v.trim().parse::<u64>().ok(),
            _ => {}
        }
    }
    match (remaining, reset) {
        (Some(0), Some(t)) | (None, Some(t)) => Some(Duration::from_secs(t)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn message_comes_from_the_header_then_json_then_text() {
        let bad = StatusCode::BAD_REQUEST;
        let with_header = headers(&[("x-error-message", "from header")]);
        assert_eq!(
            message_of(bad, &with_header, r#"{"error":"json"}"#),
            "from header"
        );
        assert_eq!(
            message_of(bad, &HeaderMap::new(), r#"{"error":"json"}"#),
            "json"
        );
        assert_eq!(
            message_of(bad, &HeaderMap::new(), "plain text\n"),
            "plain text"
        );
        assert_eq!(
            message_of(bad, &HeaderMap::new(), ""),
            "HTTP 400 Bad Request"
        );
        assert!(message_of(bad, &HeaderMap::new(), &"x".repeat(2000)).len() < 600);
    }

    #[test]
    fn statuses_map_to_what_the_caller_should_do() {
        let none = HeaderMap::new();
        let kind = |code: u16, body: &str| {
            classify(StatusCode::from_u16(code).unwrap(), &none, body).kind()
        };
        assert_eq!(kind(400, "bad"), "invalid");
        assert_eq!(
            kind(400, r#"{"error":"Endpoint name already exists"}"#),
            "conflict"
        );
        assert_eq!(kind(422, "enum"), "invalid");
        assert_eq!(kind(401, ""), "unauthorized");
        assert_eq!(kind(403, ""), "unauthorized");
        assert_eq!(kind(404, ""), "not_found");
        assert_eq!(kind(409, ""), "conflict");
        assert_eq!(kind(408, ""), "transient");
        assert_eq!(kind(429, ""), "rate_limited");
        for code in [500, 502, 503, 504] {
            assert_eq!(kind(code, ""), "transient");
        }
    }

    #[test]
    fn delays_come_from_retry_after_or_ratelimit() {
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(retry_after(&headers(&[("retry-after", "7")])), secs(7));
        assert_eq!(
            retry_after(&headers(&[("ratelimit", "\"api\";r=0;t=55")])),
            secs(55)
        );
        assert_eq!(
            retry_after(&headers(&[("ratelimit", "\"api\";r=3;t=55")])),
            None
        );
        let past = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert_eq!(retry_after(&past), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
        let limited = classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), "");
        assert_eq!(limited.retry_after(), Some(DEFAULT_RETRY_AFTER));
    }
}
