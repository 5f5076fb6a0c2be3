//! The outbox relay: publishes committed `outbox` rows to the queue, in creation order,
//! and marks them published (docs/design/queue.md).
//!
//! Only the broker backends need it (`db::outbox::Route::Relay`); with the `db` backend
//! producers write straight into the queue table. A row is marked published only after the
//! broker confirmed it, so a crash in between publishes it again on restart: at-least-once,
//! and consumers' inbox makes the duplicate harmless. A row's `available_at` becomes the
//! publish delay, so order of creation is kept and the queue does the waiting. On
//! PostgreSQL each batch runs in a transaction holding an advisory lock, so with many
//! workers one relay publishes at a time and the order holds; SQLite (one process, `dev`)
//! needs no lock.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use shared::db::entities::outbox::{self, Column, Entity};
use shared::queue::Queue;

/// Advisory lock key of the relay ("hokusai relay" in ASCII, shortened to 63 bits).
const LOCK_KEY: i64 = 0x686b_7265_6c61_7900;

/// Publishes outbox rows to one queue.
pub struct Relay {
    db: DatabaseConnection,
    queue: Arc<dyn Queue>,
    /// The `outbox.queue` value of the rows to relay.
    source: String,
    batch: u64,
    idle: Duration,
}

impl Relay {
    /// A relay from `db`'s outbox to `queue` (rows whose `queue` column is its name).
    pub fn new(db: DatabaseConnection, queue: Arc<dyn Queue>) -> Self {
        Self {
            db,
            source: queue.name().to_owned(),
            queue,
            batch: 100,
            idle: Duration::from_millis(200),
        }
    }

    /// Relays the rows producers wrote for the logical queue `name` (e.g.
    /// `hokusai.deployments`) to this relay's queue, whatever the queue's physical name.
    pub fn relaying(mut self, name: &str) -> Self {
        self.source = name.to_owned();
        self
    }

    /// Publishes at most one batch of pending rows, oldest first. Returns how many were
    /// published; rows published before an error stay marked.
    pub async fn try_relay_batch(&self) -> anyhow::Result<usize> {
        if self.db.get_database_backend() != DatabaseBackend::Postgres {
            return self.relay(&self.db).await;
        }
        let txn = self.db.begin().await?;
        let locked = txn
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock($1) AS locked",
                [LOCK_KEY.into()],
            ))
            .await?
            .map(|row| row.try_get::<bool>("", "locked"))
            .transpose()?
            .unwrap_or(false);
        if !locked {
            return Ok(0);
        }
        let outcome = self.relay(&txn).await;
        txn.commit().await?;
        outcome
    }

    async fn relay<C: ConnectionTrait>(&self, conn: &C) -> anyhow::Result<usize> {
        let rows = Entity::find()
            .filter(Column::PublishedAt.is_null())
            .filter(Column::Queue.eq(self.source.as_str()))
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(self.batch)
            .all(conn)
            .await?;
        let mut published = 0;
        for row in rows {
            self.publish(&row).await?;
            Entity::update_many()
                .col_expr(Column::PublishedAt, Expr::value(Utc::now()))
                .filter(Column::Id.eq(row.id))
                .exec(conn)
                .await?;
            published += 1;
        }
        Ok(published)
    }

    async fn publish(&self, row: &outbox::Model) -> anyhow::Result<()> {
        let delay = row
            .available_at
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .filter(|d| !d.is_zero());
        let body = serde_json::to_vec(&row.payload)?;
        self.queue.publish_bytes(body, delay).await?;
        shared::queue::count(self.queue.name(), shared::queue::Event::Published);
        tracing::debug!(message_id = %row.id, queue = %row.queue, "relayed");
        Ok(())
    }

    /// Relays until `shutdown` completes: a full batch is followed at once by the next, an
    /// empty one by a short pause, an error by a longer one (the rows stay pending).
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        loop {
            let pause = tokio::select! {
                () = &mut shutdown => return Ok(()),
                outcome = self.try_relay_batch() => match outcome {
                    Ok(n) if n as u64 >= self.batch => Duration::ZERO,
                    Ok(_) => self.idle,
                    Err(err) => {
                        tracing::warn!(error = %err, "outbox relay failed; retrying");
                        self.idle * 10
                    }
                },
            };
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}
