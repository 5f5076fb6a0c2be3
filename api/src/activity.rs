//! When each deployment last answered a prediction, for the idle-endpoint signal
//! (`COST_IDLE_HOURS`). The predict path only notes the time in memory; a background task
//! writes the notes to `deployed_models.last_prediction_at` every
//! [`FLUSH_EVERY`] (and once more at shutdown), so predictions never wait for the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use shared::db::deployments;
use uuid::Uuid;

/// How often notes are written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Deployment id → last prediction answered, since the last flush, plus everything seen
/// by this process (the costs route merges it with the database's figure).
#[derive(Debug, Default)]
pub struct PredictionClock {
    unflushed: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    seen: Mutex<HashMap<Uuid, DateTime<Utc>>>,
}

impl PredictionClock {
    /// Notes a prediction answered by `deployment` now.
    pub fn note(&self, deployment: Uuid) {
        let now = Utc::now();
        self.unflushed
            .lock()
            .expect("clock lock")
            .insert(deployment, now);
    }

    /// The last prediction this process saw for `deployment`.
    pub fn last(&self, deployment: Uuid) -> Option<DateTime<Utc>> {
        let pending = self
            .unflushed
            .lock()
            .expect("clock lock")
            .get(&deployment)
            .copied();
        let seen = self
            .seen
            .lock()
            .expect("clock lock")
            .get(&deployment)
            .copied();
        pending.max(seen)
    }

    /// Writes the notes taken since the last flush; on failure they are kept for the next.
    pub async fn flush(&self, db: &DatabaseConnection) {
        let notes: Vec<(Uuid, DateTime<Utc>)> =
            self.unflushed.lock().expect("clock lock").drain().collect();
        if notes.is_empty() {
            return;
        }
        match deployments::record_predictions(db, &notes).await {
            Ok(()) => {
                let mut seen = self.seen.lock().expect("clock lock");
                for (id, at) in notes {
                    let entry = seen.entry(id).or_insert(at);
                    *entry = (*entry).max(at);
                }
            }
            Err(error) => {
                tracing::warn!(%error, count = notes.len(), "recording prediction times failed; will retry");
                let mut unflushed = self.unflushed.lock().expect("clock lock");
                for (id, at) in notes {
                    let entry = unflushed.entry(id).or_insert(at);
                    *entry = (*entry).max(at);
                }
            }
        }
    }
}
