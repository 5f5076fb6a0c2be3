//! SQLite's one writer, taken in turn within the process (docs/design/runtime.md).
//!
//! SQLite lets one transaction write at a time. A connection that finds the write lock taken
//! waits in SQLite's busy handler, which sleeps 1, 2, 5, 10 … ms between tries, however soon
//! the lock is free: under the worker's concurrent steps most of a step's time went to those
//! sleeps (docs/benchmarks.md, "SQLite's busy sleeps"). The hot writers — a saga step's
//! transaction and the embedded queue's claims, acks and publishes — therefore take a
//! [`Turn`] first: a FIFO semaphore of one per database file, handed to the next writer the
//! moment the last one ends. Other writers (API requests, the reconciler) still rely on the
//! busy handler; SQLite's own lock keeps every write correct either way. On PostgreSQL
//! (row locks, many writers) a turn is free and immediate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use sea_orm::{DatabaseBackend, DatabaseConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A turn to write; the next writer goes when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
}

/// The turns of one database: resolve it once (a lookup in the process's table of gates),
/// then take turns from it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate(Option<Arc<Semaphore>>);

impl Gate {
    /// The gate of `db`'s SQLite file; on other databases a gate that never waits.
    pub fn of(db: &DatabaseConnection) -> Gate {
        if db.get_database_backend() != DatabaseBackend::Sqlite {
            return Gate(None);
        }
        // One gate per database file the process opened (one in production; a test process
        // opens one per test database).
        static GATES: OnceLock<Mutex<HashMap<PathBuf, Arc<Semaphore>>>> = OnceLock::new();
        let file = db
            .get_sqlite_connection_pool()
            .connect_options()
            .get_filename()
            .to_owned();
        let mut gates = GATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Gate(Some(Arc::clone(
            gates
                .entry(file)
                .or_insert_with(|| Arc::new(Semaphore::new(1))),
        )))
    }

    /// Waits for the turn (at once on other databases). Hold it across the whole write
    /// transaction, and take no other turn while holding it.
    pub async fn turn(&self) -> Turn {
        let permit = match &self.0 {
            // The semaphore is never closed.
            Some(gate) => Arc::clone(gate).acquire_owned().await.ok(),
            None => None,
        };
        Turn { _permit: permit }
    }
}

/// Waits for this process's turn to write to `db` ([`Gate::of`], then [`Gate::turn`]).
pub async fn turn(db: &DatabaseConnection) -> Turn {
    Gate::of(db).turn().await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn sqlite(dir: &std::path::Path, name: &str) -> DatabaseConnection {
        let url = format!("sqlite://{}?mode=rwc", dir.join(name).display());
        crate::db::connect(&url).await.expect("open a SQLite file")
    }

    #[tokio::test]
    async fn writers_of_one_file_take_turns_and_other_files_do_not_wait() {
        let dir = std::env::temp_dir().join(format!("hk-writer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (a, a_again, b) = (
            sqlite(&dir, "a.db").await,
            sqlite(&dir, "a.db").await,
            sqlite(&dir, "b.db").await,
        );
        let first = turn(&a).await;
        // Another pool on the same file waits for the turn...
        let waiting = tokio::spawn(async move { turn(&a_again).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a second writer of a.db must wait");
        // ...a writer of another file does not.
        let other = tokio::time::timeout(Duration::from_secs(1), turn(&b)).await;
        assert!(other.is_ok(), "b.db has a turn of its own");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(
            second.is_ok(),
            "the waiting writer gets the turn once it is free"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
