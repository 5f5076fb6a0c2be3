//! One conformance suite for every queue backend: the same scenarios run unchanged on the
//! db backend (SQLite and PostgreSQL), RabbitMQ and SQS (moto), each on fresh queues.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
use shared::db::entities::processed_messages;
use shared::db::inbox;
use shared::domain::DeploymentId;
use shared::queue::{Envelope, MessageKind, Selection, Settled};
use tests::queue::{Backend, TestQueue};
use worker::dlq::{self, DlqCommand};

const WAIT: Duration = Duration::from_secs(15);
const BRIEFLY: Duration = Duration::from_millis(1500);

fn deploy() -> Envelope {
    Envelope::new(
        MessageKind::Deploy,
        DeploymentId::new(),
        serde_json::json!({"k": 1}),
    )
}

async fn publishes_consumes_and_acks(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let sent = deploy();

    t.queue.publish(&sent, None).await.expect("publish");
    let delivery = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("a message");

    assert_eq!(delivery.envelope(), &sent);
    assert_eq!(delivery.deliveries(), 1);
    delivery.ack().await.expect("ack");
    assert!(t.queue.receive(BRIEFLY).await.expect("receive").is_none());
    assert_eq!(t.queue.depth().await.expect("depth").pending, 0);
    t.cleanup().await;
}

/// How much earlier than its delay a backend may deliver a message, by this process's clock:
/// RabbitMQ judges the delay by the Erlang VM's clock, which runs up to 1 % fast while it
/// catches up with a step of the host's clock (docs/design/queue.md, "Short delays"); the
/// other backends by this host's clock.
fn broker_clock_slack(backend: Backend, delay: Duration) -> Duration {
    match backend {
        Backend::RabbitMq => delay / 100,
        _ => Duration::ZERO,
    }
}

async fn delays_delivery_without_delivering_early(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let delay = Duration::from_secs(3);
    let earliest = delay - broker_clock_slack(backend, delay);
    let started = Instant::now();

    t.queue
        .publish(&deploy(), Some(delay))
        .await
        .expect("publish");

    assert!(
        t.queue
            .receive(Duration::from_secs(1))
            .await
            .expect("receive")
            .is_none()
    );
    let delivery = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("delayed message");
    let took = started.elapsed();
    println!("{backend:?}: delayed {delay:?}, delivered after {took:?} (not before {earliest:?})");
    assert!(took >= earliest, "early: {took:?}");
    delivery.ack().await.expect("ack");
    t.cleanup().await;
}

async fn retries_with_the_next_attempt(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let sent = deploy();
    t.queue.publish(&sent, None).await.expect("publish");
    let first = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("message");

    let settled = first
        .retry_later(Duration::from_secs(1), "provider timed out")
        .await;

    assert_eq!(settled.expect("retry"), Settled::Retried);
    let again = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("retried message");
    let envelope = again.envelope().clone();
    assert_eq!(envelope.attempt, 1);
    assert_eq!(envelope.correlation_id, sent.correlation_id);
    assert_ne!(envelope.message_id, sent.message_id);
    again.ack().await.expect("ack");
    t.cleanup().await;
}

async fn dead_letters_after_max_attempts(backend: Backend) {
    let t = TestQueue::new(backend, 3).await;
    let sent = deploy();
    t.queue.publish(&sent, None).await.expect("publish");

    let mut tries = 0;
    loop {
        let delivery = t
            .queue
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("message");
        tries += 1;
        let outcome = delivery
            .retry_later(Duration::ZERO, "boom")
            .await
            .expect("settle");
        if outcome == Settled::DeadLettered {
            break;
        }
    }

    assert_eq!(tries, 3);
    let letters = t.queue.list(10).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.kind.as_deref(), Some("deploy"));
    assert_eq!(letter.deployment_id, Some(sent.deployment_id.0));
    assert!(letter.attempts >= 3, "{letter:?}");
    let error = letter.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("gave up after 3 attempts: boom"), "{error}");
    assert!(letter.dead_lettered_at.is_some());
    assert!(t.queue.receive(BRIEFLY).await.expect("receive").is_none());
    t.cleanup().await;
}

async fn dead_letters_undecodable_payloads(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;

    t.queue
        .publish_bytes(b"{not an envelope".to_vec(), None)
        .await
        .expect("publish");

    assert!(
        t.queue
            .receive(Duration::from_secs(3))
            .await
            .expect("receive")
            .is_none()
    );
    let letters = t.queue.list(10).await.expect("list");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let error = letters[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("undecodable"), "{error}");
    assert_eq!(letters[0].kind, None);
    assert_eq!(letters[0].body, b"{not an envelope");
    t.cleanup().await;
}

async fn redelivers_when_a_consumer_dies(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let sent = deploy();
    t.queue.publish(&sent, None).await.expect("publish");
    let doomed = t.another_consumer().await;
    let taken = doomed
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("message");
    assert_eq!(taken.envelope().message_id, sent.message_id);

    drop(taken);
    drop(doomed);

    let again = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("redelivered");
    assert_eq!(again.envelope().message_id, sent.message_id);
    assert!(again.deliveries() >= 2, "deliveries {}", again.deliveries());
    again.ack().await.expect("ack");
    t.cleanup().await;
}

