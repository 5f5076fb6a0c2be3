//! Writing commands inside the caller's transaction (transactional outbox, docs/design/queue.md).
//!
//! Where the row goes depends on the queue backend, decided once at start-up
//! ([`Route::for_backend`]):
//! - [`Route::Relay`] (RabbitMQ, SQS): an `outbox` row, published after commit by the relay
//!   (`worker::relay`), which marks it published.
//! - [`Route::Direct`] (`db` backend): a `queue_messages` row. The queue is a table in the
//!   same database, so the insert *is* the enqueue: it becomes visible to consumers exactly
//!   when the business transaction commits, and there is no relay hop.

use chrono::{Duration as ChronoDuration, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use std::time::Duration;

use super::entities::{outbox, queue_messages};
use crate::config::QueueBackend;
use crate::queue::{Envelope, Event, count, db as db_queue};

/// Where committed commands are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To `outbox`, for the relay to publish to a broker.
    Relay,
    /// Straight into `queue_messages` (the embedded queue).
    Direct,
}

impl Route {
    /// The route for `backend`.
    pub fn for_backend(backend: QueueBackend) -> Self {
        match backend {
            QueueBackend::Db => Self::Direct,
            QueueBackend::RabbitMq | QueueBackend::Sqs => Self::Relay,
        }
    }
}

/// Records `envelope` for delivery on `queue`, not before `delay` has passed, as part of
/// the caller's transaction `conn`.
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    route: Route,
    queue: &str,
    envelope: &Envelope,
    delay: Option<Duration>,
) -> Result<(), DbErr> {
    match route {
        Route::Direct => {
            db_queue::insert(conn, queue, &envelope.to_bytes(), delay).await?;
            // The insert is the enqueue (counted even if the caller's transaction then
            // rolls back, which the step then retries).
            count(queue, Event::Published);
        }
        Route::Relay => insert_outbox(conn, queue, envelope, delay).await?,
    }
    Ok(())
}

/// The `queue_messages` row [`enqueue`] writes on [`Route::Direct`] at `now`, for a caller
/// that inserts it in a statement of its own (`db::one_statement`); count it with
/// [`published`] once written.
pub fn direct_row(
    queue: &str,
    envelope: &Envelope,
    delay: Option<Duration>,
    now: chrono::DateTime<Utc>,
) -> queue_messages::ActiveModel {
    db_queue::message_row(queue, &envelope.to_bytes(), delay, now)
}

/// The `outbox` row [`enqueue`] writes on [`Route::Relay`] at `now`, for a caller that
/// inserts it in a statement of its own (`db::one_statement`).
pub fn relay_row(
    queue: &str,
    envelope: &Envelope,
    delay: Option<Duration>,
    now: chrono::DateTime<Utc>,
) -> outbox::ActiveModel {
    let available_at =
        delay.map(|d| now + ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX));
    outbox::ActiveModel {
        id: Set(envelope.message_id),
        queue: Set(queue.to_owned()),
        payload: Set(envelope.to_json()),
        available_at: Set(available_at),
        created_at: Set(now),
        published_at: Set(None),
        attempts: Set(0),
        last_error: Set(None),
        parked_at: Set(None),
    }
}

/// Counts a command written to `queue` outside [`enqueue`] ([`direct_row`]).
pub fn published(queue: &str) {
    count(queue, Event::Published);
}

/// Call after committing a transaction that called [`enqueue`]: it wakes this process's
/// idle consumers ([`Route::Direct`]) or relay ([`Route::Relay`]) at once (other processes
/// learn of it from PostgreSQL's NOTIFY, or at their next poll on SQLite).
pub fn committed(_route: Route) {
    super::wake::local();
}

/// The outbox row; its id is the envelope's `message_id`, so a command is written once.
async fn insert_outbox<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    envelope: &Envelope,
    delay: Option<Duration>,
) -> Result<(), DbErr> {
    relay_row(queue, envelope, delay, Utc::now())
        .insert(conn)
        .await?;
    // The relay of another process is woken when this transaction commits (on PostgreSQL
    // the insert's trigger notifies, `db::wake`).
    Ok(())
}

/// Deployments with a command the database still holds: on [`Route::Direct`], a
/// `queue_messages` row not dead-lettered (waiting, delayed or leased); on
/// [`Route::Relay`], an `outbox` row not yet published. A command already handed to a
/// broker is not visible here; the caller judges those by the deployment's activity.
/// Reads at most `limit` rows.
pub async fn deployments_with_commands<C: ConnectionTrait>(
    conn: &C,
    route: Route,
    limit: u64,
) -> Result<std::collections::HashSet<uuid::Uuid>, DbErr> {
    use crate::db::entities::queue_messages;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let ids = |payloads: Vec<serde_json::Value>| {
        payloads
            .into_iter()
            .filter_map(|p| p.get("deployment_id")?.as_str()?.parse().ok())
            .collect()
    };
    Ok(match route {
        Route::Direct => {
            let rows: Vec<String> = queue_messages::Entity::find()
                .select_only()
                .column(queue_messages::Column::Payload)
                .filter(queue_messages::Column::DeadAt.is_null())
                .limit(limit)
                .into_tuple()
                .all(conn)
                .await?;
            ids(rows
                .iter()
                .filter_map(|p| serde_json::from_str(p).ok())
                .collect())
        }
        Route::Relay => {
            let rows: Vec<serde_json::Value> = outbox::Entity::find()
                .select_only()
                .column(outbox::Column::Payload)
                .filter(outbox::Column::PublishedAt.is_null())
                .filter(outbox::Column::ParkedAt.is_null())
                .limit(limit)
                .into_tuple()
                .all(conn)
                .await?;
            ids(rows)
        }
    })
}
