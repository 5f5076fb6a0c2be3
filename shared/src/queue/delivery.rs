//! Deliveries: a message handed to a consumer, to be settled exactly once.
//!
//! A backend produces a [`RawDelivery`] (bytes, how often they were delivered, and a
//! [`Settle`] handle that knows how to ack, republish or dead-letter on that backend).
//! [`RawDelivery::screen`] turns it into a [`Delivery`] carrying a decoded [`Envelope`], or
//! dead-letters it with the reason. A delivery dropped without being settled is treated as a
//! crashed consumer: the message comes back after its lease (or at once on RabbitMQ).

use std::time::Duration;

use async_trait::async_trait;
use sea_orm::{ConnectionTrait, DbErr};

use super::{Envelope, Event, QueueError, count};
use crate::db::claim::Claim;
use crate::db::entities::queue_messages;

/// How a backend settles one delivery. Each method consumes the handle: a delivery is
/// settled once.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Removes the message: it was handled and the handler's transaction committed.
    async fn ack(self: Box<Self>) -> Result<(), QueueError>;
    /// Publishes `body` (the next attempt) after `delay`, then removes this message.
    async fn retry(
        self: Box<Self>,
        body: Vec<u8>,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError>;
    /// Moves the message to the dead letters with `reason` and the attempts made.
    async fn dead_letter(
        self: Box<Self>,
        body: Vec<u8>,
        reason: &str,
        attempts: u32,
    ) -> Result<(), QueueError>;
    /// The embedded queue's claim on the message's row, which a handler writing to the same
    /// database deletes in its own transaction ([`Delivery::ack_within`]); from then on the
    /// lease is no longer extended. `None` on the brokers, whose acks follow the commit.
    fn claim_for_commit(&self) -> Option<&Claim<queue_messages::Entity>> {
        None
    }
}

/// A message as the backend delivered it, not yet decoded.
pub struct RawDelivery {
    /// The payload.
    pub body: Vec<u8>,
    /// Deliveries of this message so far, this one included.
    pub deliveries: u32,
    /// The queue's `max_attempts`.
    pub max_attempts: u32,
    /// The backend's settle handle.
    pub settle: Box<dyn Settle>,
}

impl std::fmt::Debug for RawDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawDelivery")
            .field("bytes", &self.body.len())
            .field("deliveries", &self.deliveries)
            .finish_non_exhaustive()
    }
}

impl RawDelivery {
    /// The decoded delivery, or `None` after dead-lettering a payload that is no envelope or
    /// a message delivered more than `max_attempts` times without being settled.
    /// `queue` names the queue it came from, for the metrics.
    pub async fn screen(self, queue: &str) -> Result<Option<Delivery>, QueueError> {
        let envelope = match Envelope::decode(&self.body) {
            Ok(envelope) => envelope,
            Err(err) => {
                let reason = err.to_string();
                tracing::warn!(%reason, "dead-lettering an undecodable message");
                self.settle
                    .dead_letter(self.body, &reason, self.deliveries)
                    .await?;
                count(queue, Event::DeadLettered);
                return Ok(None);
            }
        };
        if self.deliveries > self.max_attempts {
            let reason = format!(
                "delivered {} times without being settled (does the consumer crash on it?)",
                self.deliveries
            );
            tracing::warn!(message_id = %envelope.message_id, %reason, "dead-lettering");
            let attempts = self.deliveries.max(envelope.attempt.saturating_add(1));
            self.settle
                .dead_letter(self.body, &reason, attempts)
                .await?;
            count(queue, Event::DeadLettered);
            return Ok(None);
        }
        Ok(Some(Delivery {
            queue: queue.to_owned(),
            envelope,
            body: self.body,
            deliveries: self.deliveries,
            max_attempts: self.max_attempts,
            settle: self.settle,
        }))
    }
}

/// What [`Delivery::retry_later`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Republished with `attempt + 1`.
    Retried,
    /// The attempts were used up: dead-lettered instead.
    DeadLettered,
}

