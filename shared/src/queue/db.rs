//! The embedded queue (`QUEUE_BACKEND=db`): rows in `queue_messages`, in the application
//! database, so `dev` needs no broker (docs/design/queue.md, "The embedded queue").
//!
//! - A message is ready when it is not dead, `available_at` has passed (delays) and nobody
//!   holds a lease on it (`locked_until` null or past).
//! - **Claims are batched**: the consumers of a process that wait for a message share one
//!   claim statement (`db::claim::take_many`: `UPDATE … WHERE id IN (SELECT … ORDER BY
//!   available_at, id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING …`), which leases up to as
//!   many rows as consumers wait — never more, so no message sits leased in a buffer while
//!   every handler is busy. The partial index `idx_queue_messages_claim (queue, available_at,
//!   id) WHERE dead_at IS NULL` serves the order, so a claim costs the same whatever the depth.
//! - Each claim is fenced (`db::claim`): `locked_until = now + lease`, `attempts` (deliveries)
//!   incremented, a fresh `claim_token`. Ack, retry, dead-letter and lease extension only
//!   touch the row while it still carries that token.
//! - **A step's message leaves with the step**: a handler writing to this database deletes
//!   it in its own transaction under the claim's token ([`crate::queue::Delivery::ack_within`]).
//! - **Other acks are written behind** (as River's completer): an ack hands the claim to a
//!   batcher and returns, so the handler takes its next message while the ack commits with
//!   every other that queued up (one `DELETE … WHERE (id, token) … RETURNING id`). The
//!   backlog is bounded (an ack waits while [`MAX_WAITING`] are queued); [`Queue::drain`]
//!   (called by the worker before it exits, and by [`Queue::depth`]) returns once every ack
//!   handed over is committed. An ack lost with a crashed process only lets its row's lease
//!   expire: the message is delivered again (at-least-once; such a message had nothing to
//!   commit).
//! - **Publishes are batched** (one multi-row insert for every publish that queued up while
//!   the previous one ran) and return only after *their* statement committed ([`Batcher`]).
//! - **Wake-ups, not polling**: on PostgreSQL every enqueue also runs `pg_notify` on the
//!   channel `hokusai_queue` (delivered when the publishing transaction commits) and each
//!   consuming process LISTENs; in-process publishes wake the process's consumers directly
//!   ([`wake_local`], which the outbox's writers call after their commit). An idle consumer
//!   sleeps until a wake-up, the next delayed row's due time, or `poll_interval`
//!   (`QUEUE_POLL_INTERVAL_SECONDS`), the fallback that bounds how late a lost wake-up (a
//!   listener reconnecting, a publish from another process on SQLite, an expired lease) is
//!   noticed.
//! - A crashed consumer simply stops extending its lease; the row becomes ready again.
//! - Dead letters stay in the table with `dead_at` and `last_error` set.
//!
//! Producers that write in a business transaction call [`insert`] on that transaction
//! (through `db::outbox::enqueue`): with this backend the outbox insert *is* the enqueue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, Order, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QuerySelect, Select, Set,
};
use uuid::Uuid;

mod dead_letters;

use super::delivery::KeepAlive;
use super::{Depth, Queue, QueueError, QueueOptions, RawDelivery, Selection, Settle};
use crate::db::claim::{self, Claim};
use crate::db::entities::queue_messages::{self, Column, Entity};
use crate::db::{wake, writer};
use crate::runtime::{Backoff, Batcher};

/// At most this many claims, acks or publishes share one statement.
const MAX_BATCH: usize = 128;

/// Callers waiting for a batched statement, at most (beyond it they wait to enqueue); for
/// acks, the write-behind backlog.
const MAX_WAITING: usize = 4_096;

/// Statements tried for one batch of acks before its rows are left to their leases.
const ACK_ATTEMPTS: u32 = 4;
const ACK_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));

