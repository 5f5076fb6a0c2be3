//! Settling RabbitMQ deliveries: ack on the delivery's channel; retry and dead-letter as a
//! confirmed publish (to a delay queue, or to the dead-letter exchange with the reason in
//! headers) followed by the ack, so a crash in between duplicates rather than loses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::types::{AMQPValue, FieldTable};
use uuid::Uuid;

use super::{Inner, OP_TIMEOUT, properties, topology};
use crate::queue::{QueueError, Settle, bounded};

/// Settles one delivery; an unsettled one is handed back to the broker when dropped.
pub(super) struct RabbitSettle {
    pub(super) inner: Arc<Inner>,
    pub(super) acker: Option<Acker>,
    pub(super) id: String,
}

impl RabbitSettle {
    async fn ack(&mut self) -> Result<(), QueueError> {
        let Some(acker) = self.acker.take() else {
            return Ok(());
        };
        bounded("ack", OP_TIMEOUT, acker.ack(BasicAckOptions::default()))
            .await
            .map(drop)
            .map_err(|err| QueueError::LeaseLost(err.to_string()))
    }
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(mut self: Box<Self>) -> Result<(), QueueError> {
        RabbitSettle::ack(&mut self).await
    }

    async fn retry(
        mut self: Box<Self>,
        body: Vec<u8>,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError> {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-hokusai-last-error".into(),
            AMQPValue::LongString(error.into()),
        );
        let id = Uuid::now_v7().to_string();
        self.inner
            .publish_delayed(&body, delay, properties(&id, headers))
            .await?;
        RabbitSettle::ack(&mut self).await
    }

    async fn dead_letter(
        mut self: Box<Self>,
        body: Vec<u8>,
        reason: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        let headers = topology::dead_letter_headers(reason, attempts, Utc::now());
        let names = &self.inner.names;
        self.inner
            .publish(&names.dlx, &names.dlq, &body, properties(&self.id, headers))
            .await?;
        RabbitSettle::ack(&mut self).await
    }
}

impl Drop for RabbitSettle {
    fn drop(&mut self) {
        if let (Some(acker), Ok(runtime)) =
            (self.acker.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = tokio::time::timeout(OP_TIMEOUT, acker.nack(options)).await;
            });
        }
    }
}
