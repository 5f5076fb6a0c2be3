//! The AWS SQS backend (`QUEUE_BACKEND=sqs`), through aws-sdk-sqs.
//!
//! - Each handler long-polls (up to 20 s, the caller's wait) for **one** message — a
//!   worker never receives more messages than it has free handlers, so no message waits
//!   invisible in a buffer. A message stays invisible to others for `lease` seconds, and
//!   its visibility is extended from the moment it is received until it is settled (a
//!   heartbeat per message); it is deleted only when the consumer acks, after its
//!   transaction committed. A consumer that dies stops extending: the message reappears.
//! - A request SQS refuses for the message itself (`InvalidParameterValue`, e.g. a body
//!   over the queue's `MaximumMessageSize`, 1 MiB at most) is [`QueueError::Rejected`]; anything else (throttling, network,
//!   credentials, timeouts) is [`QueueError::Unavailable`].
//! - Delays use `DelaySeconds`. SQS caps them at 15 minutes, so a longer delay travels in
//!   hops: the message carries its due time (`hokusai-not-before`) and a consumer that
//!   receives it early re-sends it with the rest of the delay.
//! - The queue's redrive policy (`maxReceiveCount`) moves messages that keep failing to the
//!   DLQ; our own dead-lettering sends to the DLQ (with the reason in message attributes)
//!   and then deletes. DLQ replay is receive → send → delete, which works on AWS and on
//!   local SQS servers alike (moto has no `StartMessageMoveTask`).
//!
//! The queues themselves belong to infrastructure (Terraform); [`SqsQueue::provision`]
//! creates a pair with the right redrive policy for development and tests.

mod dead_letters;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    Message, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
};
use chrono::Utc;
use uuid::Uuid;

use super::delivery::KeepAlive;
use super::{Depth, Queue, QueueError, QueueOptions, RawDelivery, Settle};
use crate::config::QueueSettings;

/// Bound on every SQS call (long polls get their wait on top).
const OP_TIMEOUT: Duration = Duration::from_secs(20);
/// SQS's longest `DelaySeconds`.
const MAX_HOP: Duration = Duration::from_secs(900);
/// Transport id (stable while dead-lettered; what `dlq show` takes).
const ID: &str = "hokusai-id";
/// Due time (ms since the epoch) of a delay longer than one hop.
const NOT_BEFORE: &str = "hokusai-not-before";
const ERROR: &str = "hokusai-error";
const DEAD_AT: &str = "hokusai-dead-at";
const ATTEMPTS: &str = "hokusai-attempts";

/// An SQS-backed [`Queue`].
#[derive(Clone)]
pub struct SqsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    queue_url: String,
    dlq_url: String,
    options: QueueOptions,
}

/// Error codes with which SQS refuses a request for its content (the message itself), not
/// for the state of the service.
const REFUSED: [&str; 3] = [
    "InvalidParameterValue",
    "InvalidMessageContents",
    "InvalidAttributeValue",
];

/// Runs an SQS call with a timeout, keeping the SDK's full error context.
async fn call<T, E>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, QueueError>
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    match crate::runtime::within(what, limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            let shown = format!("{what}: {}", DisplayErrorContext(&err));
            if err.code().is_some_and(|code| REFUSED.contains(&code)) {
                Err(QueueError::Rejected(shown))
            } else {
                Err(QueueError::Unavailable(shown))
            }
        }
        Err(timed_out) => Err(QueueError::Unavailable(timed_out.to_string())),
    }
}

fn attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|err| QueueError::Config(err.to_string()))
}

fn message_attr(message: &Message, key: &str) -> Option<String> {
    message
        .message_attributes()?
        .get(key)?
        .string_value()
        .map(str::to_owned)
}

