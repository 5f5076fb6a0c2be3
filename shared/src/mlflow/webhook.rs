//! MLflow webhook deliveries: the v1 signature, the freshness window and the payloads.
//!
//! A delivery is `POST`ed with `X-MLflow-Delivery-Id`, `X-MLflow-Timestamp` (unix seconds)
//! and `X-MLflow-Signature` = `"v1," + base64(HMAC-SHA256(secret, id + "." + timestamp +
//! "." + raw_body))` (docs/contracts/mlflow.md). [`authenticate`] checks all three — the
//! signature in constant time through `hmac`'s own comparison — before a byte of the body
//! is parsed; [`parse`] then reads the body into an [`Event`] and [`Event::decision`] says
//! what the listener does with it. The listener never calls MLflow or a provider inline.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;

use super::tags;
use crate::config::Secret;

/// Header carrying the delivery id (retries reuse it).
pub const DELIVERY_ID_HEADER: &str = "x-mlflow-delivery-id";
/// Header carrying the unix timestamp the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-mlflow-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-mlflow-signature";
/// Deliveries older than this are refused (replays).
pub const MAX_AGE_SECONDS: i64 = 300;
/// Deliveries stamped further in the future than this are refused (clock skew allowance).
pub const MAX_SKEW_SECONDS: i64 = 30;
/// The alias whose target serves predictions.
pub const PRODUCTION_ALIAS: &str = "production";

/// Why a delivery is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A required header is absent or not text.
    #[error("missing or unreadable header {0}")]
    MissingHeader(&'static str),
    /// The signature does not match the body, id and timestamp.
    #[error("the signature does not match")]
    BadSignature,
    /// The timestamp is outside the accepted window.
    #[error("the delivery timestamp is {0}")]
    Timestamp(&'static str),
    /// The body is not a webhook payload.
    #[error("malformed payload: {0}")]
    Malformed(String),
}

impl WebhookError {
    /// Whether the sender failed to prove who it is (401), as opposed to a bad body (400).
    pub fn is_authentication(&self) -> bool {
        !matches!(self, Self::Malformed(_))
    }
}

/// The headers of one delivery.
#[derive(Debug, Clone, Default)]
pub struct DeliveryHeaders {
    /// `X-MLflow-Delivery-Id`.
    pub delivery_id: Option<String>,
    /// `X-MLflow-Timestamp`.
    pub timestamp: Option<String>,
    /// `X-MLflow-Signature`.
    pub signature: Option<String>,
}

/// The v1 signature of a delivery.
pub fn sign(secret: &Secret, delivery_id: &str, timestamp: &str, body: &[u8]) -> String {
    let mac = mac_of(secret, delivery_id, timestamp, body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn mac_of(secret: &Secret, delivery_id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(delivery_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks the headers of a delivery against `secret` and the clock `now`; returns the
/// delivery id. The signature is compared in constant time.
pub fn authenticate(
    secret: &Secret,
    headers: &DeliveryHeaders,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<String, WebhookError> {
    let delivery_id = headers
        .delivery_id
        .as_deref()
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .ok_or(WebhookError::MissingHeader("X-MLflow-Delivery-Id"))?;
    let timestamp = headers
        .timestamp
        .as_deref()
        .ok_or(WebhookError::MissingHeader("X-MLflow-Timestamp"))?;
    let signature = headers
        .signature
        .as_deref()
        .ok_or(WebhookError::MissingHeader("X-MLflow-Signature"))?;
    let provided = signature
        .strip_prefix("v1,")
        .and_then(|b64| STANDARD.decode(b64.trim()).ok())
        .ok_or(WebhookError::BadSignature)?;
    mac_of(secret, delivery_id, timestamp, body)
        .verify_slice(&provided)
        .map_err(|_| WebhookError::BadSignature)?;
    check_fresh(timestamp, now)?;
    Ok(delivery_id.to_owned())
}

/// Refuses timestamps older than [`MAX_AGE_SECONDS`] or ahead by more than
/// [`MAX_SKEW_SECONDS`].
fn check_fresh(timestamp: &str, now: DateTime<Utc>) -> Result<(), WebhookError> {
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::Timestamp("not a unix time"))?;
    let age = now.timestamp().saturating_sub(sent);
    if age > MAX_AGE_SECONDS {
        return Err(WebhookError::Timestamp("too old"));
    }
    if age < -MAX_SKEW_SECONDS {
        return Err(WebhookError::Timestamp("in the future"));
    }
    Ok(())
}

/// A parsed delivery body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `entity.action`, e.g. `model_version.created`.
    pub name: String,
    /// The registered model, when the event concerns one.
    pub model_name: Option<String>,
    /// The model version, when the event names one.
    pub version: Option<String>,
    /// Tag key (`model_version_tag.*`).
    pub key: Option<String>,
    /// Tag value (`model_version_tag.set`).
    pub value: Option<String>,
    /// Alias (`model_version_alias.*`).
    pub alias: Option<String>,
}

/// What the listener does with an [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Record it for the worker: it may deploy or activate a version.
    Handle,
    /// Acknowledge and do nothing, for this reason.
    Ignore(&'static str),
}

#[derive(Deserialize)]
struct Payload {
    entity: String,
    action: String,
    #[serde(default)]
    data: Value,
}

/// Reads a delivery body. Known events must carry their identifying fields.
pub fn parse(body: &[u8]) -> Result<Event, WebhookError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let data = &payload.data;
    let event = Event {
        name: format!("{}.{}", payload.entity, payload.action),
        model_name: text(&data["name"]),
        version: text(&data["version"]),
        key: text(&data["key"]),
        value: text(&data["value"]),
        alias: text(&data["alias"]),
    };
    let needs_version = matches!(
        event.name.as_str(),
        "model_version.created" | "model_version_tag.set" | "model_version_alias.created"
    );
    if needs_version && (event.model_name.is_none() || event.version.is_none()) {
        return Err(WebhookError::Malformed(format!(
            "{}: data.name and data.version are required",
            event.name
        )));
    }
    Ok(event)
}

/// A string field (MLflow sends versions as strings; numbers are accepted too).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Event {
    /// docs/contracts/mlflow.md: new versions, `hokusai.deploy=true` tags and the `production`
    /// alias are handled; tags the service writes itself are ignored (no loops).
    pub fn decision(&self) -> Decision {
        match self.name.as_str() {
            "model_version.created" => Decision::Handle,
            "model_version_tag.set" => {
                let key = self.key.as_deref().unwrap_or_default();
                if tags::is_written_by_us(key) {
                    Decision::Ignore("a tag written by hokusai-serve")
                } else if key == tags::DEPLOY && self.value.as_deref().is_some_and(tags::is_true) {
                    Decision::Handle
                } else {
                    Decision::Ignore("not a hokusai.deploy=true tag")
                }
            }
            "model_version_alias.created" if self.alias.as_deref() == Some(PRODUCTION_ALIAS) => {
                Decision::Handle
            }
            "model_version_alias.created" => Decision::Ignore("not the production alias"),
            "registered_model.created"
            | "model_version_tag.deleted"
            | "model_version_alias.deleted" => Decision::Ignore("nothing to deploy"),
            _ => Decision::Ignore("unknown event"),
        }
    }

    /// Whether [`Event::decision`] ignores it because the event itself is unknown.
    pub fn is_unknown(&self) -> bool {
        self.decision() == Decision::Ignore("unknown event")
    }
}

#[cfg(test)]
mod tests;
