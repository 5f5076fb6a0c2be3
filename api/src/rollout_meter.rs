//! Per-track measurements of open rollouts (docs/design/rollouts.md). The predict path only
//! adds a request to an in-memory [`Figures`] per (rollout, deployment, step) and to the
//! `hokusai_rollout_*` metrics; a background task writes the figures to
//! `rollout_measurements` every [`FLUSH_EVERY`] (and once more at shutdown), so several API
//! processes add up and no prediction waits for a database write.
//!
//! Each tally is this process's running total for its key and owns one row, which every
//! flush overwrites with the total (an upsert): the table holds a row per key and process,
//! not a row per second, however long a step bakes. A tally idle for [`FORGET_AFTER`] is
//! dropped from memory; a later request for its key starts a new tally with a new row, so
//! the rows still add up. A failed write leaves the tally to be written by the next flush.
//! The meter also bounds the shadow copies in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use shared::db::rollouts;
use shared::domain::rollout::Figures;
use shared::telemetry::metrics::names;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::routing::{ActiveRoute, Track};

/// How often figures are written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How long a tally nobody added to stays in memory (its row stays in the database).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The key of a tally: rollout, deployment, step.
type Key = (Uuid, Uuid, i32);

/// This process's running total for one key, and the row it is written to.
#[derive(Debug)]
struct Tally {
    row: Uuid,
    figures: Figures,
    /// Changed since its last successful write.
    dirty: bool,
    touched: Instant,
}

/// Shadow copies in flight at once, at most; past it a copy is dropped (and counted), so a
/// slow new version cannot pile up work behind the callers.
pub const MAX_SHADOW_IN_FLIGHT: usize = 64;

/// What this process measured of the open rollouts.
#[derive(Debug)]
pub struct RolloutMeter {
    tallies: Mutex<HashMap<Key, Tally>>,
    shadows: Arc<Semaphore>,
}

impl Default for RolloutMeter {
    fn default() -> Self {
        Self {
            tallies: Mutex::default(),
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
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let tally = tallies.entry(key).or_insert_with(|| Tally {
            row: Uuid::now_v7(),
            figures: Figures::default(),
            dirty: false,
            touched: Instant::now(),
        });
        tally.figures.record(failed, latency);
        tally.dirty = true;
        tally.touched = Instant::now();
    }

    /// Writes every tally changed since its last write; forgets tallies idle for
    /// [`FORGET_AFTER`] that are written.
    pub async fn flush(&self, db: &DatabaseConnection) {
        let changed: Vec<(Key, Uuid, Figures)> = {
            let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
            tallies
                .iter_mut()
                .filter(|(_, t)| t.dirty)
                .map(|(key, t)| {
                    t.dirty = false;
                    (*key, t.row, t.figures.clone())
                })
                .collect()
        };
        for ((rollout, deployment, step), row, figures) in changed {
            let written = rollouts::record(db, row, rollout, deployment, step, &figures).await;
            if let Err(error) = written {
                tracing::warn!(%error, rollout_id = %rollout, "rollout figures not written; the next flush tries again");
                let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tally) = tallies.get_mut(&(rollout, deployment, step)) {
                    tally.dirty = true;
                }
            }
        }
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        tallies.retain(|_, t| t.dirty || t.touched.elapsed() < FORGET_AFTER);
    }
}