/// Wakes the idle consumers of the embedded queue in this process (`db::wake::local`).
/// Call it after committing a transaction that enqueued (`db::outbox::committed` does);
/// without it they find the message at their next poll.
pub fn wake_local() {
    wake::local();
}

/// Enqueues `body` on `queue` in the caller's connection or transaction; it becomes ready
/// after `delay`. Returns the row id. On PostgreSQL the consumers are notified when the
/// caller's transaction commits; in-process consumers need [`wake_local`] after the commit.
pub async fn insert<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    body: &[u8],
    delay: Option<Duration>,
) -> Result<Uuid, DbErr> {
    let ids = insert_many(conn, queue, [(body, delay)]).await?;
    Ok(ids[0])
}

/// Enqueues every `(body, delay)` on `queue` with one multi-row insert (on PostgreSQL its
/// trigger notifies, delivered at the commit of `conn`'s transaction). Returns the row ids.
pub async fn insert_many<'a, C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    messages: impl IntoIterator<Item = (&'a [u8], Option<Duration>)>,
) -> Result<Vec<Uuid>, DbErr> {
    let now = Utc::now();
    let rows: Vec<queue_messages::ActiveModel> = messages
        .into_iter()
        .map(|(body, delay)| message_row(queue, body, delay, now))
        .collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| *r.id.as_ref()).collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    // On PostgreSQL the insert notifies other processes itself (a trigger, delivered at
    // commit); within this process the writer wakes the consumers after its commit.
    Entity::insert_many(rows)
        .exec_without_returning(conn)
        .await?;
    Ok(ids)
}

/// The row [`insert_many`] writes for `body` on `queue` at `now`, ready after `delay`.
pub fn message_row(
    queue: &str,
    body: &[u8],
    delay: Option<Duration>,
    now: DateTime<Utc>,
) -> queue_messages::ActiveModel {
    queue_messages::ActiveModel {
        id: Set(Uuid::now_v7()),
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
}

fn later(now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    now + ChronoDuration::from_std(by).unwrap_or(ChronoDuration::MAX)
}

/// A batched statement failed: every caller of the batch gets the database's message.
fn failed(err: &DbErr) -> QueueError {
    QueueError::Unavailable(format!("database: {err}"))
}

/// What one waiting consumer got from a batched claim.
enum Claimed {
    Row {
        payload: String,
        attempts: i32,
        claim: Claim<Entity>,
    },
    /// Nothing ready; the next delayed row is due then (if any).
    Nothing {
        next_due: Option<DateTime<Utc>>,
    },
    Failed(QueueError),
}

/// The embedded queue. Cheap to clone the connection into; one per queue name.
#[derive(Clone)]
pub struct DbQueue {
    inner: Arc<Inner>,
}

/// What the batched statements need (no handle on the batchers, so their tasks end with
/// the queue).
struct Shared {
    db: DatabaseConnection,
    /// Where claims and lease extensions run: on PostgreSQL a small pool of its own whose
    /// sessions do not wait for the WAL flush at commit ([`soft_state`]); `db` elsewhere.
    leases: DatabaseConnection,
    /// Turns to write on SQLite (`db::writer`); never waits elsewhere.
    writes: writer::Gate,
    options: QueueOptions,
}

/// Connections for the queue's soft state — claims and lease extensions — on PostgreSQL:
/// two sessions of `db`'s server with `synchronous_commit = off`. A lease lost in a crash of
/// PostgreSQL only makes its row free again, to be delivered anew (at-least-once; the
/// consumers' inbox makes the duplicate harmless), and the next durable commit flushes it
/// anyway; so a claim costs a round trip, not a disk flush. Acks and publishes stay on
/// `db`, durable. Elsewhere `db` itself.
///
/// The sessions also run with `enable_seqscan = off`: their statements are prepared once
/// and PostgreSQL may switch them to a cached generic plan after five runs; planned while
/// the table was nearly empty, that plan read the whole table for every later claim (one
/// benchmark run in four, 3× slower; docs/design/queue.md). A claim and a lease extension
/// always have an index to use, so the setting only removes the bad choice.
fn soft_state(db: &DatabaseConnection) -> DatabaseConnection {
    if db.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return db.clone();
    }
    let pool = db.get_postgres_connection_pool();
    let options = (*pool.connect_options())
        .clone()
        .options([("synchronous_commit", "off"), ("enable_seqscan", "off")]);
    // The main pool's settings (timeouts, the ping after idle: `db::connect`), two sessions.
    let pool = pool
        .options()
        .clone()
        .max_connections(2)
        .connect_lazy_with(options);
    sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool)
}

