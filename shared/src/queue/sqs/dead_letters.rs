//! Dead-letter operations on SQS: one sweep of the DLQ per operation. Messages are received
//! with a visibility timeout long enough for the sweep; those acted upon are sent on (for a
//! replay) and deleted, the others are made visible again at the end. No
//! `StartMessageMoveTask`, so it works on any SQS implementation.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::Message;
use chrono::DateTime;
use uuid::Uuid;

use super::{ATTEMPTS, DEAD_AT, ERROR, ID, OP_TIMEOUT, SqsQueue, call, message_attr};
use crate::queue::{DeadLetter, DeadLetters, QueueError, Selection, replay_body};

/// How long swept messages stay invisible to other sweeps.
const SWEEP_VISIBILITY: i32 = 60;

impl SqsQueue {
    /// Visits up to `limit` dead letters; `act` (if any) is applied to the selected ones.
    /// Returns the dead letters visited (no `act`) or acted upon.
    async fn sweep(
        &self,
        limit: usize,
        selection: &Selection,
        replay_by: Option<&str>,
        act: bool,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let inner = &self.inner;
        let (mut seen, mut out, mut release) = (HashSet::new(), Vec::new(), Vec::new());
        while out.len() < limit {
            let request = inner
                .client
                .receive_message()
                .queue_url(&inner.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .visibility_timeout(SWEEP_VISIBILITY)
                .message_attribute_names("All")
                .send();
            let received = call("read dead letters", OP_TIMEOUT, request).await?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                break;
            }
            for message in messages {
                let Some(receipt) = message.receipt_handle().map(str::to_owned) else {
                    continue;
                };
                let letter = self.describe(&message);
                let fresh = seen.insert(letter.id.clone());
                if !act || !fresh || !selection.contains(&letter.id) || out.len() >= limit {
                    if !act && fresh && out.len() < limit {
                        out.push(letter);
                    }
                    release.push(receipt);
                    continue;
                }
                if let Some(by) = replay_by {
                    let body = replay_body(&letter.body, by);
                    let id = [(ID, Uuid::now_v7().to_string())];
                    inner
                        .send(&inner.queue_url, &body, Duration::ZERO, &id)
                        .await?;
                }
                inner.delete(&inner.dlq_url, &receipt).await?;
                out.push(letter);
            }
        }
        for receipt in release {
            let request = inner
                .client
                .change_message_visibility()
                .queue_url(&inner.dlq_url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send();
            call("release a dead letter", OP_TIMEOUT, request).await?;
        }
        Ok(out)
    }

    fn describe(&self, message: &Message) -> DeadLetter {
        let id = message_attr(message, ID)
            .or_else(|| message.message_id().map(str::to_owned))
            .unwrap_or_default();
        let attempts = message_attr(message, ATTEMPTS)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let body = message.body().unwrap_or_default().as_bytes().to_vec();
        let last_error = message_attr(message, ERROR).or_else(|| {
            Some("moved by the SQS redrive policy (maxReceiveCount exceeded)".to_owned())
        });
        let dead_lettered_at = message_attr(message, DEAD_AT)
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.to_utc());
        DeadLetter {
            last_error,
            dead_lettered_at,
            ..DeadLetter::describe(id, &self.inner.options.name, body, attempts)
        }
    }
}

#[async_trait]
impl DeadLetters for SqsQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        self.sweep(limit, &Selection::All, None, false).await
    }

    async fn replay(&self, selection: &Selection, by: &str) -> Result<Vec<String>, QueueError> {
        let replayed = self.sweep(usize::MAX, selection, Some(by), true).await?;
        Ok(replayed.into_iter().map(|d| d.id).collect())
    }

    async fn purge(&self, selection: &Selection) -> Result<Vec<String>, QueueError> {
        let purged = self.sweep(usize::MAX, selection, None, true).await?;
        Ok(purged.into_iter().map(|d| d.id).collect())
    }
}
