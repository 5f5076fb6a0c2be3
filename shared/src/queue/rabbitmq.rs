//! The RabbitMQ backend (`QUEUE_BACKEND=rabbitmq`), through lapin.
//!
//! Topology (declared idempotently on every (re)connection, see [`topology`]):
//! - `{name}`: durable quorum queue; broker-side dead-lettering to `{name}.dlx` with the
//!   `at-least-once` strategy (so `x-overflow=reject-publish`) and a delivery limit that
//!   catches consumers that keep crashing on a message.
//! - `{name}.dlx` → `{name}.dlq`: direct exchange and quorum queue of dead letters.
//! - `{name}.delay.{n}s`: quorum queues with a message TTL of `n` seconds that dead-letter
//!   back into `{name}`; a delayed publish goes to the bucket rounded *up* from its delay, so
//!   a message is never early and each bucket stays FIFO (TTL expiry only happens at the
//!   head of a queue).
//!
//! Every publish waits for its publisher confirm with `mandatory` set: an unroutable message
//! is an error, not a success. Consumers ack manually with a small prefetch. Heartbeats are
//! on. Every broker await is bounded by a timeout.
//!
//! Reconnection: the connection and its channels form one [`Session`]. When an operation
//! fails with a connection-level problem, the session is discarded and the operation runs
//! again on a fresh one (publishes are republished: at-least-once). Deliveries of a dead
//! session cannot be acked; the broker requeues them when the connection drops. We rebuild
//! explicitly rather than rely on lapin's `enable_auto_recover`, because the rebuilt session
//! also redeclares the topology and there is one code path to reason about and test.

mod dead_letters;
mod settle;
mod topology;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{Depth, Queue, QueueError, QueueOptions, RawDelivery, bounded};
use crate::config::Secret;
use crate::runtime::Backoff;
use topology::Names;

/// Bound on every single broker operation.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat interval asked of the broker when the URL does not set one.
const HEARTBEAT_SECONDS: u16 = 10;
/// Tries of an operation across reconnections before giving up.
const TRIES: u32 = 8;
/// Delays between those tries.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// A RabbitMQ-backed [`Queue`].
#[derive(Clone)]
pub struct RabbitMqQueue {
    inner: Arc<Inner>,
}

/// One live connection with its channels.
struct Session {
    generation: u64,
    /// The connection (dropping the session closes it).
    connection: Connection,
    /// Publisher channel, in confirm mode.
    publisher: Channel,
    /// Created on the first fetch, so publish-only processes never take deliveries.
    consumer: Mutex<Option<lapin::Consumer>>,
    connection_ok: Box<dyn Fn() -> bool + Send + Sync>,
}

struct Inner {
    /// Holds credentials: never logged.
    uri: AMQPUri,
    options: QueueOptions,
    names: Names,
    session: Mutex<Option<Arc<Session>>>,
    generations: AtomicU64,
}

impl RabbitMqQueue {
    /// Connects to `url`, declares the topology of `options.name` and enables confirms.
    pub async fn connect(url: &Secret, options: QueueOptions) -> Result<Self, QueueError> {
        let mut uri: AMQPUri = url
            .expose()
            .parse()
            .map_err(|_| QueueError::Config("AMQP_URL is not a valid amqp:// URL".into()))?;
        uri.query.heartbeat.get_or_insert(HEARTBEAT_SECONDS);
        uri.query.connection_timeout.get_or_insert(5_000);
        let queue = Self {
            inner: Arc::new(Inner {
                uri,
                names: Names::new(&options.name),
                options,
                session: Mutex::new(None),
                generations: AtomicU64::new(0),
            }),
        };
        queue.inner.session().await?;
        Ok(queue)
    }
}

impl Inner {
    /// The live session, connecting a new one if there is none or it died.
    async fn session(&self) -> Result<Arc<Session>, QueueError> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref()
            && (session.connection_ok)()
        {
            return Ok(Arc::clone(session));
        }
        *slot = None;
        let session = Arc::new(self.open().await?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    async fn open(&self) -> Result<Session, QueueError> {
        let properties =
            ConnectionProperties::default().with_connection_name("hokusai-serve".into());
        let connection = bounded(
            "connect to RabbitMQ",
            OP_TIMEOUT,
            Connection::connect_uri(self.uri.clone(), properties),
        )
        .await?;
        let publisher = bounded("open channel", OP_TIMEOUT, connection.create_channel()).await?;
        bounded(
            "enable publisher confirms",
            OP_TIMEOUT,
            publisher.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        topology::declare(&publisher, &self.names, self.options.max_attempts).await?;
        let status = connection.status().clone();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(queue = %self.names.queue, generation, "connected to RabbitMQ");
        Ok(Session {
            generation,
            connection,
            publisher,
            consumer: Mutex::new(None),
            connection_ok: Box::new(move || status.connected()),
        })
    }

    /// Forgets the session `generation` (if still current) so the next call reconnects.
    async fn discard(&self, generation: u64) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| s.generation == generation) {
            tracing::warn!(queue = %self.names.queue, generation, "RabbitMQ session lost");
            *slot = None;
        }
    }