struct Inner {
    db: DatabaseConnection,
    options: QueueOptions,
    shared: Arc<Shared>,
    claims: Batcher<(), Claimed>,
    /// Claims to delete; `None` is a barrier ([`Queue::drain`]).
    acks: Batcher<Option<Claim<Entity>>, Result<(), QueueError>>,
    publishes: Batcher<(Vec<u8>, Option<Duration>), Result<(), QueueError>>,
    /// The LISTEN connection, opened at the first fetch (publishers need none); closed
    /// with the queue.
    listening: OnceLock<Option<wake::Listening>>,
}

impl DbQueue {
    /// The queue `options.name` in `db` (migrated). Needs a tokio runtime (the batchers'
    /// tasks).
    pub fn new(db: DatabaseConnection, options: QueueOptions) -> Self {
        let shared = Arc::new(Shared {
            leases: soft_state(&db),
            writes: writer::Gate::of(&db),
            db: db.clone(),
            options: options.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                db,
                options,
                claims: {
                    let shared = Arc::clone(&shared);
                    Batcher::spawn(MAX_BATCH, MAX_WAITING, move |waiting: Vec<()>| {
                        let shared = Arc::clone(&shared);
                        async move { shared.claim(waiting.len()).await }
                    })
                },
                acks: {
                    let shared = Arc::clone(&shared);
                    Batcher::spawn(MAX_BATCH, MAX_WAITING, move |claims| {
                        let shared = Arc::clone(&shared);
                        async move { shared.ack(claims).await }
                    })
                },
                publishes: {
                    let shared = Arc::clone(&shared);
                    Batcher::spawn(MAX_BATCH, MAX_WAITING, move |messages| {
                        let shared = Arc::clone(&shared);
                        async move { shared.publish(messages).await }
                    })
                },
                shared,
                listening: OnceLock::new(),
            }),
        }
    }
}

/// The rows a claim on `queue` at `now` takes, oldest first, at most `limit` of them,
/// skipping rows another claim holds locked: the subquery of every claim (its plan must be
/// a walk of `idx_queue_messages_claim`, never a sort of the backlog; `queue_db_batching`
/// checks it at depth).
pub fn claim_candidates(queue: &str, now: DateTime<Utc>, limit: usize) -> SelectStatement {
    let mut candidates = Query::select();
    candidates
        .column(Column::Id)
        .from(Entity)
        .and_where(Column::Queue.eq(queue))
        .and_where(Column::DeadAt.is_null())
        .and_where(Column::AvailableAt.lte(now))
        .cond_where(claim::free::<Entity>(now))
        .order_by(Column::AvailableAt, Order::Asc)
        .order_by(Column::Id, Order::Asc)
        .limit(u64::try_from(limit).unwrap_or(u64::MAX))
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    candidates
}

