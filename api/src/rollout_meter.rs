//! Per-track measurements of open rollouts (docs/design/rollouts.md). The predict path only
//! adds a request to an in-memory [`Figures`] per (rollout, deployment, step) and to the
//! `hokusai_rollout_*` metrics; a background task appends the figures to
//! `rollout_measurements` every [`FLUSH_EVERY`] (and once more at shutdown), so several API
//! processes add up and no prediction waits for a database write. A failed flush keeps the
//! figures for the next one. It also bounds the shadow copies in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use shared::db::rollouts;
use shared::domain::rollout::Figures;
use shared::telemetry::metrics::names;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::routing::{ActiveRoute, Track};

/// How often figures are written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Keys of figures not yet written: rollout, deployment, step.
type Key = (Uuid, Uuid, i32);

/// Shadow copies in flight at once, at most; past it a copy is dropped (and counted), so a
/// slow new version cannot pile up work behind the callers.
pub const MAX_SHADOW_IN_FLIGHT: usize = 64;

/// What this process measured since the last flush.
#[derive(Debug)]
pub struct RolloutMeter {
    pending: Mutex<HashMap<Key, Figures>>,
    shadows: Arc<Semaphore>,
}

impl Default for RolloutMeter {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            shadows: Arc::new(Semaphore::new(MAX_SHADOW_IN_FLIGHT)),
        }
    }
}

impl RolloutMeter {
    /// A place for one shadow copy, if fewer than [`MAX_SHADOW_IN_FLIGHT`] are in flight;
    /// a refusal is counted as `outcome="dropped"`.
    pub fn shadow_permit(&self, model: &str) -> Option<OwnedSemaphorePermit> {
        let permit = self.shadows.clone().try_acquire_owned().ok();
        if permit.is_none() {
            metrics::counter!(names::ROLLOUT_REQUESTS, "model_id" => model.to_owned(),
                "track" => "shadow", "outcome" => "dropped")
            .increment(1);
        }
        permit
    }

    /// Counts one request `route` answered on `track`; `failed` for 5xx-class outcomes
    /// (upstream failures, timeouts, a model not ready), not for requests the model refused.
    pub fn record(&self, route: &ActiveRoute, track: Track, failed: bool, latency: Duration) {
        let model = route.model_id.as_str().to_owned();
        let outcome = if failed { "error" } else { "ok" };
        metrics::counter!(names::ROLLOUT_REQUESTS, "model_id" => model.clone(),
            "track" => track.label(), "outcome" => outcome)
        .increment(1);
        metrics::histogram!(names::ROLLOUT_LATENCY, "model_id" => model, "track" => track.label())
            .record(latency.as_secs_f64());
        let key = (track.rollout_id, route.deployment_id, track.step);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.entry(key).or_default().record(failed, latency);
    }

    /// Appends the figures gathered since the last flush; what fails to be written is kept.
    pub async fn flush(&self, db: &DatabaseConnection) {
        let taken: Vec<(Key, Figures)> = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        for ((rollout, deployment, step), figures) in taken {
            if let Err(error) = rollouts::record(db, rollout, deployment, step, &figures).await {
                tracing::warn!(%error, rollout_id = %rollout, "rollout figures not written; kept for the next flush");
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                pending
                    .entry((rollout, deployment, step))
                    .or_default()
                    .add(&figures);
            }
        }
    }
}
