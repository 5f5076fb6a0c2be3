//! Dead-letter operations on RabbitMQ. A queue cannot be browsed, so each operation sweeps
//! `{name}.dlq` once on its own channel with `basic.get` (manual ack): messages it acts on
//! are acked (after a confirmed republish, for a replay); the others are handed back
//! unchanged when the channel closes. The dead-letter queue has no delivery limit, so
//! looking at a message never loses it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

use super::{OP_TIMEOUT, RabbitMqQueue, Session, properties, topology};
use crate::queue::{DeadLetter, DeadLetters, QueueError, Selection, bounded, replay_body};

/// What a sweep does with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Only look.
    Keep,
    /// Delete it.
    Purge,
    /// Put it back on the main queue.
    Replay,
}

impl RabbitMqQueue {
    /// Visits up to `limit` dead letters, applying `action` to those `selection` picks.
    /// Returns the dead letters visited (`Keep`) or acted upon (otherwise).
    async fn sweep(
        &self,
        limit: usize,
        selection: &Selection,
        action: Action,
        by: &str,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let session = self.inner.session().await?;
        let channel = bounded("open channel", OP_TIMEOUT, session.channel()).await?;
        let count = topology::message_count(&channel, &self.inner.names.dlq).await?;
        let (mut out, mut visited, mut empty_polls) = (Vec::new(), 0_u64, 0);
        while out.len() < limit {
            let get = channel.basic_get(
                self.inner.names.dlq.as_str().into(),
                BasicGetOptions { no_ack: false },
            );
            let Some(message) = bounded("read a dead letter", OP_TIMEOUT, get).await? else {
                // Messages another sweep just handed back may not be ready yet.
                empty_polls += 1;
                if visited >= count || empty_polls > 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            visited += 1;
            let letter = self.describe(&message.delivery);
            if action == Action::Keep {
                out.push(letter);
                continue;
            }
            if !selection.contains(&letter.id) {
                continue;
            }
            if action == Action::Replay {
                let body = replay_body(&letter.body, by);
                let props = properties(&Uuid::now_v7().to_string(), FieldTable::default());
                self.inner
                    .publish("", &self.inner.names.queue, &body, props)
                    .await?;
            }
            let ack = message.delivery.acker.ack(BasicAckOptions::default());
            bounded("remove a dead letter", OP_TIMEOUT, ack).await?;
            out.push(letter);
        }
        // Hands the messages we only looked at back to the queue, and waits (briefly) until
        // the queue counts them again so the next operation sees them.
        let _ = tokio::time::timeout(OP_TIMEOUT, channel.close(200, "OK".into())).await;
        let kept = visited
            - if action == Action::Keep {
                0
            } else {
                out.len() as u64
            };
        self.wait_until_ready(&session, kept).await;
        Ok(out)
    }

    async fn wait_until_ready(&self, session: &Session, kept: u64) {
        if kept == 0 {
            return;
        }
        let Ok(channel) = bounded("open channel", OP_TIMEOUT, session.channel()).await else {
            return;
        };
        for _ in 0..20 {
            match topology::message_count(&channel, &self.inner.names.dlq).await {
                Ok(ready) if ready < kept => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => break,
            }
        }
        let _ = tokio::time::timeout(OP_TIMEOUT, channel.close(200, "OK".into())).await;
    }

    fn describe(&self, delivery: &Delivery) -> DeadLetter {
        let props = &delivery.properties;
        let deliveries = topology::header_int(props, "x-hokusai-attempts")
            .or_else(|| topology::header_int(props, "x-delivery-count"))
            .unwrap_or(0);
        let last_error = topology::header_str(props, "x-hokusai-error").or_else(|| {
            topology::header_str(props, "x-first-death-reason")
                .map(|reason| format!("dead-lettered by RabbitMQ: {reason}"))
        });
        let dead_lettered_at = topology::header_str(props, "x-hokusai-dead-at")
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.to_utc());
        DeadLetter {
            last_error,
            dead_lettered_at,
            ..DeadLetter::describe(
                topology::message_id(props, delivery.delivery_tag),
                &self.inner.names.queue,
                delivery.data.clone(),
                deliveries,
            )
        }
    }
}

#[async_trait]
impl DeadLetters for RabbitMqQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.sweep(limit, &Selection::All, Action::Keep, "").await
    }

    async fn replay(&self, selection: &Selection, by: &str) -> Result<Vec<String>, QueueError> {
        let replayed = self
            .sweep(usize::MAX, selection, Action::Replay, by)
            .await?;
        Ok(replayed.into_iter().map(|d| d.id).collect())
    }

    async fn purge(&self, selection: &Selection) -> Result<Vec<String>, QueueError> {
        let purged = self.sweep(usize::MAX, selection, Action::Purge, "").await?;
        Ok(purged.into_iter().map(|d| d.id).collect())
    }
}
