//! The deployment command queue (docs/design/queue.md): the versioned [`Envelope`], the [`Queue`]
//! trait every backend implements, and [`connect`], which picks the backend named by
//! `QUEUE_BACKEND` with one explicit `match`.
//!
//! A backend moves opaque bytes: it publishes them (optionally delayed), hands them out as
//! a [`RawDelivery`] that is settled exactly once (ack, retry later, dead-letter), and keeps
//! dead letters for operators ([`DeadLetters`]). The rules that must not differ between
//! backends live here, once: [`Queue::receive`] dead-letters undecodable payloads and
//! messages delivered too often, and [`Delivery::retry_later`] dead-letters a command
//! whose attempts are used up. Backends:
//! - [`db`]: rows in `queue_messages` (the embedded default).
//! - [`rabbitmq`]: a quorum queue with a dead-letter exchange, through lapin.
//! - [`sqs`]: AWS SQS with a redrive policy.

pub mod db;
mod delivery;
mod envelope;
pub mod rabbitmq;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::{DatabaseConnection, DbErr};
use serde::Serialize;
use uuid::Uuid;

use crate::config::{QueueBackend, QueueSettings};
pub use delivery::{Delivery, RawDelivery, Settle, Settled};
pub use envelope::{Envelope, EnvelopeError, MessageKind, Replayed};

/// The queue that carries deployment commands.
pub const DEPLOYMENTS_QUEUE: &str = "hokusai.deployments";

/// What went wrong talking to the queue. Retry or not is in the variant
/// ([`QueueError::is_transient`]), never in a string.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker or database did not answer (down, timed out, connection lost); retry later.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (unroutable, negatively acknowledged).
    #[error("message refused by the queue: {0}")]
    Rejected(String),
    /// The delivery is no longer ours (lease expired, connection lost); it will be
    /// redelivered, so the caller must not treat it as settled.
    #[error("delivery no longer held: {0}")]
    LeaseLost(String),
    /// The configuration cannot work (missing URL, bad AMQP URL).
    #[error("queue misconfigured: {0}")]
    Config(String),
    /// The database of the `db` backend failed.
    #[error(transparent)]
    Database(#[from] DbErr),
}

impl QueueError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Config(_))
    }
}

/// Names and limits of one queue.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// The main queue's name; the dead-letter and delay queues derive theirs from it
    /// (`{name}.dlq`, `{name}.dlx`, `{name}.delay.{n}s`). Tests use a fresh name each.
    pub name: String,
    /// `QUEUE_MAX_ATTEMPTS`: a command is tried at most this often, and a message delivered
    /// more often without being settled (a consumer crashing on it) is dead-lettered.
    pub max_attempts: u32,
    /// How long a delivery stays invisible to other consumers before it is considered
    /// abandoned (db lease, SQS visibility timeout); extended while the step runs.
    /// `QUEUE_LEASE_SECONDS` through [`QueueOptions::from_settings`].
    pub lease: Duration,
    /// RabbitMQ prefetch: deliveries a consumer holds at once. A worker sets it to
    /// `WORKER_CONCURRENCY` ([`QueueOptions::with_prefetch`]): no message waits unacked in a
    /// buffer while every handler is busy.
    pub prefetch: u16,
    /// Embedded queue: how often an idle consumer looks for rows when no wake-up came
    /// (`QUEUE_POLL_INTERVAL_SECONDS`; wake-ups are LISTEN/NOTIFY on PostgreSQL and
    /// in-process otherwise, so this only bounds how late a lost wake-up is noticed).
    pub poll_interval: Duration,
}

