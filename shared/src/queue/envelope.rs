//! The message envelope, version 1:
//!
//! ```json
//! {"v":1,"message_id":"uuid","kind":"deploy|undeploy|check_status|retire",
//!  "deployment_id":"uuid","attempt":0,"issued_at":"RFC3339","correlation_id":"uuid",
//!  "payload":{}}
//! ```
//!
//! `replayed` is present only on commands an operator replayed from the dead letters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::DeploymentId;

/// What a message asks the worker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// Create the provider endpoint.
    Deploy,
    /// Delete the provider endpoint of an active or running deployment.
    Undeploy,
    /// Observe the provider state and move the deployment on.
    CheckStatus,
    /// Undeploy a replaced version after the retirement delay.
    Retire,
}

impl MessageKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Undeploy => "undeploy",
            Self::CheckStatus => "check_status",
            Self::Retire => "retire",
        }
    }
}

/// A command on the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope version; only 1 exists.
    pub v: u32,
    /// Unique per message (the inbox key); a retry is a new message.
    pub message_id: Uuid,
    /// What to do.
    pub kind: MessageKind,
    /// The deployment concerned.
    pub deployment_id: DeploymentId,
    /// How many times this command was retried.
    pub attempt: u32,
    /// When the command was first issued.
    pub issued_at: DateTime<Utc>,
    /// Ties every message of one user action together (logs, traces).
    pub correlation_id: Uuid,
    /// Kind-specific data.
    #[serde(default)]
    pub payload: serde_json::Value,
    /// Set when an operator replayed the command from the dead letters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed: Option<Replayed>,
    /// How many times the command was postponed because infrastructure failed under it
    /// (database unreachable, step timeout). Drives the backoff; spends no `attempt`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub postponed: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Who replayed a dead-lettered command, and when (`hokusai-serve dlq replay`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// The operator (or tool) that replayed it.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why bytes are not an envelope we can handle.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON of the envelope's shape.
    #[error("undecodable message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A version this code does not know.
    #[error("unsupported envelope version {0}")]
    Version(u32),
}

impl Envelope {
    /// The current envelope version.
    pub const VERSION: u32 = 1;

    /// A first-attempt command with a fresh message and correlation id.
    pub fn new(kind: MessageKind, deployment_id: DeploymentId, payload: serde_json::Value) -> Self {
        Self {
            v: Self::VERSION,
            message_id: Uuid::now_v7(),
            kind,
            deployment_id,
            attempt: 0,
            issued_at: Utc::now(),
            correlation_id: Uuid::now_v7(),
            payload,
            replayed: None,
            postponed: 0,
        }
    }

    /// A follow-up command of the same story (same correlation id), e.g. a `check_status`
    /// after a `deploy`.
    pub fn follow_up(&self, kind: MessageKind) -> Self {
        Self {
            correlation_id: self.correlation_id,
            ..Self::new(kind, self.deployment_id, serde_json::Value::Null)
        }
    }

    /// The same command again, one attempt later, under a new message id.
    pub fn retry(&self) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            attempt: self.attempt.saturating_add(1),
            ..self.clone()
        }
    }

    /// The same command again, postponed once more, under a new message id; its attempt
    /// count is unchanged.
    pub fn postpone(&self) -> Self {
        Self {
            message_id: Uuid::now_v7(),
            postponed: self.postponed.saturating_add(1),
            ..self.clone()
        }
    }

    /// Decodes and checks the version.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Self = serde_json::from_slice(bytes)?;
        if envelope.v != Self::VERSION {
            return Err(EnvelopeError::Version(envelope.v));
        }
        Ok(envelope)
    }

    /// The JSON value stored in the outbox and sent on the wire.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an envelope always serializes")
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_the_documented_shape() {
        let envelope = Envelope::new(
            MessageKind::CheckStatus,
            DeploymentId::new(),
            serde_json::json!({}),
        );
        let json = envelope.to_json();
        for field in [
            "v",
            "message_id",
            "kind",
            "deployment_id",
            "attempt",
            "issued_at",
            "correlation_id",
            "payload",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["kind"], "check_status");
        let bytes = serde_json::to_vec(&json).expect("json");
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), envelope);
    }

    #[test]
    fn rejects_garbage_and_unknown_versions() {
        assert!(matches!(
            Envelope::decode(b"not json"),
            Err(EnvelopeError::Malformed(_))
        ));
        let mut json = Envelope::new(
            MessageKind::Deploy,
            DeploymentId::new(),
            serde_json::Value::Null,
        )
        .to_json();
        json["v"] = 2.into();
        let bytes = serde_json::to_vec(&json).expect("json");
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::Version(2))
        ));
    }

    #[test]
    fn retries_and_follow_ups_keep_the_story_together() {
        let first = Envelope::new(
            MessageKind::Deploy,
            DeploymentId::new(),
            serde_json::Value::Null,
        );
        let retry = first.retry();
        assert_eq!(
            (retry.attempt, retry.correlation_id),
            (1, first.correlation_id)
        );
        assert_ne!(retry.message_id, first.message_id);
        let next = first.follow_up(MessageKind::CheckStatus);
        assert_eq!(
            (next.attempt, next.correlation_id, next.deployment_id),
            (0, first.correlation_id, first.deployment_id)
        );
    }
}
