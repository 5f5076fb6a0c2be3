//! Names, declarations and message headers of the RabbitMQ backend. Declarations are
//! idempotent: the same arguments every time, so any process may run them at start-up.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use super::OP_TIMEOUT;
use crate::queue::{QueueError, bounded};

/// The names derived from the main queue's.
#[derive(Debug, Clone)]
pub(super) struct Names {
    /// The main queue.
    pub queue: String,
    /// Dead-letter exchange.
    pub dlx: String,
    /// Dead-letter queue (also the routing key on the exchange).
    pub dlq: String,
}

impl Names {
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            dlx: format!("{queue}.dlx"),
            dlq: format!("{queue}.dlq"),
        }
    }

    /// The delay queue of `seconds`.
    pub fn delay(&self, seconds: u64) -> String {
        format!("{}.delay.{seconds}s", self.queue)
    }
}

/// The bucket a delay goes to, rounded up (never early): whole seconds up to a minute,
/// whole minutes up to an hour, whole hours beyond. Bounded set of delay queues.
pub(super) fn delay_bucket(delay: Duration) -> u64 {
    let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    let round_up = |unit: u64| seconds.div_ceil(unit) * unit;
    match seconds {
        0..=60 => seconds.max(1),
        61..=3600 => round_up(60),
        _ => round_up(3600),
    }
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

fn quorum_args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    table.insert("x-queue-type".into(), text("quorum"));
    for (key, value) in entries {
        table.insert((*key).into(), value.clone());
    }
    table
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the main queue, the dead-letter exchange and queue, and their binding.
pub(super) async fn declare(
    channel: &Channel,
    names: &Names,
    max_attempts: u32,
) -> Result<(), QueueError> {
    let exchange = channel.exchange_declare(
        names.dlx.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    );
    bounded("declare the dead-letter exchange", OP_TIMEOUT, exchange).await?;
    let dlq = channel.queue_declare(names.dlq.as_str().into(), durable(), quorum_args(&[]));
    bounded("declare the dead-letter queue", OP_TIMEOUT, dlq).await?;
    let bind = channel.queue_bind(
        names.dlq.as_str().into(),
        names.dlx.as_str().into(),
        names.dlq.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    bounded("bind the dead-letter queue", OP_TIMEOUT, bind).await?;
    // One more than max_attempts: our own check dead-letters first with a clearer reason;
    // the broker's limit is the backstop for consumers that die before they can.
    let limit = i32::try_from(max_attempts + 1).unwrap_or(i32::MAX);
    let args = quorum_args(&[
        ("x-dead-letter-exchange", text(&names.dlx)),
        ("x-dead-letter-routing-key", text(&names.dlq)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
        ("x-delivery-limit", AMQPValue::LongInt(limit)),
    ]);
    let main = channel.queue_declare(names.queue.as_str().into(), durable(), args);
    bounded("declare the queue", OP_TIMEOUT, main).await?;
    Ok(())
}

/// Declares the delay queue `name` whose messages go back to the main queue after
/// `seconds`.
pub(super) async fn declare_delay(
    channel: &Channel,
    names: &Names,
    name: &str,
    seconds: u64,
) -> Result<(), QueueError> {
    let ttl = i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let args = quorum_args(&[
        ("x-message-ttl", AMQPValue::LongLongInt(ttl)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text(&names.queue)),
        ("x-dead-letter-strategy", text("at-least-once")),
        ("x-overflow", text("reject-publish")),
    ]);
    let declare = channel.queue_declare(name.into(), durable(), args);
    bounded("declare a delay queue", OP_TIMEOUT, declare).await?;
    Ok(())
}

/// Messages ready in `queue` (passive declare: fails if it does not exist).
pub(super) async fn message_count(channel: &Channel, queue: &str) -> Result<u64, QueueError> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declare = channel.queue_declare(queue.into(), options, FieldTable::default());
    let declared = bounded("inspect a queue", OP_TIMEOUT, declare).await?;
    Ok(u64::from(declared.message_count()))
}

/// Headers recording why and when a message was dead-lettered by us.
pub(super) fn dead_letter_headers(reason: &str, attempts: u32, at: DateTime<Utc>) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert("x-hokusai-error".into(), text(reason));
    headers.insert("x-hokusai-dead-at".into(), text(&at.to_rfc3339()));
    headers.insert(
        "x-hokusai-attempts".into(),
        AMQPValue::LongLongInt(i64::from(attempts)),
    );
    headers
}

fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties.headers().as_ref()?.inner().get(key)
}

/// A string header.
pub(super) fn header_str(properties: &BasicProperties, key: &str) -> Option<String> {
    match header(properties, key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// An integer header.
pub(super) fn header_int(properties: &BasicProperties, key: &str) -> Option<u32> {
    let value = match header(properties, key)? {
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        _ => return None,
    };
    u32::try_from(value).ok()
}

/// The transport id we set on publish, or a stand-in for foreign messages.
pub(super) fn message_id(properties: &BasicProperties, tag: u64) -> String {
    properties
        .message_id()
        .as_ref()
        .map_or_else(|| format!("delivery-{tag}"), |id| id.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_into_a_bounded_set_of_buckets() {
        assert_eq!(delay_bucket(Duration::from_millis(1)), 1);
        assert_eq!(delay_bucket(Duration::from_millis(1500)), 2);
        assert_eq!(delay_bucket(Duration::from_secs(60)), 60);
        assert_eq!(delay_bucket(Duration::from_secs(61)), 120);
        assert_eq!(delay_bucket(Duration::from_secs(3601)), 7200);
    }
}