/// A command handed to a consumer. Settle it with [`ack`](Self::ack) after the step's
/// transaction committed, [`retry_later`](Self::retry_later) on a transient failure, or
/// [`dead_letter`](Self::dead_letter) on a permanent one.
pub struct Delivery {
    queue: String,
    envelope: Envelope,
    body: Vec<u8>,
    deliveries: u32,
    max_attempts: u32,
    settle: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("envelope", &self.envelope)
            .field("deliveries", &self.deliveries)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The command.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// Deliveries of this message so far, this one included (above 1 means redelivered).
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// Done: removes the message.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle.ack().await?;
        count(&self.queue, Event::Consumed);
        Ok(())
    }

    /// Removes the message as part of `txn`, a transaction on the embedded queue's own
    /// database: the message leaves the queue if and only if the handler's writes commit,
    /// so nothing needs an inbox row or an ack afterwards ([`Delivery::acked_within`] once
    /// committed). `Some(false)`: this delivery's claim was lost (its lease expired and
    /// another consumer holds the message now) — roll back and leave the message to it.
    /// `None`: the backend is a broker; ack after the commit instead. Once called, the
    /// lease is no longer extended: after a rollback settle the delivery promptly (retry,
    /// dead letter) or drop it.
    pub async fn ack_within<C: ConnectionTrait>(&self, txn: &C) -> Result<Option<bool>, DbErr> {
        let Some(claim) = self.settle.claim_for_commit() else {
            return Ok(None);
        };
        let deleted = claim.guard_delete().exec(txn).await?;
        Ok(Some(deleted.rows_affected == 1))
    }

    /// The claim on the embedded queue's row, for a handler that deletes the row in a
    /// statement of its own making (`db::one_statement`) rather than through
    /// [`Delivery::ack_within`]; the same rules follow (the lease is no longer extended,
    /// [`Delivery::acked_within`] once written). `None` on the brokers.
    pub fn claim_for_commit(&self) -> Option<&Claim<queue_messages::Entity>> {
        self.settle.claim_for_commit()
    }

    /// The transaction in which [`Delivery::ack_within`] removed the message committed:
    /// the delivery is settled (its lease is no longer extended).
    pub fn acked_within(self) {
        count(&self.queue, Event::Consumed);
    }

    /// Transient failure: republishes the command with `attempt + 1` after `delay`, or
    /// dead-letters it when that attempt would exceed `max_attempts`.
    pub async fn retry_later(self, delay: Duration, error: &str) -> Result<Settled, QueueError> {
        let next = self.envelope.retry();
        if next.attempt >= self.max_attempts {
            let reason = format!("gave up after {} attempts: {error}", next.attempt);
            let attempts = next.attempt.max(self.deliveries);
            self.settle
                .dead_letter(self.body, &reason, attempts)
                .await?;
            count(&self.queue, Event::DeadLettered);
            return Ok(Settled::DeadLettered);
        }
        self.settle.retry(next.to_bytes(), delay, error).await?;
        count(&self.queue, Event::Retried);
        Ok(Settled::Retried)
    }

    /// Infrastructure failed under the handler (database unreachable, step timeout): the
    /// same command comes back after `delay` without spending an attempt, however often.
    pub async fn postpone(self, delay: Duration, error: &str) -> Result<(), QueueError> {
        let next = self.envelope.postpone();
        self.settle.retry(next.to_bytes(), delay, error).await?;
        count(&self.queue, Event::Retried);
        Ok(())
    }

    /// Permanent failure: moves the message to the dead letters, keeping `reason`.
    pub async fn dead_letter(self, reason: &str) -> Result<(), QueueError> {
        let attempts = self.envelope.attempt.saturating_add(1).max(self.deliveries);
        self.settle.dead_letter(self.body, reason, attempts).await?;
        count(&self.queue, Event::DeadLettered);
        Ok(())
    }
}

/// A background task (lease or visibility extension) that stops when dropped, so a
/// delivery that is settled or abandoned stops extending its lease.
#[derive(Debug)]
pub(crate) struct KeepAlive(tokio::task::JoinHandle<()>);

impl KeepAlive {
    /// Runs `extend` every `every` until dropped.
    pub(crate) fn spawn<F, Fut>(every: Duration, extend: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                extend().await;
            }
        }))
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}
