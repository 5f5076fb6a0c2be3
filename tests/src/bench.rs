//! Measurements shared by the benchmark binaries (`scripts/bench`): the queue's raw
//! throughput (`bench-queue`), which `bench-pipeline` prints next to deployments per second
//! so the saga's overhead over the bare queue is visible in one run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shared::domain::DeploymentId;
use shared::queue::{Envelope, MessageKind, Queue};

/// Publisher tasks (messages in flight) per queue measurement.
pub const PUBLISHERS: usize = 32;
/// Consumer tasks per queue measurement.
pub const CONSUMERS: usize = 4;

/// Publishes `n` envelopes from [`PUBLISHERS`] tasks while [`CONSUMERS`] tasks receive and
/// ack; returns messages per second until the last one was consumed.
pub async fn queue_throughput(queue: Arc<dyn Queue>, n: usize) -> f64 {
    let consumed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let queue = queue.clone();
        let count = n / PUBLISHERS + usize::from(p < n % PUBLISHERS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                let e = Envelope::new(
                    MessageKind::CheckStatus,
                    DeploymentId::new(),
                    serde_json::Value::Null,
                );
                queue.publish(&e, None).await.expect("publish");
            }
        }));
    }
    for _ in 0..CONSUMERS {
        let (queue, consumed) = (queue.clone(), consumed.clone());
        tasks.push(tokio::spawn(async move {
            while consumed.load(Ordering::SeqCst) < n {
                if let Some(d) = queue
                    .receive(Duration::from_millis(200))
                    .await
                    .expect("receive")
                {
                    d.ack().await.expect("ack");
                    consumed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("bench task");
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The median of `values` (the upper one of an even count); `values` must not be empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
