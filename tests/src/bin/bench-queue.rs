//! Queue throughput benchmark (not a test): messages per second published *and* consumed
//! through each backend, next to raw lapin (publisher confirms, mandatory, manual acks,
//! same quorum queue arguments, same concurrency) on the same broker in the same run.
//!
//! `scripts/bench queue [--messages N] [--sqs-messages N] [--runs R] [--json FILE]`. Each
//! backend runs `R` times on fresh queues; the median is printed, and with `--json` every
//! sample, median, ratio to raw lapin and target go to FILE (`scripts/bench`'s report). The
//! SQS row needs `HOKUSAI_TEST_SQS_ENDPOINT` (a moto server); without it the row says so.

use std::time::Instant;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shared::domain::DeploymentId;
use shared::queue::{Envelope, MessageKind};
use tests::bench::{CONSUMERS, Figure, Of, PUBLISHERS, Target, json_arg, queue_throughput};
use tests::queue::{Backend, TestQueue, amqp_url};

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
async fn through_raw_lapin(n: usize) -> f64 {
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
        .basic_qos(16, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = consumer_channel
        .basic_consume(
            name.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (channel, name) = (publisher.clone(), name.clone());
        let count = n / PUBLISHERS + usize::from(p < n % PUBLISHERS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
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
                let confirm =
                    channel.basic_publish("".into(), name.as_str().into(), opts, &body, props);
                let confirmation = confirm.await.expect("publish").await.expect("confirm");
                assert!(confirmation.is_ack());
            }
        }));
    }
    for _ in 0..n {
        let delivery = consumer.next().await.expect("stream").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    publisher
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .ok();
    rate
}

async fn bench(backend: Backend, n: usize, runs: usize) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = TestQueue::new(backend, 8).await;
        rates.push(queue_throughput(t.queue.clone(), n).await);
        t.cleanup().await;
    }
    rates
}

#[tokio::main]
async fn main() {
    let args = args();
    let mut raw = Vec::new();
    for _ in 0..args.runs {
        raw.push(through_raw_lapin(args.messages).await);
    }
    let mut figures = Vec::new();
    for (label, backend) in [
        ("db (SQLite)", Backend::DbSqlite),
        ("db (PostgreSQL)", Backend::DbPostgres),
        ("rabbitmq", Backend::RabbitMq),
    ] {
        let samples = bench(backend, args.messages, args.runs).await;
        let mut figure = Figure::new(&format!("queue {label}"), "msg/s", samples)
            .against("raw lapin", raw.clone());
        if backend == Backend::RabbitMq {
            figure = figure.target(Target::at_least(Of::Ratio, 0.7, ">= 70 % of raw lapin"));
        }
        figures.push((label, args.messages, figure));
    }
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
    if let Some(path) = &args.json {
        let parameters = serde_json::json!({
            "messages": args.messages,
            "sqs_messages": args.sqs_messages,
            "runs": args.runs,
            "publishers": PUBLISHERS,
            "consumers": CONSUMERS,
        });
        let mut all = vec![raw];
        all.extend(figures.into_iter().map(|(_, _, f)| f));
        tests::bench::write_json(path, "queue", parameters, &all, &notes);
    }
}