impl Shared {
    /// One claim statement for `waiting` consumers: up to that many rows.
    async fn claim(&self, waiting: usize) -> Vec<Claimed> {
        let candidates = claim_candidates(&self.options.name, Utc::now(), waiting);
        let turn = self.writes.turn().await;
        let taken = claim::take_many::<Entity, _>(
            &self.leases,
            candidates,
            self.options.lease,
            [Column::Id, Column::Payload, Column::Attempts],
        )
        .await;
        drop(turn);
        let rows = match taken {
            Ok(rows) => rows,
            Err(err) => {
                return (0..waiting)
                    .map(|_| Claimed::Failed(failed(&err)))
                    .collect();
            }
        };
        let mut answers = Vec::with_capacity(waiting);
        for (row, claim) in rows {
            answers.push(
                match (row.try_get("", "payload"), row.try_get("", "attempts")) {
                    (Ok(payload), Ok(attempts)) => Claimed::Row {
                        payload,
                        attempts,
                        claim,
                    },
                    // Unreadable: leave the lease to expire; a retry reads it again.
                    (Err(err), _) | (_, Err(err)) => Claimed::Failed(failed(&err)),
                },
            );
        }
        if answers.len() < waiting {
            let next_due = self.next_due().await.unwrap_or_else(|err| {
                tracing::debug!(%err, "could not read the next due time of the queue");
                None
            });
            answers.resize_with(waiting, || Claimed::Nothing { next_due });
        }
        answers
    }

    /// When the earliest live row not yet available becomes available.
    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, DbErr> {
        Entity::find()
            .select_only()
            .column_as(Column::AvailableAt.min(), "next")
            .filter(Column::Queue.eq(&self.options.name))
            .filter(Column::DeadAt.is_null())
            .filter(Column::AvailableAt.gt(Utc::now()))
            .into_tuple::<Option<DateTime<Utc>>>()
            .one(&self.db)
            .await
            .map(Option::flatten)
    }

    /// Deletes the acked rows still held by their claims, retrying a failed statement a few
    /// times; nobody waits for an ack's answer (only barriers get one), so what went wrong is
    /// logged here.
    async fn ack(&self, items: Vec<Option<Claim<Entity>>>) -> Vec<Result<(), QueueError>> {
        let claims: Vec<Claim<Entity>> = items.iter().flatten().cloned().collect();
        let mut attempt = 0;
        let outcome = loop {
            if claims.is_empty() {
                break Ok(());
            }
            let turn = self.writes.turn().await;
            let deleted = claim::delete_held(&self.db, &claims).await;
            drop(turn);
            match deleted {
                Ok(deleted) => {
                    for lost in claims.iter().filter(|c| !deleted.contains(&c.id)) {
                        tracing::warn!(message = %lost.id, queue = %self.options.name,
                            "an acked message was leased again before its ack committed; it will be handled again");
                    }
                    break Ok(());
                }
                Err(err) if attempt + 1 < ACK_ATTEMPTS => {
                    let delay = ACK_BACKOFF.delay(attempt);
                    attempt += 1;
                    tracing::debug!(%err, retry_in = ?delay, "could not commit queue acks; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(err) => {
                    tracing::warn!(%err, acks = claims.len(), queue = %self.options.name,
                        "could not commit queue acks; their messages will be delivered again when their leases expire");
                    break Err(format!("database: {err}"));
                }
            }
        };
        items
            .iter()
            .map(|_| outcome.clone().map_err(QueueError::Unavailable))
            .collect()
    }

    async fn publish(
        &self,
        messages: Vec<(Vec<u8>, Option<Duration>)>,
    ) -> Vec<Result<(), QueueError>> {
        let turn = self.writes.turn().await;
        let inserted = insert_many(
            &self.db,
            &self.options.name,
            messages
                .iter()
                .map(|(body, delay)| (body.as_slice(), *delay)),
        )
        .await;
        drop(turn);
        match inserted {
            Ok(_) => {
                wake_local();
                messages.iter().map(|_| Ok(())).collect()
            }
            Err(err) => messages.iter().map(|_| Err(failed(&err))).collect(),
        }
    }
}

impl Inner {
    /// Lets the other consumers know a row changed outside the batchers (retry, replay).
    async fn woke(&self) -> Result<(), DbErr> {
        wake::notify(&self.db, &self.options.name).await?;
        wake::local();
        Ok(())
    }

