//! Payload logging (`LOG_PAYLOADS`): request bodies copied as the handler reads them (never
//! read ahead of authentication), bounded, with the fields of `LOG_REDACT_FIELDS` redacted
//! and the text truncated to `LOG_PAYLOAD_MAX_BYTES`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use serde_json::Value;

use super::ObserveConfig;

/// The most of a request body kept for the payload log.
pub(super) const CAPTURE_BYTES: usize = 64 * 1024;

/// What the payload log kept of a request body.
#[derive(Debug)]
pub(super) enum Captured {
    /// The body so far, whole.
    Whole(Vec<u8>),
    /// The body grew past this many bytes; nothing is kept.
    Cut(usize),
}

/// `body`, copying its bytes (up to `cap`) as they are read.
pub(super) fn tee(body: Body, cap: usize) -> (Arc<std::sync::Mutex<Captured>>, Body) {
    use futures_util::StreamExt;
    let seen = Arc::new(std::sync::Mutex::new(Captured::Whole(Vec::new())));
    let copy = seen.clone();
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            let mut copy = copy.lock().unwrap_or_else(|e| e.into_inner());
            if let Captured::Whole(kept) = &mut *copy {
                if kept.len() + bytes.len() > cap {
                    *copy = Captured::Cut(cap);
                } else {
                    kept.extend_from_slice(bytes);
                }
            }
        }
        chunk
    });
    (seen, Body::from_stream(stream))
}

/// A body as it may be logged: JSON with the configured keys redacted, truncated; any other
/// content only by its size (it could hold anything).
pub(super) fn payload(bytes: &Bytes, config: &ObserveConfig) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return format!("<{} bytes, not JSON>", bytes.len());
    };
    redact(&mut value, &config.redact_fields);
    truncate(value.to_string(), config.max_payload_bytes)
}

/// Replaces the value of every object key named in `fields` (case-insensitively), at any
/// depth.
fn redact(value: &mut Value, fields: &[String]) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if fields.iter().any(|f| f.eq_ignore_ascii_case(key)) {
                    *inner = Value::String("[redacted]".into());
                } else {
                    redact(inner, fields);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, fields)),
        _ => {}
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&format!("…[truncated, {total} bytes]"));
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(max: usize) -> ObserveConfig {
        ObserveConfig {
            log_payloads: true,
            max_payload_bytes: max,
            redact_fields: vec!["password".to_owned(), "token".to_owned()].into(),
            max_body_bytes: 1 << 20,
        }
    }

    #[test]
    fn payloads_are_redacted_at_any_depth_and_truncated() {
        let body = json!({"inputs": "hi", "Password": "p@ss", "nested": [{"token": "t0k"}]});
        let logged = payload(&Bytes::from(body.to_string()), &config(1000));
        assert!(
            !logged.contains("p@ss") && !logged.contains("t0k"),
            "{logged}"
        );
        assert!(logged.contains("[redacted]") && logged.contains("\"hi\""));
        let long = json!({"inputs": "é".repeat(100)});
        let logged = payload(&Bytes::from(long.to_string()), &config(21));
        assert!(logged.ends_with("bytes]"), "{logged}");
        assert!(logged.len() < 60);
    }

    #[test]
    fn non_json_payloads_are_logged_by_size_only() {
        let logged = payload(&Bytes::from_static(b"password=hunter2"), &config(100));
        assert_eq!(logged, "<16 bytes, not JSON>");
    }
}