/// Whole seconds, rounded up (a delay is never shortened).
fn seconds_up(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

impl SqsQueue {
    /// The queues of `SQS_QUEUE_URL` and `SQS_DLQ_URL`, with credentials, region and
    /// endpoint found the AWS SDK's way (`AWS_REGION`, `AWS_ENDPOINT_URL`, ECS task role…).
    pub async fn connect(
        settings: &QueueSettings,
        options: QueueOptions,
    ) -> Result<Self, QueueError> {
        let required = |url: &Option<String>, name: &str| {
            url.clone().ok_or_else(|| {
                QueueError::Config(format!("{name} is required for QUEUE_BACKEND=sqs"))
            })
        };
        let queue_url = required(&settings.sqs_queue_url, "SQS_QUEUE_URL")?;
        let dlq_url = required(&settings.sqs_dlq_url, "SQS_DLQ_URL")?;
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self::new(Client::new(&config), queue_url, dlq_url, options))
    }

    /// The queue at `queue_url` with its dead-letter queue at `dlq_url`, on `client`.
    pub fn new(client: Client, queue_url: String, dlq_url: String, options: QueueOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                queue_url,
                dlq_url,
                options,
            }),
        }
    }

    /// Creates (or finds) `{name}-dlq` and `{name}` with a redrive policy to it after
    /// `max_attempts + 1` receives (our own check dead-letters first, with a clearer
    /// reason). Dots in `name` become dashes (SQS names allow none). Returns both URLs.
    pub async fn provision(
        client: &Client,
        name: &str,
        max_attempts: u32,
        visibility: Duration,
    ) -> Result<(String, String), QueueError> {
        let name = name.replace('.', "-");
        let create = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send();
        let dlq_url = call("create the DLQ", OP_TIMEOUT, create).await?.queue_url;
        let dlq_url = dlq_url.ok_or_else(|| QueueError::Unavailable("no DLQ URL".into()))?;
        let get = client
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send();
        let attributes = call("read the DLQ ARN", OP_TIMEOUT, get).await?;
        let arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .ok_or_else(|| QueueError::Unavailable("no DLQ ARN".into()))?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": arn,
            "maxReceiveCount": (max_attempts + 1).to_string(),
        });
        let create = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                seconds_up(visibility).to_string(),
            )
            .send();
        let queue_url = call("create the queue", OP_TIMEOUT, create)
            .await?
            .queue_url;
        let queue_url = queue_url.ok_or_else(|| QueueError::Unavailable("no queue URL".into()))?;
        Ok((queue_url, dlq_url))
    }
}

impl Inner {
    /// Sends `body` to `url` after `delay` (in hops beyond 15 minutes) with `attributes`.
    async fn send(
        &self,
        url: &str,
        body: &[u8],
        delay: Duration,
        attributes: &[(&str, String)],
    ) -> Result<(), QueueError> {
        let hop = delay.min(MAX_HOP);
        let mut request = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(String::from_utf8_lossy(body))
            .delay_seconds(seconds_up(hop));
        for (key, value) in attributes {
            request = request.message_attributes(*key, attribute(value)?);
        }
        if delay > MAX_HOP {
            let due =
                Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            let due = due.timestamp_millis().to_string();
            request = request.message_attributes(NOT_BEFORE, attribute(&due)?);
        }
        call("send a message", OP_TIMEOUT, request.send()).await?;
        Ok(())
    }

    async fn delete(&self, url: &str, receipt: &str) -> Result<(), QueueError> {
        let request = self
            .client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt);
        call("delete a message", OP_TIMEOUT, request.send()).await?;
        Ok(())
    }

    /// Long-polls up to `wait` (at most 20 s, SQS's longest) for one message.
    async fn poll(&self, wait: Duration) -> Result<Option<Message>, QueueError> {
        let wait_seconds = i32::try_from(wait.as_secs().min(20)).unwrap_or(20);
        let request = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(1)
            .wait_time_seconds(wait_seconds)
            .visibility_timeout(seconds_up(self.options.lease))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names("All")
            .send();
        let received = call("receive messages", OP_TIMEOUT + wait, request).await?;
        Ok(received.messages.unwrap_or_default().into_iter().next())
    }

    /// If `message` is a hop of a longer delay and not yet due, sends it on with the rest
    /// of its delay and deletes this copy; returns whether it did.
    async fn forward_if_early(&self, message: &Message, receipt: &str) -> Result<bool, QueueError> {
        let Some(due) = message_attr(message, NOT_BEFORE).and_then(|d| d.parse::<i64>().ok())
        else {
            return Ok(false);
        };
        let left = due - Utc::now().timestamp_millis();
        if left <= 0 {
            return Ok(false);
        }
        let id = message_attr(message, ID).unwrap_or_else(|| Uuid::now_v7().to_string());
        let body = message.body().unwrap_or_default().as_bytes();
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        self.send(&self.queue_url, body, left, &[(ID, id)]).await?;
        self.delete(&self.queue_url, receipt).await?;
        Ok(true)
    }

    fn raw(self: &Arc<Self>, message: Message, receipt: String) -> RawDelivery {
        let deliveries = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let id = message_attr(&message, ID)
            .or_else(|| message.message_id().map(str::to_owned))
            .unwrap_or_default();
        let inner = Arc::clone(self);
        let extend_receipt = receipt.clone();
        let keep_alive = KeepAlive::spawn(self.options.lease / 3, move || {
            let inner = Arc::clone(&inner);
            let receipt = extend_receipt.clone();
            async move {
                let request = inner
                    .client
                    .change_message_visibility()
                    .queue_url(&inner.queue_url)
                    .receipt_handle(receipt)
                    .visibility_timeout(seconds_up(inner.options.lease))
                    .send();
                if let Err(err) = call("extend visibility", OP_TIMEOUT, request).await {
                    tracing::warn!(%err, "could not extend a message's visibility");
                }
            }
        });
        RawDelivery {
            body: message.body.unwrap_or_default().into_bytes(),
            deliveries,
            max_attempts: self.options.max_attempts,
            settle: Box::new(SqsSettle {
                inner: Arc::clone(self),
                receipt,
                id,
                _keep_alive: keep_alive,
            }),
        }
    }
}

