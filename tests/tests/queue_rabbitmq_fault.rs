//! Fault test: RabbitMQ connections are force-closed (`rabbitmqctl close_all_connections`)
//! again and again while 1,000 messages are published and consumed. Every message must be
//! consumed at least once, none lost, and the queue must recover by itself. Its own test
//! binary, because it closes every connection on the broker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shared::domain::DeploymentId;
use shared::queue::{Envelope, MessageKind, Queue};
use tests::queue::{Backend, TestQueue};
use uuid::Uuid;

const MESSAGES: usize = 1_000;

async fn publish_all(queue: Arc<dyn Queue>) -> HashSet<Uuid> {
    let mut sent = HashSet::new();
    for _ in 0..MESSAGES {
        let envelope = Envelope::new(
            MessageKind::CheckStatus,
            DeploymentId::new(),
            serde_json::Value::Null,
        );
        // The backend republishes across reconnections itself; an error here means it gave
        // up, and the test's producer (like the relay) tries again later.
        while let Err(err) = queue.publish(&envelope, None).await {
            eprintln!("publish failed, retrying: {err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent.insert(envelope.message_id);
    }
    sent
}

async fn consume_until(queue: Arc<dyn Queue>, expected: usize) -> HashSet<Uuid> {
    let mut seen = HashSet::new();
    while seen.len() < expected {
        match queue.receive(Duration::from_secs(2)).await {
            Ok(Some(delivery)) => {
                let id = delivery.envelope().message_id;
                if delivery.ack().await.is_ok() {
                    seen.insert(id);
                }
            }
            Ok(None) => {}
            Err(err) => eprintln!("receive failed, retrying: {err}"),
        }
    }
    seen
}

/// Acknowledges what is still delivered until the queue stays quiet for 2 s; returns the
/// message ids it saw (duplicates of consumed messages, at least once).
async fn drain(queue: Arc<dyn Queue>) -> Vec<Uuid> {
    let mut ids = Vec::new();
    loop {
        match queue.receive(Duration::from_secs(2)).await {
            Ok(Some(delivery)) => {
                ids.push(delivery.envelope().message_id);
                delivery.ack().await.expect("ack a redelivery");
            }
            Ok(None) => return ids,
            Err(err) => eprintln!("receive failed while draining, retrying: {err}"),
        }
    }
}

/// Force-closes every connection on the broker every 300 ms until `done`, `rounds` times
/// at least; returns how many connections were closed.
async fn keep_closing_connections(rounds: usize, done: impl Fn() -> bool) -> usize {
    let mut closed = 0;
    let mut round = 0;
    while round < rounds || !done() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let output = tokio::process::Command::new("rabbitmqctl")
            .args(["close_all_connections", "test"])
            .output()
            .await
            .expect("rabbitmqctl must be installed for the fault test");
        assert!(output.status.success(), "rabbitmqctl failed: {output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        closed += stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("Closed ")?
                    .split(' ')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .unwrap_or(0);
        round += 1;
        if round >= 50 {
            break;
        }
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_connections_being_closed_under_load() {
    let t = TestQueue::new(Backend::RabbitMq, 8).await;
    let consumer = t.another_consumer().await;

    let publisher = tokio::spawn(publish_all(t.queue.clone()));
    let consumer = tokio::spawn(consume_until(consumer, MESSAGES));
    let closed = keep_closing_connections(5, || consumer.is_finished()).await;
    let outcome = tokio::time::timeout(Duration::from_secs(180), async {
        (
            publisher.await.expect("publisher"),
            consumer.await.expect("consumer"),
        )
    })
    .await;

    let (sent, seen) = outcome.expect("all messages consumed within 3 minutes");
    // At least once: deliveries whose ack a closed connection swallowed come again. Drain
    // them, then whatever the broker still holds (ready or dead-lettered) is orphaned.
    let redelivered = drain(t.queue.clone()).await;
    let depth = t
        .queue
        .depth()
        .await
        .expect("the queue recovered by itself");
    let orphaned = depth.pending + depth.dead;
    tests::fault::report(&format!(
        "fault rabbitmq: requested {} / terminal {} / orphaned {orphaned} / lost {} (messages \
         published / consumed / left on the broker / missing; {} redelivered after the \
         consumer finished; {closed} connections force-closed)",
        sent.len(),
        sent.intersection(&seen).count(),
        sent.difference(&seen).count(),
        redelivered.len()
    ));
    // The publisher's and the consumer's connections must both have been cut at least once
    // while traffic flowed (how many more depends on how fast the 1,000 messages go).
    assert!(closed >= 2, "only {closed} connections were force-closed");
    assert_eq!(sent.len(), MESSAGES);
    assert!(
        sent.is_subset(&seen),
        "lost {} messages",
        sent.difference(&seen).count()
    );
    let strays: Vec<&Uuid> = redelivered.iter().filter(|id| !sent.contains(id)).collect();
    assert!(strays.is_empty(), "never published: {strays:?}");
    assert_eq!(depth.dead, 0);
    assert_eq!(orphaned, 0, "messages left on the broker");
    t.cleanup().await;
}