    /// Starts listening for other processes' enqueues (PostgreSQL), once.
    fn listen(&self) {
        self.listening.get_or_init(|| wake::listen(&self.db));
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

    fn delivery(
        self: &Arc<Self>,
        payload: String,
        attempts: i32,
        claim: Claim<Entity>,
    ) -> RawDelivery {
        let shared = Arc::clone(&self.shared);
        let committing = Arc::new(AtomicBool::new(false));
        let keep_alive = KeepAlive::spawn(self.options.lease / 3, {
            let committing = Arc::clone(&committing);
            move || {
                let shared = Arc::clone(&shared);
                let committing = Arc::clone(&committing);
                async move {
                    // A handler's transaction deleting the row: nothing to extend, and a
                    // row found gone is no lost lease.
                    if committing.load(Ordering::Acquire) {
                        return;
                    }
                    match claim.extend(&shared.leases, shared.options.lease).await {
                        Ok(true) => {}
                        Ok(false) if committing.load(Ordering::Acquire) => {}
                        Ok(false) => {
                            tracing::warn!(message = %claim.id, "queue lease lost: another consumer holds the message")
                        }
                        Err(err) => tracing::warn!(%err, "could not extend a queue lease"),
                    }
                }
            }
        });
        RawDelivery {
            body: payload.into_bytes(),
            // `attempts` as the claim left it: the deliveries so far, this one included.
            deliveries: u32::try_from(attempts).unwrap_or(u32::MAX),
            max_attempts: self.options.max_attempts,
            settle: Box::new(DbSettle {
                inner: Arc::clone(self),
                claim,
                committing,
                _keep_alive: keep_alive,
            }),
        }
    }
}

/// Settles one claimed row, guarded by the claim's token.
struct DbSettle {
    inner: Arc<Inner>,
    claim: Claim<Entity>,
    /// Set once a handler's transaction deletes the row (`Settle::claim_for_commit`): the
    /// lease is no longer extended (the delete holds the row until its commit, and the
    /// delivery is settled right after either way).
    committing: Arc<AtomicBool>,
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
        // Write-behind: committed with the next batch; the lease covers the row meanwhile.
        self.inner
            .acks
            .submit(Some(self.claim))
            .await
            .map_err(|err| QueueError::Unavailable(err.to_string()))
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
        self.check(updated.rows_affected)?;
        // Consumers sleeping until a later due time look again.
        self.inner.woke().await?;
        Ok(())
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

    fn claim_for_commit(&self) -> Option<&Claim<Entity>> {
        self.committing.store(true, Ordering::Release);
        Some(&self.claim)
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
        self.inner
            .publishes
            .call((body, delay))
            .await
            .map_err(|err| QueueError::Unavailable(err.to_string()))?
    }

    async fn fetch(&self, wait: Duration) -> Result<Option<RawDelivery>, QueueError> {
        self.inner.listen();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Created before the claim: a wake-up during the claim is not missed.
            let woken = wake::notified();
            let claimed = self
                .inner
                .claims
                .call(())
                .await
                .map_err(|err| QueueError::Unavailable(err.to_string()))?;
            let next_due = match claimed {
                Claimed::Row {
                    payload,
                    attempts,
                    claim,
                } => return Ok(Some(self.inner.delivery(payload, attempts, claim))),
                Claimed::Failed(err) => return Err(err),
                Claimed::Nothing { next_due } => next_due,
            };
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut nap = self.inner.options.poll_interval.min(deadline - now);
            if let Some(due) = next_due {
                let until_due = (due - Utc::now()).to_std().unwrap_or_default();
                nap = nap.min(until_due);
            }
            let slept_to_deadline = nap >= deadline - now;
            if tokio::time::timeout(nap, woken).await.is_err() && slept_to_deadline {
                // The caller asks again at once; a claim here would be its claim twice.
                return Ok(None);
            }
        }
    }

    async fn drain(&self) -> Result<(), QueueError> {
        self.inner
            .acks
            .call(None)
            .await
            .map_err(|err| QueueError::Unavailable(err.to_string()))?
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        // What this process acked counts as gone.
        self.drain().await?;
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
