//! Queue throughput benchmark (not a test): messages per second published *and* consumed
//! through each backend, next to raw lapin on the same broker in the same run.
//!
//! The raw-lapin baseline is the plain use of the library with what our RabbitMQ backend
//! does: the same quorum queue, [`PUBLISHERS`] tasks each waiting for its own publisher
//! confirm (`mandatory`), one consumer with prefetch [`CONSUMERS`] drained by [`CONSUMERS`]
//! tasks that ack manually (the worker sets prefetch = `WORKER_CONCURRENCY`, and so does
//! this benchmark for our backend). A second baseline publishes in batches of
//! [`CONFIRM_BATCH`] and waits for their confirms together, as the RabbitMQ tutorial on
//! publisher confirms measures; it shows what per-message confirms cost, it is not the
//! ratio's baseline. A message counts once its ack (and, for the DB queue, its commit)
//! returned. Every backend runs a warm-up of [`WARM_UP`] messages before its measured runs.
//!
//! The PostgreSQL queue is also measured with a quarter of the messages in every run, next
//! to the full count (`queue db (PostgreSQL) depth N vs N/4`; `--messages 20000` compares
//! 20,000 with 5,000): its throughput must not depend on the backlog.
//!
//! `scripts/bench queue [--messages N] [--sqs-messages N] [--runs R] [--json FILE]`. Each
//! backend runs `R` times on fresh queues; the median is printed, and with `--json` every
//! sample, median, ratio to raw lapin and target go to FILE (`scripts/bench`'s report). The
//! SQS row needs `HOKUSAI_TEST_SQS_ENDPOINT` (a moto server); without it the row says so.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shared::config::Secret;
use shared::domain::DeploymentId;
use shared::queue::Queue;
use shared::queue::rabbitmq::RabbitMqQueue;
use shared::queue::{Envelope, MessageKind};
use tests::bench::{
    CONSUMERS, Figure, LastAck, Of, PUBLISHERS, Target, json_arg, print_verdicts, queue_throughput,
};
use tests::queue::{Backend, TestQueue, amqp_url};

/// Messages per batch of the batched-confirm baseline.
const CONFIRM_BATCH: usize = 100;
/// Messages of the unmeasured warm-up before each backend's runs.
const WARM_UP: usize = 500;

/// How the raw-lapin publishers wait for confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirms {
    /// Each publisher task waits for its message's confirm (what our backend does).
    Each,
    /// Each publisher task publishes [`CONFIRM_BATCH`] messages, then awaits their confirms.
    Batched,
}

struct Args {
    messages: usize,
    sqs_messages: usize,
    runs: usize,
    json: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut parsed = Args {
        messages: 5_000,
        sqs_messages: 500,
        runs: 3,
        json: None,
    };
    let (json, argv) = json_arg();
    parsed.json = json;
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--messages", Some(n)) => parsed.messages = n,
            ("--sqs-messages", Some(n)) => parsed.sqs_messages = n,
            ("--runs", Some(n)) if n > 0 => parsed.runs = n,
            _ => {
                eprintln!(
                    "usage: bench-queue [--messages N] [--sqs-messages N] [--runs R] [--json FILE]"
                );
                std::process::exit(2);
            }
        }
    }
    parsed
}

