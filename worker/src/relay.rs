//! The outbox relay: publishes committed `outbox` rows to the queue, in creation order,
//! and marks them published (docs/design/queue.md).
//!
//! Only the broker backends need it (`db::outbox::Route::Relay`); with the `db` backend
//! producers write straight into the queue table. A row is marked published only after the
//! broker confirmed it, so a crash in between publishes it again on restart: at-least-once,
//! and consumers' inbox makes the duplicate harmless. A row's `available_at` becomes the
//! publish delay, so order of creation is kept and the queue does the waiting — except a
//! delay shorter than the broker's resolution, which waits here (below).
//!
//! - **One relay at a time**: the relay holds the lease `outbox_relay` (`db::lease`, judged by
//!   the database's clock) while it publishes, so with many workers the order holds. It
//!   renews the lease before a batch only when less than 10 s of its 15 s surely remain (by
//!   its own clock, counted from before the renewal was sent, a tenth spared for clock
//!   rates): every batch starts with at least 10 s of lease, and a busy relay commits a
//!   renewal about every 3.5 s instead of one per batch. A batch publishes only while the
//!   lease surely runs: a publish whose confirm has not come when it ends is abandoned and
//!   its row left for the next batch (renewed first), so a broker that stops answering
//!   cannot keep a relay publishing after its lease passed to another. No
//!   database transaction or lock is held across a broker round trip: a batch of rows is
//!   read, published — one deployment's rows in order, different deployments' rows at the
//!   same time (up to 32), so their confirms overlap — and the confirmed rows are marked in
//!   one statement.
//! - **Woken, not polling**: a commit that wrote an outbox row wakes the relay
//!   (`db::outbox::committed` in-process, PostgreSQL's NOTIFY from other processes); the
//!   idle pause (200 ms) only bounds how late a lost wake-up is noticed. A wake-up starts a
//!   batch no sooner than 10 ms after the previous one began (`COOLDOWN`), so a thousand
//!   commits a second do not each re-read the same pending rows.
//! - **Short delays wait here**: a broker takes delays in whole seconds, rounded up
//!   (`Queue::delay_resolution`), so a row due in 10 ms would be delivered a second later. A
//!   row due sooner than the resolution is *held*: left pending, with the rows behind it of
//!   the same deployment, and published undelayed once due; the relay sleeps until the
//!   earliest held row is due (at most the idle pause).
//! - **No row blocks the others**: a row the broker refuses (`QueueError::Rejected`, e.g. too
//!   large for SQS) has the failure counted in `attempts` and `last_error`; the rows behind
//!   it flow, except later rows of the same deployment (their order matters). After
//!   `RELAY_MAX_ATTEMPTS` the row is **parked** (`parked_at`), with a `command_parked` event on
//!   its deployment and `hokusai_outbox_parked_total`; the reconciler then sees a deployment
//!   whose command the database no longer holds and moves it on. A broker that is down
//!   (`Unavailable`) spends no attempt: the batch stops and is tried again after a backoff.

use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::json;
use shared::db::deployments;
use shared::db::entities::outbox::{self, Column, Entity};
use shared::db::{lease, wake};
use shared::domain::DeploymentId;
use shared::queue::{Queue, QueueError};
use shared::runtime::{Backoff, Heartbeat, Shutdown};
use shared::telemetry::metrics::names;
use uuid::Uuid;

/// The relay's lease in `leader_leases`.
pub const LEASE: &str = "outbox_relay";
/// How long the relay's lease lasts without renewal.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a healthy relay beats (a batch's publishing ends when its lease runs out).
pub const PERIOD: Duration = Duration::from_secs(30);
/// Pauses after failed batches.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));

/// A commit's wake-up starts a batch no sooner than this after the previous one began (as
/// River's producer fetches at most once per cooldown): under many commits a second, each
/// batch takes what accumulated instead of re-reading the same few rows per commit; a lone
/// command waits at most this much longer.
const COOLDOWN: Duration = Duration::from_millis(10);

/// Deployments whose rows are published at the same time within a batch.
const IN_FLIGHT: usize = 32;