    /// Runs `op` on a live session, reconnecting and trying again on connection-level
    /// failures. A refusal by the broker ([`QueueError::Rejected`]) is not retried.
    async fn with_session<T, F, Fut>(&self, op: F) -> Result<T, QueueError>
    where
        F: Fn(Arc<Session>) -> Fut,
        Fut: std::future::Future<Output = Result<T, QueueError>>,
    {
        let mut last = QueueError::Unavailable("RabbitMQ not tried".into());
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(RECONNECT.delay(attempt)).await;
            }
            let session = match self.session().await {
                Ok(session) => session,
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            let generation = session.generation;
            match op(session).await {
                Err(QueueError::Unavailable(reason)) => {
                    self.discard(generation).await;
                    last = QueueError::Unavailable(reason);
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Publishes with confirm to `exchange`/`key`, republishing on a new session on failure.
    async fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        self.with_session(|session| {
            let properties = properties.clone();
            async move { confirm_publish(&session.publisher, exchange, key, body, properties).await }
        })
        .await
    }

    /// Publishes `body` to the main queue, through a delay queue if `delay` is non-zero.
    async fn publish_delayed(
        &self,
        body: &[u8],
        delay: Duration,
        properties: BasicProperties,
    ) -> Result<(), QueueError> {
        if delay.is_zero() {
            return self.publish("", &self.names.queue, body, properties).await;
        }
        let seconds = topology::delay_bucket(delay);
        let delay_queue = self.names.delay(seconds);
        self.with_session(|session| {
            let properties = properties.clone();
            let delay_queue = delay_queue.as_str();
            async move {
                topology::declare_delay(&session.publisher, &self.names, delay_queue, seconds)
                    .await?;
                confirm_publish(&session.publisher, "", delay_queue, body, properties).await
            }
        })
        .await
    }

    /// The next delivery of `session`'s consumer (started on first use).
    async fn next_delivery(
        &self,
        session: &Session,
    ) -> Result<lapin::message::Delivery, QueueError> {
        let mut slot = session.consumer.lock().await;
        if slot.is_none() {
            *slot = Some(self.start_consumer(session).await?);
        }
        let Some(consumer) = slot.as_mut() else {
            return Err(QueueError::Unavailable("consumer not started".into()));
        };
        match consumer.next().await {
            Some(Ok(delivery)) => Ok(delivery),
            Some(Err(err)) => Err(QueueError::Unavailable(format!("consumer: {err}"))),
            None => Err(QueueError::Unavailable("consumer cancelled".into())),
        }
    }

    async fn start_consumer(&self, session: &Session) -> Result<lapin::Consumer, QueueError> {
        let channel = bounded("open channel", OP_TIMEOUT, session.channel()).await?;
        bounded(
            "set prefetch",
            OP_TIMEOUT,
            channel.basic_qos(self.options.prefetch, BasicQosOptions::default()),
        )
        .await?;
        bounded(
            "start consumer",
            OP_TIMEOUT,
            channel.basic_consume(
                self.names.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
    }

    fn raw(self: &Arc<Self>, delivery: lapin::message::Delivery) -> RawDelivery {
        let delivered_before = topology::header_int(&delivery.properties, "x-delivery-count")
            .unwrap_or(u32::from(delivery.redelivered));
        RawDelivery {
            deliveries: delivered_before + 1,
            max_attempts: self.options.max_attempts,
            settle: Box::new(settle::RabbitSettle {
                inner: Arc::clone(self),
                acker: Some(delivery.acker),
                id: topology::message_id(&delivery.properties, delivery.delivery_tag),
            }),
            body: delivery.data,
        }
    }
}

impl Session {
    /// A new channel on this session's connection.
    async fn channel(&self) -> lapin::Result<Channel> {
        self.connection.create_channel().await
    }
}

/// Publishes and waits for the broker's confirm; unroutable or nacked is
/// [`QueueError::Rejected`].
async fn confirm_publish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), QueueError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = bounded(
        "publish",
        OP_TIMEOUT,
        channel.basic_publish(exchange.into(), key.into(), options, body, properties),
    )
    .await?;
    match bounded("publisher confirm", OP_TIMEOUT, confirm).await? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(QueueError::Rejected(format!(
            "unroutable to `{key}`: {}",
            returned.reply_text.as_str()
        ))),
        Confirmation::Nack(_) => Err(QueueError::Rejected(format!(
            "the broker refused the message for `{key}`"
        ))),
    }
}

/// Properties of a new message: persistent JSON with a fresh transport id.
fn properties(id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(id.into())
        .with_headers(headers)
}

#[async_trait]
impl Queue for RabbitMqQueue {
    fn name(&self) -> &str {
        &self.inner.names.queue
    }

    /// Delay queues are whole seconds, a delay rounded up (`topology::delay_bucket`).
    fn delay_resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn publish_bytes(
        &self,
        body: Vec<u8>,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        let id = Uuid::now_v7().to_string();
        let properties = properties(&id, FieldTable::default());
        self.inner
            .publish_delayed(&body, delay.unwrap_or_default(), properties)
            .await
    }

    async fn fetch(&self, wait: Duration) -> Result<Option<RawDelivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut failure = None;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return failure.map_or(Ok(None), Err);
            }
            let session = match self.inner.session().await {
                Ok(session) => session,
                Err(err) => {
                    failure = Some(err);
                    tokio::time::sleep(remaining.min(Duration::from_millis(200))).await;
                    continue;
                }
            };
            match tokio::time::timeout(remaining, self.inner.next_delivery(&session)).await {
                Err(_) => return Ok(None),
                Ok(Ok(delivery)) => return Ok(Some(self.inner.raw(delivery))),
                Ok(Err(err)) => {
                    self.inner.discard(session.generation).await;
                    failure = Some(err);
                }
            }
        }
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let inner = &self.inner;
        inner
            .with_session(|session| async move {
                let channel = bounded("open channel", OP_TIMEOUT, session.channel()).await?;
                let pending = topology::message_count(&channel, &inner.names.queue).await?;
                let dead = topology::message_count(&channel, &inner.names.dlq).await?;
                let _ = tokio::time::timeout(OP_TIMEOUT, channel.close(200, "OK".into())).await;
                Ok(Depth { pending, dead })
            })
            .await
    }
}