/// Settles one received message by its receipt handle.
struct SqsSettle {
    inner: Arc<Inner>,
    receipt: String,
    id: String,
    _keep_alive: KeepAlive,
}

#[async_trait]
impl Settle for SqsSettle {
    async fn ack(self: Box<Self>) -> Result<(), QueueError> {
        self.inner
            .delete(&self.inner.queue_url, &self.receipt)
            .await
    }

    async fn retry(
        self: Box<Self>,
        body: Vec<u8>,
        delay: Duration,
        _error: &str,
    ) -> Result<(), QueueError> {
        let attributes = [(ID, Uuid::now_v7().to_string())];
        let inner = &self.inner;
        inner
            .send(&inner.queue_url, &body, delay, &attributes)
            .await?;
        inner.delete(&inner.queue_url, &self.receipt).await
    }

    async fn dead_letter(
        self: Box<Self>,
        body: Vec<u8>,
        reason: &str,
        attempts: u32,
    ) -> Result<(), QueueError> {
        let attributes = [
            (ID, self.id.clone()),
            (ERROR, reason.to_owned()),
            (DEAD_AT, Utc::now().to_rfc3339()),
            (ATTEMPTS, attempts.to_string()),
        ];
        let inner = &self.inner;
        inner
            .send(&inner.dlq_url, &body, Duration::ZERO, &attributes)
            .await?;
        inner.delete(&inner.queue_url, &self.receipt).await
    }
}

#[async_trait]
impl Queue for SqsQueue {
    fn name(&self) -> &str {
        &self.inner.options.name
    }

    /// `DelaySeconds` is whole seconds, a delay rounded up (`seconds_up`).
    fn delay_resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn publish_bytes(
        &self,
        body: Vec<u8>,
        delay: Option<Duration>,
    ) -> Result<(), QueueError> {
        let attributes = [(ID, Uuid::now_v7().to_string())];
        let inner = &self.inner;
        inner
            .send(
                &inner.queue_url,
                &body,
                delay.unwrap_or_default(),
                &attributes,
            )
            .await
    }

    async fn fetch(&self, wait: Duration) -> Result<Option<RawDelivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Ok(None);
            }
            let Some(message) = self.inner.poll(remaining).await? else {
                // A wait under one second is a short poll (SQS counts whole seconds): nap
                // through the rest instead of spinning. No lock is held here.
                if remaining < Duration::from_secs(1) {
                    tokio::time::sleep(remaining).await;
                }
                continue;
            };
            let Some(receipt) = message.receipt_handle().map(str::to_owned) else {
                continue;
            };
            if self.inner.forward_if_early(&message, &receipt).await? {
                continue;
            }
            return Ok(Some(self.inner.raw(message, receipt)));
        }
    }

    async fn depth(&self) -> Result<Depth, QueueError> {
        let count = |url: String, names: Vec<QueueAttributeName>| async move {
            let request = self
                .inner
                .client
                .get_queue_attributes()
                .queue_url(url)
                .set_attribute_names(Some(names.clone()))
                .send();
            let output = call("read queue attributes", OP_TIMEOUT, request).await?;
            let attributes: HashMap<_, _> = output.attributes.unwrap_or_default();
            Ok::<u64, QueueError>(
                names
                    .iter()
                    .filter_map(|n| attributes.get(n)?.parse::<u64>().ok())
                    .sum(),
            )
        };
        let pending = count(
            self.inner.queue_url.clone(),
            vec![
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                QueueAttributeName::ApproximateNumberOfMessagesDelayed,
            ],
        )
        .await?;
        let dead = count(
            self.inner.dlq_url.clone(),
            vec![QueueAttributeName::ApproximateNumberOfMessages],
        )
        .await?;
        Ok(Depth { pending, dead })
    }
}