/// What publishing one deployment's rows of a batch did.
#[derive(Default)]
struct Sequence {
    published: Vec<Uuid>,
    refused: Option<(outbox::Model, String)>,
    error: Option<QueueError>,
    /// Rows left for a later batch because the first of them is due within the queue's
    /// delay resolution, and how long until it is due.
    held: Option<(usize, Duration)>,
    /// Rows left unpublished because the lease ran out first (a broker that stopped
    /// answering).
    cut: usize,
}

/// Publishes outbox rows to one queue.
pub struct Relay {
    db: DatabaseConnection,
    queue: Arc<dyn Queue>,
    /// The `outbox.queue` value of the rows to relay.
    source: String,
    batch: u64,
    idle: Duration,
    max_attempts: i32,
    holder: String,
    /// How long the lease lasts without renewal ([`LEASE_TTL`]).
    lease_ttl: Duration,
    /// Until when the relay's lease surely runs, by this process's clock.
    leadership: lease::Leadership,
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows published.
    pub published: usize,
    /// Rows the broker refused this time (counted, left for later).
    pub failed: usize,
    /// Rows parked now.
    pub parked: usize,
    /// Rows read.
    pub read: usize,
    /// Rows left pending because they (or an earlier row of their deployment) are due
    /// within the queue's delay resolution.
    pub held: usize,
    /// How long until the earliest held row is due.
    pub next_due: Option<Duration>,
    /// Rows left for the next batch because the relay's lease ran out before they were
    /// published (a broker that stopped answering): publishing stops where the lease ends,
    /// so two relays never publish at once for long.
    pub cut: usize,
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
            max_attempts: 10,
            holder: format!("relay-{}-{}", std::process::id(), Uuid::new_v4().simple()),
            lease_ttl: LEASE_TTL,
            leadership: lease::Leadership::default(),
        }
    }

    /// Holds the relay lease for `ttl` per renewal instead of [`LEASE_TTL`] (tests shorten
    /// it to watch a lease run out).
    pub fn leasing_for(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Relays the rows producers wrote for the logical queue `name` (e.g.
    /// `hokusai.deployments`) to this relay's queue, whatever the queue's physical name.
    pub fn relaying(mut self, name: &str) -> Self {
        self.source = name.to_owned();
        self
    }

    /// Parks a row after `attempts` refused publishes (`RELAY_MAX_ATTEMPTS`).
    pub fn parking_after(mut self, attempts: u32) -> Self {
        self.max_attempts = i32::try_from(attempts.max(1)).unwrap_or(i32::MAX);
        self
    }

    /// Publishes at most one batch of pending rows, oldest first, if this relay holds the
    /// relay lease (another worker's relay publishing means nothing to do here). Returns how
    /// many were published; rows published before an error stay marked.
    pub async fn try_relay_batch(&self) -> anyhow::Result<usize> {
        Ok(self.relay_batch().await?.published)
    }

    /// Like [`Relay::try_relay_batch`], with the whole report.
    pub async fn relay_batch(&self) -> anyhow::Result<BatchReport> {
        // A batch starts with at least two thirds of the lease left (10 s of 15), else the
        // lease is renewed first.
        let ttl = self.lease_ttl;
        if !self.leadership.runs_for(ttl * 2 / 3) {
            let sent = tokio::time::Instant::now();
            let token = lease::try_hold(&self.db, LEASE, &self.holder, ttl).await;
            let token = token.inspect_err(|_| self.leadership.hold_until(None))?;
            // The database's clock judges the lease; ours runs at nearly its rate (a tenth
            // of the TTL spared for the difference).
            self.leadership
                .hold_until(token.map(|_| sent + ttl - ttl / 10));
            if token.is_none() {
                return Ok(BatchReport::default());
            }
        }
        // Publishing stops when the lease surely ends: past it another relay may hold it.
        let Some(lease_ends) = self.leadership.until() else {
            return Ok(BatchReport::default());
        };
        let rows = Entity::find()
            .filter(Column::PublishedAt.is_null())
            .filter(Column::ParkedAt.is_null())
            .filter(Column::Queue.eq(self.source.as_str()))
            .order_by_asc(Column::CreatedAt)
            .order_by_asc(Column::Id)
            .limit(self.batch)
            .all(&self.db)
            .await?;
        let mut report = BatchReport {
            read: rows.len(),
            ..BatchReport::default()
        };
        // One sequence per deployment, in creation order: a deployment's commands are
        // published one after the other (their order matters), different deployments'
        // commands at the same time (their confirms overlap instead of adding up).
        let mut sequences: Vec<(Option<String>, Vec<outbox::Model>)> = Vec::new();
        for row in rows {
            let deployment = deployment_of(&row);
            match sequences.iter_mut().find(|(d, _)| *d == deployment) {
                Some((_, sequence)) => sequence.push(row),
                None => sequences.push((deployment, vec![row])),
            }
        }
        let outcomes: Vec<Sequence> = futures_util::stream::iter(sequences)
            .map(|(_, sequence)| self.publish_in_order(sequence, lease_ends))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        // Every confirmed row is marked in one statement, also when a broker error ended
        // the batch (a crash before this publishes them again: at-least-once).
        let published: Vec<Uuid> = outcomes.iter().flat_map(|o| o.published.clone()).collect();
        if !published.is_empty() {
            Entity::update_many()
                .col_expr(Column::PublishedAt, Expr::value(Utc::now()))
                .filter(Column::Id.is_in(published.iter().copied()))
                .exec(&self.db)
                .await?;
        }
        report.published = published.len();
        let mut broker_error = None;
        for outcome in outcomes {
            report.cut += outcome.cut;
            if let Some((rows, due_in)) = outcome.held {
                report.held += rows;
                report.next_due = Some(report.next_due.map_or(due_in, |d| d.min(due_in)));
            }
            if let Some((row, reason)) = outcome.refused {
                if self.refused(&row, &reason).await? {
                    report.parked += 1;
                } else {
                    report.failed += 1;
                }
            }
            if let Some(error) = outcome.error {
                broker_error.get_or_insert(error);
            }
        }
        match broker_error {
            Some(error) => Err(error.into()),
            None => Ok(report),
        }
    }

    /// Publishes one deployment's rows in order, stopping at the first that fails or is
    /// held (due within the queue's delay resolution), and at `lease_ends`: a publish still
    /// waiting for its confirm then is abandoned (its row stays pending and goes out again
    /// with the next batch; should the broker have taken it, the consumers' inbox makes the
    /// copy harmless).
    async fn publish_in_order(
        &self,
        sequence: Vec<outbox::Model>,
        lease_ends: tokio::time::Instant,
    ) -> Sequence {
        let mut outcome = Sequence::default();
        let resolution = self.queue.delay_resolution();
        let total = sequence.len();
        for (index, row) in sequence.into_iter().enumerate() {
            let due_in = due_in(&row);
            if due_in.is_some_and(|d| d < resolution) {
                outcome.held = due_in.map(|d| (total - index, d));
                break;
            }
            // No publish starts once the lease surely ended (a timeout polls its future once
            // before looking at the clock, which would hand the frame to the broker).
            let published = if tokio::time::Instant::now() < lease_ends {
                tokio::time::timeout_at(lease_ends, self.publish(&row, due_in))
                    .await
                    .ok()
            } else {
                None
            };
            let Some(published) = published else {
                outcome.cut = total - index;
                break;
            };
            match published {
                Ok(()) => outcome.published.push(row.id),
                Err(QueueError::Rejected(reason)) => {
                    // The rows behind it (same deployment) wait: order.
                    outcome.refused = Some((row, reason));
                    break;
                }
                Err(other) => {
                    outcome.error = Some(other);
                    break;
                }
            }
        }
        outcome
    }

    /// Counts a refused publish of `row`; parks it at the limit. Returns whether it parked.
    async fn refused(&self, row: &outbox::Model, reason: &str) -> anyhow::Result<bool> {
        let attempts = row.attempts + 1;
        let park = attempts >= self.max_attempts;
        let mut update = Entity::update_many()
            .col_expr(Column::Attempts, Expr::value(attempts))
            .col_expr(Column::LastError, Expr::value(reason))
            .filter(Column::Id.eq(row.id));
        if park {
            update = update.col_expr(Column::ParkedAt, Expr::value(Utc::now()));
        }
        update.exec(&self.db).await?;
        if !park {
            tracing::warn!(message_id = %row.id, attempts, reason, "the queue refused an outbox row; the rows behind it go on");
            return Ok(false);
        }
        metrics::counter!(names::OUTBOX_PARKED).increment(1);
        tracing::error!(message_id = %row.id, attempts, reason, "outbox row parked after RELAY_MAX_ATTEMPTS refused publishes");
        let deployment = deployment_of(row)
            .and_then(|id| id.parse::<Uuid>().ok())
            .map(DeploymentId);
        if let Some(id) = deployment
            && let Some(current) = deployments::get(&self.db, id).await?
        {
            let message = format!(
                "the queue refused this deployment's command {attempts} times; parked (RELAY_MAX_ATTEMPTS): {reason}"
            );
            let details = json!({"message_id": row.id, "attempts": attempts, "error": reason});
            deployments::record_event(
                &self.db,
                &current,
                "command_parked",
                Some(current.status),
                &message,
                Some(details),
            )
            .await?;
        }
        Ok(true)
    }

    async fn publish(
        &self,
        row: &outbox::Model,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_vec(&row.payload)
            .map_err(|e| QueueError::Rejected(format!("unserialisable payload: {e}")))?;
        self.queue.publish_bytes(body, delay).await?;
        shared::queue::count(self.queue.name(), shared::queue::Event::Published);
        tracing::debug!(message_id = %row.id, queue = %row.queue, "relayed");
        Ok(())
    }

    /// Relays until `shutdown`: a full batch is followed at once by the next, an empty one
    /// by a short pause, an error by a backoff (the rows stay pending). Beats `heartbeat`
    /// after every batch; gives the relay lease up on the way out.
    pub async fn run(&self, heartbeat: Heartbeat, shutdown: Shutdown) {
        // Other processes' commits wake us through PostgreSQL's NOTIFY (`db::wake`).
        let _listening = wake::listen(&self.db);
        let mut failures = 0;
        while !shutdown.is_triggered() {
            // Taken before reading: a commit while the batch runs is not missed.
            let woken = wake::notified();
            let began = tokio::time::Instant::now();
            let (pause, wakeable) = match self.relay_batch().await {
                Ok(report) => {
                    failures = 0;
                    if report.cut > 0 {
                        tracing::warn!(
                            rows = report.cut,
                            "the relay's lease ran out while the queue had not confirmed its publishes; renewing and trying again"
                        );
                    }
                    if (report.read as u64 >= self.batch && report.published > 0) || report.cut > 0
                    {
                        (Duration::ZERO, false)
                    } else {
                        // Back when the earliest held row is due, or woken by a commit.
                        let pause = report.next_due.map_or(self.idle, |d| d.min(self.idle));
                        (pause, true)
                    }
                }
                Err(err) => {
                    let delay = BACKOFF.delay(failures);
                    failures += 1;
                    tracing::warn!(error = %format!("{err:#}"), retry_in = ?delay, "outbox relay failed; retrying");
                    (delay, false)
                }
            };
            heartbeat.beat();
            if wakeable {
                tokio::select! {
                    () = woken => {
                        // Many commits a second would each start a batch that reads the
                        // same few rows: batches start at most every COOLDOWN.
                        let rest = COOLDOWN.saturating_sub(began.elapsed());
                        if !rest.is_zero() && shutdown.sleep(rest).await {
                            break;
                        }
                    }
                    stopped = shutdown.sleep(pause) => if stopped { break },
                }
            } else if shutdown.sleep(pause).await {
                break;
            }
        }
        if let Err(error) = self.release().await {
            tracing::warn!(%error, "could not release the relay lease; it expires by itself");
        }
    }

    /// Gives the relay lease up (a relay that stops; the next relay need not wait for it to
    /// expire).
    pub async fn release(&self) -> Result<(), sea_orm::DbErr> {
        self.leadership.hold_until(None);
        lease::release(&self.db, LEASE, &self.holder).await
    }
}

/// How long until `row` is due; `None` when it is due now.
fn due_in(row: &outbox::Model) -> Option<Duration> {
    row.available_at
        .and_then(|at| (at - Utc::now()).to_std().ok())
        .filter(|d| !d.is_zero())
}

/// The deployment a row's envelope names.
fn deployment_of(row: &outbox::Model) -> Option<String> {
    row.payload
        .get("deployment_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}
