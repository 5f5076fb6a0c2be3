//! The embedded queue (`QUEUE_BACKEND=db`): rows in `queue_messages`, in the application
//! database, so `dev` needs no broker.
//!
//! - A message is ready when it is not dead, `available_at` has passed (delays) and nobody
//!   holds a lease on it (`locked_until` null or past).
//! - A consumer claims one ready row with a fenced claim (`db::claim`): `locked_until = now +
//!   lease`, `attempts` (deliveries) incremented, and a fresh `claim_token`. Ack, retry,
//!   dead-letter and lease extension only touch the row while it still carries that token,
//!   so a consumer whose lease expired cannot settle a message someone else now holds.
//! - A crashed consumer simply stops extending its lease; the row becomes ready again.
//! - PostgreSQL picks candidates with `FOR UPDATE SKIP LOCKED`, so consumers never wait for
//!   each other. SQLite has one writer at a time anyway: claims go through an in-process
//!   writer lock (no `SQLITE_BUSY` storms) and the token-guarded update keeps them correct
//!   across processes.
//! - Dead letters stay in the table with `dead_at` and `last_error` set.
//!
//! Producers that write in a business transaction call [`insert`] on that transaction
//! (through `db::outbox::enqueue`): with this backend the outbox insert *is* the enqueue.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, Set,
    TransactionTrait,
};
use tokio::sync::{Mutex, Notify};
use uuid::Uuid;

mod dead_letters;

use super::delivery::KeepAlive;
use super::{Depth, Queue, QueueError, QueueOptions, RawDelivery, Selection, Settle};
use crate::db::claim::{self, Claim};
use crate::db::entities::queue_messages::{self, Column, Entity};

/// How often an idle consumer looks for new rows (publishes through the same
/// [`DbQueue`] wake it at once).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Enqueues `body` on `queue` in the caller's connection or transaction; it becomes ready
/// after `delay`. Returns the row id.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    body: &[u8],
    delay: Option<Duration>,
) -> Result<Uuid, DbErr> {
    let now = Utc::now();
    let id = Uuid::now_v7();
    queue_messages::ActiveModel {
        id: Set(id),
        queue: Set(queue.to_owned()),
        // The column is text: an undecodable non-UTF-8 payload is kept lossily, which is
        // enough to inspect and dead-letter it.
        payload: Set(String::from_utf8_lossy(body).into_owned()),
        available_at: Set(later(now, delay.unwrap_or_default())),
        attempts: Set(0),
        locked_until: Set(None),
        last_error: Set(None),
        dead_at: Set(None),
        created_at: Set(now),
        claim_token: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(id)
}

fn later(now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    now + ChronoDuration::from_std(by).unwrap_or(ChronoDuration::MAX)
}

/// The embedded queue. Cheap to clone the connection into; one per queue name.
#[derive(Clone)]
pub struct DbQueue {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    options: QueueOptions,
    /// Serialises claims on SQLite (its single writer).
    writer: Mutex<()>,
    /// Wakes idle consumers of this process when it publishes.
    published: Notify,
}

impl DbQueue {
    /// The queue `options.name` in `db` (migrated).
    pub fn new(db: DatabaseConnection, options: QueueOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                options,
                writer: Mutex::new(()),
                published: Notify::new(),
            }),
        }
    }
}

impl Inner {
    fn ready(&self, now: DateTime<Utc>) -> Select<Entity> {
        Entity::find()
            .filter(Column::Queue.eq(&self.options.name))
            .filter(Column::DeadAt.is_null())
            .filter(Column::AvailableAt.lte(now))
            .filter(claim::free::<Entity>(now))
            .order_by_asc(Column::AvailableAt)
            .order_by_asc(Column::Id)
    }

    /// Leases the oldest ready row, if any.
    async fn claim(&self) -> Result<Option<(queue_messages::Model, Claim<Entity>)>, QueueError> {
        let now = Utc::now();
        if self.db.get_database_backend() == DatabaseBackend::Postgres {
            let txn = self.db.begin().await?;
            let candidate = self
                .ready(now)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .one(&txn)
                .await?;
            let claimed = match candidate {
                Some(row) => claim::take(&txn, row.id, self.options.lease)
                    .await?
                    .map(|c| (row, c)),
                None => None,
            };
            txn.commit().await?;
            return Ok(claimed);
        }
        let _writer = self.writer.lock().await;
        match self.ready(now).one(&self.db).await? {
            Some(row) => Ok(claim::take(&self.db, row.id, self.options.lease)
                .await?
                .map(|c| (row, c))),
            None => Ok(None),
        }
    }