/// The same workload with lapin alone on a quorum queue.
async fn through_raw_lapin(n: usize, confirms: Confirms) -> f64 {
    let name = format!("hk-bench-raw-{}", uuid::Uuid::new_v4().simple());
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let publisher = connection.create_channel().await.expect("channel");
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    publisher
        .queue_declare(name.as_str().into(), options, args)
        .await
        .expect("declare");
    let consumer_channel = connection.create_channel().await.expect("channel");
    consumer_channel
        .basic_qos(CONSUMERS as u16, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = consumer_channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let last = std::sync::Arc::new(LastAck::new(n));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (channel, name) = (publisher.clone(), name.clone());
        let count = n / PUBLISHERS + usize::from(p < n % PUBLISHERS);
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::with_capacity(CONFIRM_BATCH);
            for i in 0..count {
                let e = Envelope::new(
                    MessageKind::CheckStatus,
                    DeploymentId::new(),
                    serde_json::Value::Null,
                );
                let body = e.to_bytes();
                let props = BasicProperties::default().with_delivery_mode(2);
                let opts = BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                };
                let confirm = channel
                    .basic_publish("".into(), name.as_str().into(), opts, &body, props)
                    .await
                    .expect("publish");
                pending.push(confirm);
                if confirms == Confirms::Each || pending.len() == CONFIRM_BATCH || i + 1 == count {
                    for confirm in pending.drain(..) {
                        assert!(confirm.await.expect("confirm").is_ack());
                    }
                }
            }
        }));
    }
    for _ in 0..CONSUMERS {
        let (mut consumer, last) = (consumer.clone(), last.clone());
        tasks.push(tokio::spawn(async move {
            while !last.all_acked() {
                let next =
                    tokio::time::timeout(std::time::Duration::from_millis(200), consumer.next());
                let Ok(Some(delivery)) = next.await else {
                    continue;
                };
                let delivery = delivery.expect("delivery");
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
                if last.acked() {
                    last.stop_clock();
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    let rate = last.rate();
    publisher
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .ok();
    rate
}

/// One measurement of `backend` with `n` messages on a fresh queue. RabbitMQ gets the
/// worker's prefetch (one per handler).
async fn once(backend: Backend, n: usize) -> f64 {
    let t = TestQueue::new(backend, 8).await;
    let queue: std::sync::Arc<dyn Queue> = match backend {
        Backend::RabbitMq => std::sync::Arc::new(
            RabbitMqQueue::connect(
                &Secret::new(amqp_url()),
                t.options.clone().with_prefetch(CONSUMERS),
            )
            .await
            .expect("RabbitMQ"),
        ),
        _ => t.queue.clone(),
    };
    let rate = queue_throughput(queue, n).await;
    t.cleanup().await;
    rate
}

/// A warm-up, then `runs` measurements.
async fn bench(backend: Backend, n: usize, runs: usize) -> Vec<f64> {
    once(backend, WARM_UP.min(n)).await;
    let mut rates = Vec::new();
    for _ in 0..runs {
        rates.push(once(backend, n).await);
    }
    rates
}

#[tokio::main]
async fn main() {
    let args = args();
    println!(
        "PostgreSQL connection: {}",
        tests::bench::postgres_transport().await
    );
    through_raw_lapin(WARM_UP, Confirms::Each).await;
    let (mut raw, mut raw_batched) = (Vec::new(), Vec::new());
    for _ in 0..args.runs {
        raw.push(through_raw_lapin(args.messages, Confirms::Each).await);
        raw_batched.push(through_raw_lapin(args.messages, Confirms::Batched).await);
    }
    let mut figures = Vec::new();
    for (label, backend, floor) in [
        ("db (SQLite)", Backend::DbSqlite, 3_000.0),
        ("db (PostgreSQL)", Backend::DbPostgres, 5_000.0),
        ("rabbitmq", Backend::RabbitMq, 0.85),
    ] {
        let samples = bench(backend, args.messages, args.runs).await;
        let mut figure = Figure::new(&format!("queue {label}"), "msg/s", samples)
            .against("raw lapin", raw.clone());
        figure = if backend == Backend::RabbitMq {
            figure.target(Target::at_least(
                Of::Ratio,
                floor,
                ">= 85 % of raw lapin (same consumers, prefetch and confirms)",
            ))
        } else {
            figure.target(Target::at_least(
                Of::Value,
                floor,
                &format!(">= {floor} msg/s"),
            ))
        };
        figures.push((label, args.messages, figure));
    }
    let depths = ((args.messages / 4).max(1), args.messages);
    // The full count is the PostgreSQL row above; the quarter is measured here.
    let deep = figures
        .iter()
        .find(|(label, _, _)| *label == "db (PostgreSQL)")
        .map(|(_, _, f)| f.samples.clone())
        .unwrap_or_default();
    let mut shallow = Vec::new();
    for _ in 0..args.runs {
        shallow.push(once(Backend::DbPostgres, depths.0).await);
    }
    let depth = Figure::new(
        &format!("queue db (PostgreSQL) depth {}", depths.1),
        "msg/s",
        deep,
    )
    .against(
        &format!("queue db (PostgreSQL) depth {}", depths.0),
        shallow,
    )
    .target(Target::at_least(
        Of::Ratio,
        0.8,
        &format!(">= 0.8 of the rate at {} messages", depths.0),
    ));
    let mut notes = Vec::new();
    let sqs = match std::env::var("HOKUSAI_TEST_SQS_ENDPOINT") {
        Ok(_) => bench(Backend::Sqs, args.sqs_messages, args.runs).await,
        Err(_) => {
            notes.push("sqs (moto) skipped: no HOKUSAI_TEST_SQS_ENDPOINT".to_owned());
            Vec::new()
        }
    };
    let sqs = Figure::new("queue sqs (moto)", "msg/s", sqs).against("raw lapin", raw.clone());
    figures.push(("sqs (moto)", args.sqs_messages, sqs));
    let raw = Figure::new("queue raw lapin", "msg/s", raw);
    let raw_batched = Figure::new(
        &format!("queue raw lapin, confirms in batches of {CONFIRM_BATCH}"),
        "msg/s",
        raw_batched,
    );
    println!(
        "queue throughput, published + consumed, median of {} runs ({PUBLISHERS} publishers, {CONSUMERS} consumers)",
        args.runs
    );
    println!(
        "{:<18} {:>9} {:>12} {:>14}",
        "backend", "messages", "msg/s", "vs raw lapin"
    );
    println!(
        "{:<18} {:>9} {:>12.0} {:>14}",
        "raw lapin",
        args.messages,
        raw.median(),
        "100.0%"
    );
    println!(
        "{:<18} {:>9} {:>12.0} {:>13.1}%   (confirms in batches of {CONFIRM_BATCH})",
        "raw lapin batched",
        args.messages,
        raw_batched.median(),
        raw_batched.median() / raw.median() * 100.0
    );
    for (label, n, figure) in &figures {
        match figure.ratio().filter(|r| r.is_finite()) {
            Some(ratio) => println!(
                "{label:<18} {n:>9} {:>12.0} {:>13.1}%",
                figure.median(),
                ratio * 100.0
            ),
            None => println!(
                "{label:<18} {:>9} {:>12} {:>14}",
                "-", "skipped", "(no HOKUSAI_TEST_SQS_ENDPOINT)"
            ),
        }
    }
    println!(
        "db (PostgreSQL) at {} messages: {:.0} msg/s, at {}: {:.0} msg/s, ratio {:.2}",
        depths.1,
        depth.median(),
        depths.0,
        depth.baseline_median().unwrap_or(f64::NAN),
        depth.ratio().unwrap_or(f64::NAN)
    );
    let mut all = vec![raw, raw_batched];
    all.extend(figures.into_iter().map(|(_, _, f)| f));
    all.push(depth);
    print_verdicts(&all);
    if let Some(path) = &args.json {
        let parameters = serde_json::json!({
            "messages": args.messages,
            "sqs_messages": args.sqs_messages,
            "runs": args.runs,
            "publishers": PUBLISHERS,
            "consumers": CONSUMERS,
        });
        tests::bench::write_json(path, "queue", parameters, &all, &notes);
    }
}