async fn replays_dead_letters_with_attempts_reset(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let sent = deploy();
    t.queue.publish(&sent, None).await.expect("publish");
    let first = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("message");
    first
        .retry_later(Duration::ZERO, "transient")
        .await
        .expect("retry");
    let second = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("retried");
    second
        .dead_letter("permanent: invalid spec")
        .await
        .expect("dead-letter");
    let id = t.queue.list(10).await.expect("list").remove(0).id;

    let replayed = t
        .queue
        .replay(&Selection::Ids(vec![id.clone()]), "alice")
        .await;

    assert_eq!(replayed.expect("replay"), vec![id]);
    assert!(t.queue.list(10).await.expect("list").is_empty());
    let back = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("replayed message");
    let envelope = back.envelope().clone();
    assert_eq!(envelope.attempt, 0);
    assert_eq!(envelope.correlation_id, sent.correlation_id);
    assert_eq!(envelope.replayed.map(|r| r.by).as_deref(), Some("alice"));
    back.ack().await.expect("ack");
    t.cleanup().await;
}

async fn purges_dead_letters(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    for _ in 0..2 {
        t.queue.publish(&deploy(), None).await.expect("publish");
        let d = t
            .queue
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("message");
        d.dead_letter("permanent").await.expect("dead-letter");
    }
    let letters = t.queue.list(10).await.expect("list");
    assert_eq!(letters.len(), 2);
    let (first, second) = (letters[0].id.clone(), letters[1].id.clone());

    let purged = t.queue.purge(&Selection::Ids(vec![first.clone()])).await;

    assert_eq!(purged.expect("purge"), vec![first]);
    let left: Vec<String> = t
        .queue
        .list(10)
        .await
        .expect("list")
        .into_iter()
        .map(|l| l.id)
        .collect();
    assert_eq!(left, vec![second]);
    assert_eq!(
        t.queue.purge(&Selection::All).await.expect("purge").len(),
        1
    );
    assert!(t.queue.list(10).await.expect("list").is_empty());
    assert!(t.queue.receive(BRIEFLY).await.expect("receive").is_none());
    t.cleanup().await;
}

async fn duplicates_are_harmless_through_the_inbox(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let sent = deploy();
    t.queue.publish(&sent, None).await.expect("publish");
    t.queue
        .publish(&sent, None)
        .await
        .expect("publish the duplicate");

    let mut handled = 0;
    for _ in 0..2 {
        let delivery = t
            .queue
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("message");
        let txn = t.db.conn.begin().await.expect("begin");
        if inbox::claim(&txn, delivery.envelope().message_id)
            .await
            .expect("claim")
        {
            handled += 1;
        }
        txn.commit().await.expect("commit");
        delivery.ack().await.expect("ack");
    }

    assert_eq!(handled, 1);
    let rows = processed_messages::Entity::find()
        .count(&t.db.conn)
        .await
        .expect("count");
    assert_eq!(rows, 1);
    t.cleanup().await;
}

async fn dlq_command_lists_json_and_replays(backend: Backend) {
    let t = TestQueue::new(backend, 8).await;
    let sent = deploy();
    t.queue.publish(&sent, None).await.expect("publish");
    let d = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("message");
    d.dead_letter("permanent: bad repository")
        .await
        .expect("dead-letter");

    let mut out = Vec::new();
    let list = DlqCommand::List {
        limit: 10,
        json: true,
    };
    dlq::run(t.queue.as_ref(), list, &mut out)
        .await
        .expect("dlq list");

    let json: Vec<HashMap<String, serde_json::Value>> =
        serde_json::from_slice(&out).expect("json array");
    assert_eq!(json.len(), 1);
    let mut keys: Vec<&str> = json[0].keys().map(String::as_str).collect();
    keys.sort_unstable();
    let expected = [
        "attempts",
        "dead_lettered_at",
        "deployment_id",
        "id",
        "kind",
        "last_error",
        "queue",
    ];
    assert_eq!(keys, expected);
    assert_eq!(json[0]["deployment_id"], sent.deployment_id.0.to_string());
    let id = json[0]["id"].as_str().expect("id").to_owned();
    let mut table = Vec::new();
    let list = DlqCommand::List {
        limit: 10,
        json: false,
    };
    dlq::run(t.queue.as_ref(), list, &mut table)
        .await
        .expect("dlq table");
    assert!(String::from_utf8_lossy(&table).contains(&id));
    let replay = DlqCommand::Replay {
        ids: vec![],
        all: true,
        dry_run: false,
        by: "ops".into(),
    };
    dlq::run(t.queue.as_ref(), replay, &mut Vec::new())
        .await
        .expect("dlq replay");
    let back = t
        .queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("replayed");
    assert_eq!(back.envelope().message_id, sent.message_id);
    back.ack().await.expect("ack");
    t.cleanup().await;
}

macro_rules! conformance {
    ($($backend:ident => $variant:expr),* $(,)?) => {$(
        mod $backend {
            use super::*;
            conformance!(@tests $variant;
                publishes_consumes_and_acks,
                delays_delivery_without_delivering_early,
                retries_with_the_next_attempt,
                dead_letters_after_max_attempts,
                dead_letters_undecodable_payloads,
                redelivers_when_a_consumer_dies,
                replays_dead_letters_with_attempts_reset,
                purges_dead_letters,
                duplicates_are_harmless_through_the_inbox,
                dlq_command_lists_json_and_replays,
            );
        }
    )*};
    (@tests $variant:expr; $($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            super::$scenario($variant).await;
        }
    )*};
}

conformance! {
    db_sqlite => Backend::DbSqlite,
    db_postgres => Backend::DbPostgres,
    rabbitmq => Backend::RabbitMq,
    sqs => Backend::Sqs,
}