impl QueueOptions {
    /// Options for `name` with the production defaults (30 s lease, prefetch 16).
    pub fn new(name: impl Into<String>, max_attempts: u32) -> Self {
        Self {
            name: name.into(),
            max_attempts: max_attempts.max(1),
            lease: Duration::from_secs(30),
            prefetch: 16,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// The same options with a prefetch of `handlers` (at least 1).
    pub fn with_prefetch(mut self, handlers: usize) -> Self {
        self.prefetch = u16::try_from(handlers.max(1)).unwrap_or(u16::MAX);
        self
    }

    /// The deployments queue as configured.
    pub fn from_settings(settings: &QueueSettings) -> Self {
        Self {
            lease: settings.lease,
            poll_interval: settings.poll_interval,
            ..Self::new(DEPLOYMENTS_QUEUE, settings.max_attempts)
        }
    }
}

/// How many messages wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Depth {
    /// Live messages (ready; on backends that can tell, also delayed and in flight).
    pub pending: u64,
    /// Dead letters.
    pub dead: u64,
}

/// A dead-lettered message as operators see it (`dlq list --json`, docs/design/http-api.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeadLetter {
    /// Transport id, stable while the message is dead (what `show`/`replay`/`purge` take).
    pub id: String,
    /// The queue it was dead-lettered from.
    pub queue: String,
    /// Command kind, if the payload is an envelope.
    pub kind: Option<String>,
    /// Deployment, if the payload is an envelope.
    pub deployment_id: Option<Uuid>,
    /// Attempts made (envelope attempts or deliveries, whichever is larger).
    pub attempts: u32,
    /// Why it was dead-lettered.
    pub last_error: Option<String>,
    /// When, if the backend knows.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// The raw payload (not part of the JSON listing).
    #[serde(skip)]
    pub body: Vec<u8>,
}

impl DeadLetter {
    /// Describes `body`, reading kind, deployment and attempt from it when it is an envelope.
    pub fn describe(id: String, queue: &str, body: Vec<u8>, deliveries: u32) -> Self {
        let envelope = Envelope::decode(&body).ok();
        Self {
            id,
            queue: queue.to_owned(),
            kind: envelope.as_ref().map(|e| e.kind.as_str().to_owned()),
            deployment_id: envelope.as_ref().map(|e| e.deployment_id.0),
            attempts: envelope
                .map_or(0, |e| e.attempt.saturating_add(1))
                .max(deliveries),
            last_error: None,
            dead_lettered_at: None,
            body,
        }
    }
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter of the queue.
    All,
    /// These ids.
    Ids(Vec<String>),
}

impl Selection {
    /// Whether `id` is selected.
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.iter().any(|i| i == id),
        }
    }
}

/// Operator access to dead letters; every backend keeps them where this can reach them.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters, oldest first.
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// One dead letter.
    async fn show(&self, id: &str) -> Result<Option<DeadLetter>, QueueError> {
        Ok(self
            .list(usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.id == id))
    }
    /// Moves the selected dead letters back to the queue with their attempt count reset and
    /// `replayed` (by whom, when) recorded in the envelope. Returns the ids replayed.
    async fn replay(&self, selection: &Selection, by: &str) -> Result<Vec<String>, QueueError>;
    /// Deletes the selected dead letters. Returns the ids deleted.
    async fn purge(&self, selection: &Selection) -> Result<Vec<String>, QueueError>;
}

/// A queue of commands. Held as `Arc<dyn Queue>`; every method takes `&self` and may run
/// concurrently.
#[async_trait]
pub trait Queue: DeadLetters {
    /// The main queue's name.
    fn name(&self) -> &str;
    /// How late a delayed publish may be delivered: the brokers take delays in whole
    /// seconds and round them up, so a 10 ms delay becomes one second. The outbox relay keeps
    /// a row due sooner than this in the database and publishes it when due, undelayed
    /// (docs/design/queue.md, "Short delays"). The embedded queue honours any delay.
    fn delay_resolution(&self) -> Duration {
        Duration::ZERO
    }
    /// Publishes raw bytes, not to be delivered before `delay`; returns once the queue has
    /// durably accepted them (confirmed, committed).
    async fn publish_bytes(&self, body: Vec<u8>, delay: Option<Duration>)
    -> Result<(), QueueError>;
    /// The next message as it is on the queue, waiting up to `wait` for one. Consumers call
    /// [`Queue::receive`] instead.
    async fn fetch(&self, wait: Duration) -> Result<Option<RawDelivery>, QueueError>;
    /// Messages waiting and dead.
    async fn depth(&self) -> Result<Depth, QueueError>;
    /// Returns once every settlement this process handed to the queue so far is durable.
    /// The embedded queue commits acks behind the handler's back (write-behind, in
    /// batches); a process calls this before it exits so that none is left to the lease's
    /// expiry. The brokers settle synchronously: nothing to wait for.
    async fn drain(&self) -> Result<(), QueueError> {
        Ok(())
    }

