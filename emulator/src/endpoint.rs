//! One emulated endpoint and its state machine.
//!
//! ```text
//! create ─► pending ─► initializing ─► running ◄──────────────┐
//!                           │  (chaos) └─► failed             │
//! running ─pause─► paused ─resume─► initializing ─► running   │
//! running ─scale-to-zero─► scaledToZero ─request─► initializing (waking, url kept)
//! running ─PUT─► updating ─► running                          │
//! ```
//! Time drives the machine lazily: [`Record::advance`] is called on every access with the
//! current (tokio) instant, so `tokio::time::pause` also pauses provisioning.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::chaos::EndpointChaos;
use crate::config::EmulatorConfig;

/// Where an endpoint is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Accepted.
    Pending,
    /// Provisioning replicas.
    Initializing,
    /// Serving.
    Running,
    /// Paused by request.
    Paused,
    /// No replica; the next request wakes it.
    ScaledToZero,
    /// Waking from scale-to-zero (shown as `initializing`, URL kept).
    Waking,
    /// Applying an update (URL kept).
    Updating,
    /// Failed to start, with the reason.
    Failed(String),
}

/// An endpoint as the emulator stores it.
#[derive(Debug, Clone)]
pub struct Record {
    /// Owner.
    pub namespace: String,
    /// Unique name in the namespace.
    pub name: String,
    /// `public`, `authenticated`, `private` or `protected`.
    pub kind: String,
    /// `provider`, `compute` and `model` blocks (and extras like `tags`) as last sent.
    pub spec: Value,
    /// Current phase.
    pub phase: Phase,
    since: Instant,
    /// Ends `failed` after initializing (chaos).
    pub doomed: bool,
    /// Injected inference failures (`POST /_emulator/endpoints/{namespace}/{name}/chaos`).
    pub chaos: EndpointChaos,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Record {
    /// A new, pending endpoint.
    pub fn new(namespace: &str, name: &str, kind: &str, spec: Value, doomed: bool) -> Self {
        let now = Utc::now();
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind: kind.to_owned(),
            spec,
            phase: Phase::Pending,
            since: Instant::now(),
            doomed,
            chaos: EndpointChaos::default(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Moves to `phase` now.
    pub fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.since = Instant::now();
        self.updated_at = Utc::now();
    }

    /// Applies every timed transition due by `now`.
    pub fn advance(&mut self, now: Instant, config: &EmulatorConfig) {
        loop {
            let elapsed = now.saturating_duration_since(self.since);
            let (due, next) = match self.phase {
                Phase::Pending => (config.pending_time, Phase::Initializing),
                Phase::Initializing if self.doomed => (
                    config.initializing_time,
                    Phase::Failed("Endpoint failed to start: emulated failure (chaos)".into()),
                ),
                Phase::Initializing | Phase::Updating => (config.initializing_time, Phase::Running),
                Phase::Waking => (config.cold_start_time, Phase::Running),
                _ => return,
            };
            if elapsed < due {
                return;
            }
            self.phase = next;
            self.since += due;
            self.updated_at = Utc::now();
        }
    }

    /// The state string of the v2 API.
    pub fn state(&self) -> &'static str {
        match self.phase {
            Phase::Pending => "pending",
            Phase::Initializing | Phase::Waking => "initializing",
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::ScaledToZero => "scaledToZero",
            Phase::Updating => "updating",
            Phase::Failed(_) => "failed",
        }
    }

    fn has_url(&self) -> bool {
        matches!(
            self.phase,
            Phase::Running | Phase::ScaledToZero | Phase::Waking | Phase::Updating
        )
    }

    fn replicas(&self) -> (u64, u64) {
        let scaling = &self.spec["compute"]["scaling"];
        let target = scaling["minReplica"].as_u64().unwrap_or(1).max(1);
        match self.phase {
            Phase::Running | Phase::Updating => (target, target),
            Phase::Paused | Phase::ScaledToZero | Phase::Failed(_) => (0, 0),
            _ => (0, target),
        }
    }

    fn message(&self) -> String {
        match &self.phase {
            Phase::Pending => "Endpoint waiting to be scheduled".into(),
            Phase::Initializing => "Endpoint is initializing".into(),
            Phase::Waking => "Endpoint is scaling up from zero".into(),
            Phase::Running => "Endpoint is running".into(),
            Phase::Paused => "Endpoint is paused".into(),
            Phase::ScaledToZero => "Endpoint is scaled to zero".into(),
            Phase::Updating => "Endpoint is updating".into(),
            Phase::Failed(reason) => reason.clone(),
        }
    }

    /// The inference URL on the emulator at `base`.
    pub fn url(&self, base: &str) -> String {
        format!("{base}/endpoints/{}/{}", self.namespace, self.name)
    }

    /// The Endpoint object, with every field the official client reads.
    pub fn to_json(&self, base: &str) -> Value {
        let (ready, target) = self.replicas();
        let who = json!({"id": "emulator", "name": self.namespace});
        let mut status = json!({
            "state": self.state(), "message": self.message(),
            "createdAt": timestamp(self.created_at), "updatedAt": timestamp(self.updated_at),
            "createdBy": who, "updatedBy": who,
            "readyReplica": ready, "targetReplica": target, "errorMessage": null,
        });
        if self.has_url() {
            status["url"] = json!(self.url(base));
            status["private"] = Value::Null;
        }
        let mut model = self.spec["model"].clone();
        for key in ["revision", "task", "framework"] {
            if model.get(key).is_none() {
                model[key] = Value::Null;
            }
        }
        json!({
            "name": self.name, "type": self.kind, "accountId": null, "healthRoute": "/health",
            "provider": self.spec["provider"], "compute": self.spec["compute"], "model": model,
            "tags": self.spec.get("tags").cloned().unwrap_or_else(|| json!([])),
            "status": status,
        })
    }
}

/// RFC 3339 with milliseconds and `Z`, the format the official client parses.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec() -> Value {
        json!({"provider": {"vendor": "aws", "region": "us-east-1"},
               "compute": {"scaling": {"minReplica": 1, "maxReplica": 1}},
               "model": {"repository": "a/b"}})
    }

    #[tokio::test(start_paused = true)]
    async fn provisioning_goes_pending_initializing_running_on_the_clock() {
        let config = EmulatorConfig::default();
        let mut record = Record::new("ns", "e", "authenticated", spec(), false);
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);

        record.advance(at(10), &config);
        assert_eq!(record.state(), "pending");
        record.advance(at(60), &config);
        assert_eq!(record.state(), "initializing");
        record.advance(at(250), &config);
        assert_eq!(record.state(), "running");
        assert_eq!(
            record.to_json("http://h")["status"]["url"],
            "http://h/endpoints/ns/e"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_doomed_endpoint_fails_without_url_and_null_model_fields_are_present() {
        let config = EmulatorConfig::default();
        let mut record = Record::new("ns", "e", "authenticated", spec(), true);
        record.advance(Instant::now() + Duration::from_secs(1), &config);
        let json = record.to_json("http://h");
        assert_eq!(json["status"]["state"], "failed");
        assert!(json["status"].get("url").is_none());
        assert!(json["model"].get("task").is_some_and(Value::is_null));
        assert!(json["status"]["createdAt"].as_str().unwrap().ends_with('Z'));
    }
}
