//! Wake-ups for the database's work tables (`queue_messages`, `outbox`) instead of polling
//! (docs/design/queue.md, "The embedded queue").
//!
//! - On PostgreSQL an insert into `queue_messages` or `outbox` notifies the channel
//!   `hokusai_queue` itself (a statement-level trigger, migration
//!   `m20261206_030000_notify_on_insert`), delivered when the transaction commits, to every
//!   process that [`listen`]s; a change that is not an insert (a retry, a replay) runs
//!   [`notify`] in its transaction.
//! - Within a process, [`local`] wakes the waiters at once; the writers call it after their
//!   commit (`db::outbox::committed`), which is how SQLite (no NOTIFY) is woken.
//! - Waiters take [`notified`] *before* looking at the table, so a wake-up that comes while
//!   they look is not missed, and still sleep no longer than their poll interval: a wake-up
//!   can be lost (a listener reconnecting, a write from another process on SQLite).

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, Statement};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, oneshot};

use crate::runtime::Backoff;

/// The PostgreSQL channel; the payload names what changed (a table or a queue's name).
pub const CHANNEL: &str = "hokusai_queue";

/// This process's waiters.
static WAKE: Notify = Notify::const_new();

/// Wakes this process's waiters now.
pub fn local() {
    WAKE.notify_waiters();
}

/// A wake-up to wait for; take it before looking at the table.
pub fn notified() -> Notified<'static> {
    WAKE.notified()
}

/// `pg_notify` in `conn`'s transaction (delivered at its commit) on PostgreSQL; nothing on
/// other databases.
pub async fn notify<C: ConnectionTrait>(conn: &C, what: &str) -> Result<(), DbErr> {
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), what.into()],
        ))
        .await?;
    }
    Ok(())
}

/// Keeps a LISTEN connection open while it lives.
#[derive(Debug)]
pub struct Listening {
    _stop: oneshot::Sender<()>,
}

/// On PostgreSQL, LISTENs on [`CHANNEL`] on a connection of its own and turns every
/// notification into [`local`]; it reconnects with backoff (waking the waiters once it is
/// back, for what it missed) and stops when the returned guard is dropped. `None` on other
/// databases. Needs a tokio runtime.
pub fn listen(db: &DatabaseConnection) -> Option<Listening> {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return None;
    }
    let pool = db.get_postgres_connection_pool().clone();
    let (stop_tx, mut stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut failures = 0u32;
        loop {
            let listened = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(CHANNEL).await?;
                failures = 0;
                // What was written while nobody listened.
                local();
                loop {
                    listener.recv().await?;
                    local();
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = &mut stop => return,
                result = listened => {
                    if let Err(err) = result {
                        tracing::warn!(%err, "LISTEN connection lost; polling until it is back");
                    }
                }
            }
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = &mut stop => return,
                () = tokio::time::sleep(backoff.delay(failures)) => {}
            }
        }
    });
    Some(Listening { _stop: stop_tx })
}
