//! The database: connection set-up, sea-orm [`entities`] and repositories.
//!
//! Repositories are plain async functions over any [`ConnectionTrait`](sea_orm::ConnectionTrait),
//! so a caller can compose several of them in one transaction (a worker step writes its
//! transition, its event and its follow-up command atomically).

pub mod claim;
pub mod deployments;
pub mod entities;
pub mod inbox;
pub mod lease;
pub mod mlflow;
pub mod model_ops;
pub mod one_statement;
pub mod operations;
pub mod outbox;
pub mod rollouts;
pub mod transitions;
pub mod wake;
pub mod writer;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr, SqlErr};

use crate::domain::{DeploymentId, DeploymentStatus};

/// What can go wrong in a repository call.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The deployment does not exist.
    #[error("deployment {0} not found")]
    NotFound(DeploymentId),
    /// Someone else changed the deployment since it was read (optimistic lock).
    #[error("deployment {id} changed concurrently (expected lock version {expected})")]
    StaleTransition {
        /// The deployment.
        id: DeploymentId,
        /// The lock version the caller read.
        expected: i32,
    },
    /// The status machine forbids the move.
    #[error("deployment {id} cannot go from {from} to {to}")]
    IllegalTransition {
        /// The deployment.
        id: DeploymentId,
        /// Current status.
        from: DeploymentStatus,
        /// Requested status.
        to: DeploymentStatus,
    },
    /// Another deployment of the model is already active (the database refused a second).
    #[error("another deployment of model {0} is already active")]
    ActiveConflict(String),
    /// A claimed row (`db::claim`) was claimed by someone else after our lease ran out:
    /// nothing was written.
    #[error("claim lost: {0}")]
    LostClaim(String),
    /// The model's operation version is not the one the caller expected (`If-Match`).
    #[error("the model changed since you read it: its version is now {current}")]
    PreconditionFailed {
        /// The model's current version (its `ETag`).
        current: i64,
    },
    /// Another operation on the model is in flight and this one cannot run beside it.
    #[error("{operation} of deployment {deployment} is in flight")]
    OperationInFlight {
        /// `undeploy` or `rollback`.
        operation: String,
        /// The deployment it concerns.
        deployment: uuid::Uuid,
    },
    /// The rollout's state, step or pending request changed since it was read: nothing was
    /// written (`db::rollouts`).
    #[error("rollout {0} changed concurrently")]
    StaleRollout(uuid::Uuid),
    /// Anything else the database said.
    #[error(transparent)]
    Database(#[from] DbErr),
}

impl DbError {
    /// Maps a unique violation on the active index to [`DbError::ActiveConflict`].
    pub fn from_write(err: DbErr, model_id: &str) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(msg))
                if msg.contains("active") || msg.contains("model_id") =>
            {
                Self::ActiveConflict(model_id.to_owned())
            }
            _ => Self::Database(err),
        }
    }

    /// Whether the database could not be reached (see [`is_unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(err) if is_unavailable(err))
    }
}

/// Whether `err` means the database could not be reached or dropped the connection, as
/// opposed to refusing a statement: no connection could be acquired, the socket failed, or
/// the server ended the session (SQLSTATE class 08 "connection exception" and class 57
/// "operator intervention", e.g. `pg_terminate_backend` or a shutdown). Such errors pass
/// when the database comes back, so callers answer 503 or retry instead of failing.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            match e.as_ref() {
                Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed => true,
                Sqlx::Database(db) => db
                    .code()
                    .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
                _ => false,
            }
        }
        _ => false,
    }
}

/// A pooled connection idle this long is pinged before it is handed out; one used more
/// recently is handed out as it is. Pinging on every checkout (the pool's default) cost a
/// round trip per statement — as much as a queue claim itself (docs/benchmarks.md, "A ping
/// per statement"). A connection that broke while idle for less fails its statement, which
/// every caller already handles as an unavailable database (retry, postpone), and the pool
/// then replaces it.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Opens a pool on `url` (`sqlite://…` or `postgres://…`).
///
/// SQLite gets WAL journaling (readers do not block the writer) and a busy timeout, so the
/// API and the worker can share one file in `dev`.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DbErr> {
    if let Some(folder) = sqlite_folder(url) {
        std::fs::create_dir_all(&folder).map_err(|e| {
            DbErr::Custom(format!(
                "cannot create the SQLite folder {}: {e}",
                folder.display()
            ))
        })?;
    }
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .max_connections(if url.starts_with("sqlite") { 8 } else { 16 })
        .test_before_acquire_if_idle_for(PING_AFTER_IDLE)
        .map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    Database::connect(options).await
}

/// The folder holding a SQLite file database, which must exist before SQLite can create the
/// file (`sqlite://.hokusai/hokusai.db` on a fresh checkout).
fn sqlite_folder(url: &str) -> Option<std::path::PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_owned())
}

#[cfg(test)]
mod tests {
    use super::sqlite_folder;
    use std::path::PathBuf;

    #[test]
    fn finds_the_folder_of_sqlite_files_only() {
        assert_eq!(
            sqlite_folder("sqlite://.hokusai/hokusai.db?mode=rwc"),
            Some(PathBuf::from(".hokusai"))
        );
        assert_eq!(
            sqlite_folder("sqlite:///tmp/x/a.db"),
            Some(PathBuf::from("/tmp/x"))
        );
        assert_eq!(sqlite_folder("sqlite://a.db"), None);
        assert_eq!(sqlite_folder("sqlite::memory:"), None);
        assert_eq!(sqlite_folder("postgres://h/db"), None);
    }
}