    /// Publishes a command.
    async fn publish(
        &self,
        envelope: &Envelope,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        self.publish_bytes(envelope.to_bytes(), delay).await?;
        count(self.name(), Event::Published);
        Ok(())
    }

    /// The next command, waiting up to `wait`. Undecodable payloads and messages delivered
    /// more than `max_attempts` times are dead-lettered on the way, with the reason.
    async fn receive(&self, wait: Duration) -> Result<Option<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(raw) = self.fetch(remaining).await? else {
                return Ok(None);
            };
            if let Some(delivery) = raw.screen(self.name()).await? {
                return Ok(Some(delivery));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

/// Builds the configured backend: the one place that chooses. `db` is required by the
/// `db` backend only (its queue is a table in the application database).
pub async fn connect(
    settings: &QueueSettings,
    db: Option<&DatabaseConnection>,
    options: QueueOptions,
) -> Result<Arc<dyn Queue>, QueueError> {
    match settings.backend {
        QueueBackend::Db => {
            let db = db.ok_or_else(|| {
                QueueError::Config("QUEUE_BACKEND=db needs the database connection".into())
            })?;
            Ok(Arc::new(db::DbQueue::new(db.clone(), options)))
        }
        QueueBackend::RabbitMq => Ok(Arc::new(
            rabbitmq::RabbitMqQueue::connect(&settings.amqp_url, options).await?,
        )),
        QueueBackend::Sqs => Ok(Arc::new(sqs::SqsQueue::connect(settings, options).await?)),
    }
}

/// What happened to a message, for `hokusai_queue_messages_total{queue,event}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Handed to the queue (a committed command, a relayed outbox row, a follow-up).
    Published,
    /// Handled and removed.
    Consumed,
    /// Republished for a later attempt.
    Retried,
    /// Moved to the dead letters.
    DeadLettered,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Consumed => "consumed",
            Self::Retried => "retried",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// Counts a message event (and, for dead letters, the CloudWatch `DeadLetteredMessages`).
pub fn count(queue: &str, event: Event) {
    metrics::counter!(crate::telemetry::metrics::names::QUEUE_MESSAGES,
        "queue" => queue.to_owned(), "event" => event.as_str())
    .increment(1);
    if event == Event::DeadLettered {
        crate::telemetry::cloudwatch::record(
            crate::telemetry::cloudwatch::Metric::DeadLetteredMessages,
            &[("Queue", queue)],
            1.0,
        );
    }
}

/// The payload a replay puts back: the envelope with its attempt count reset and the replay
/// recorded; bytes that are no envelope go back unchanged (and will be dead-lettered again).
pub fn replay_body(body: &[u8], by: &str) -> Vec<u8> {
    match Envelope::decode(body) {
        Ok(mut envelope) => {
            envelope.attempt = 0;
            envelope.replayed = Some(Replayed {
                by: by.to_owned(),
                at: Utc::now(),
            });
            envelope.to_bytes()
        }
        Err(_) => body.to_vec(),
    }
}

/// Runs `fut` for at most `limit`; a timeout becomes [`QueueError::Unavailable`] naming `what`.
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, QueueError> {
    match crate::runtime::within(what, limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(QueueError::Unavailable(format!("{what}: {err}"))),
        Err(timed_out) => Err(QueueError::Unavailable(timed_out.to_string())),
    }
}