    fn delivery(self: &Arc<Self>, row: queue_messages::Model, claim: Claim<Entity>) -> RawDelivery {
        let inner = Arc::clone(self);
        let keep_alive = KeepAlive::spawn(self.options.lease / 3, move || {
            let inner = Arc::clone(&inner);
            async move {
                match claim.extend(&inner.db, inner.options.lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(message = %claim.id, "queue lease lost: another consumer holds the message")
                    }
                    Err(err) => tracing::warn!(%err, "could not extend a queue lease"),
                }
            }
        });
        RawDelivery {
            body: row.payload.into_bytes(),
            deliveries: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
            max_attempts: self.options.max_attempts,
            settle: Box::new(DbSettle {
                inner: Arc::clone(self),
                claim,
                _keep_alive: keep_alive,
            }),
        }
    }

    fn dead(&self) -> Select<Entity> {
        Entity::find()
            .filter(Column::Queue.eq(&self.options.name))
            .filter(Column::DeadAt.is_not_null())
    }

    async fn selected(&self, selection: &Selection) -> Result<Vec<Uuid>, QueueError> {
        let mut query = self.dead().select_only().column(Column::Id);
        if let Selection::Ids(ids) = selection {
            let ids: Vec<Uuid> = ids.iter().filter_map(|i| Uuid::parse_str(i).ok()).collect();
            query = query.filter(Column::Id.is_in(ids));
        }
        Ok(query.into_tuple::<Uuid>().all(&self.db).await?)
    }
}

/// Settles one claimed row, guarded by the claim's token.
struct DbSettle {
    inner: Arc<Inner>,
    claim: Claim<Entity>,
    _keep_alive: KeepAlive,
}

impl DbSettle {
    fn guarded(&self) -> sea_orm::UpdateMany<Entity> {
        self.claim
            .guard()
            .col_expr(Column::ClaimToken, Expr::value(Option::<Uuid>::None))
    }

    fn check(&self, rows: u64) -> Result<(), QueueError> {
        if rows == 0 {
            return Err(QueueError::LeaseLost(format!(
                "message {} was leased again after our lease expired",
                self.claim.id
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Settle for DbSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        let deleted = self.claim.guard_delete().exec(&self.inner.db).await?;
        self.check(deleted.rows_affected)
    }

    async fn retry(
        self: Box<Self>,
        body: Vec<u8>,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError> {
        // Rewritten in place: the envelope inside carries the new message id and attempt.
        let updated = self
            .guarded()
            .col_expr(
                Column::Payload,
                Expr::value(String::from_utf8_lossy(&body).into_owned()),
            )
            .col_expr(Column::AvailableAt, Expr::value(later(Utc::now(), delay)))
            .col_expr(Column::Attempts, Expr::value(0))
            .col_expr(
                Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(Column::LastError, Expr::value(error))
            .exec(&self.inner.db)
            .await?;
        self.inner.published.notify_waiters();
        self.check(updated.rows_affected)
    }

    async fn dead_letter(
        self: Box<Self>,
        _body: Vec<u8>,
        reason: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        let updated = self
            .guarded()
            .col_expr(Column::DeadAt, Expr::value(Utc::now()))
            .col_expr(Column::LastError, Expr::value(reason))
            .col_expr(
                Column::LockedUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                Column::Attempts,
                Expr::value(i32::try_from(attempts).unwrap_or(i32::MAX)),
            )
            .exec(&self.inner.db)
            .await?;
        self.check(updated.rows_affected)
    }
}

#[async_trait]
impl Queue for DbQueue {
    fn name(&self) -> &str {
        &self.inner.options.name
    }

    async fn publish_bytes(
        &self,
        body: Vec<u8>,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        insert(&self.inner.db, &self.inner.options.name, &body, delay).await?;
        self.inner.published.notify_waiters();
        Ok(())
    }

    async fn fetch(&self, wait: Duration) -> Result<Option<RawDelivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.inner.published.notified();
            if let Some((row, claim)) = self.inner.claim().await? {
                return Ok(Some(self.inner.delivery(row, claim)));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = POLL_INTERVAL.min(deadline - now);
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let live = Entity::find()
            .filter(Column::Queue.eq(&self.inner.options.name))
            .filter(Column::DeadAt.is_null())
            .count(&self.inner.db)
            .await?;
        let dead = self.inner.dead().count(&self.inner.db).await?;
        Ok(Depth {
            pending: live,
            dead,
        })
    }
}
