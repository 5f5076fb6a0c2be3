//! Deployment pipeline benchmark (not a test): deployments per second from `pending` to
//! `deployed` through the whole saga (deploy, check_status, the status transaction and, on
//! RabbitMQ, the outbox relay), next to the same backend's raw queue throughput measured in
//! the same run ([`tests::bench::queue_throughput`], the `scripts/bench queue` workload).
//!
//! `scripts/bench pipeline [--deployments N] [--messages N] [--runs R] [--json FILE]`
//! (`--json`: every sample, the medians and ratios for `scripts/bench`'s report). The HF emulator
//! provisions instantly (pending and initializing times 0) and status polls start after
//! 10 ms, so the numbers measure our code, the database and the queue. One worker runs
//! in-process with the default `WORKER_CONCURRENCY` handlers (`--handlers N` sets another;
//! `--backend sqlite|postgres|rabbitmq` runs one backend's row only). The deployments (rows and deploy
//! commands, or outbox rows on RabbitMQ) are requested as the API requests them, under each
//! model's operation lock, before the clock starts. Each backend
//! first runs an unmeasured warm-up of [`WARM_UP`] deployments.
//!
//! The RabbitMQ pipeline uses the production queue name `hokusai.deployments` (the saga's
//! follow-up commands name it), on its own fresh PostgreSQL database; its queues are
//! deleted afterwards, so nothing else may use that queue on the broker meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emulator::EmulatorConfig;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use shared::config::Secret;
use shared::db::entities::deployed_models::{self, Column};
use shared::db::outbox::Route;
use shared::domain::DeploymentStatus;
use shared::queue::db::DbQueue;
use shared::queue::rabbitmq::RabbitMqQueue;
use shared::queue::{DEPLOYMENTS_QUEUE, Queue, QueueOptions};
use tests::bench::{
    Figure, Of, Target, histogram_delta, json_arg, print_verdicts, queue_throughput,
};
use tests::db::{Engine, TestDb};
use tests::queue::{Backend, TestQueue, amqp_url, delete_rabbitmq_queues};
use tests::world::{World, fast_settings};

/// Deployments of the unmeasured warm-up before each backend's runs.
const WARM_UP: usize = 50;

/// The floor every pipeline figure must reach (issue "Performance", deployments/s).
const FLOOR: f64 = 500.0;

/// A pipeline run that has not finished after this long fails.
const LIMIT: Duration = Duration::from_secs(600);

struct Args {
    deployments: usize,
    messages: usize,
    runs: usize,
    /// `WORKER_CONCURRENCY`; `None`: the worker's default.
    handlers: Option<usize>,
    /// `--backend`: one backend's row only (`sqlite`, `postgres`, `rabbitmq`); all by default.
    backend: Option<String>,
    json: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut parsed = Args {
        deployments: 1_000,
        messages: 5_000,
        runs: 3,
        handlers: None,
        backend: None,
        json: None,
    };
    let (json, argv) = json_arg();
    parsed.json = json;
    for pair in argv.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--deployments", Some(n)) => parsed.deployments = n,
            ("--messages", Some(n)) => parsed.messages = n,
            ("--runs", Some(n)) if n > 0 => parsed.runs = n,
            ("--handlers", Some(n)) if n > 0 => parsed.handlers = Some(n),
            ("--backend", _)
                if matches!(
                    pair.get(1).map(String::as_str),
                    Some("sqlite" | "postgres" | "rabbitmq")
                ) =>
            {
                parsed.backend = pair.get(1).cloned();
            }
            _ => {
                eprintln!(
                    "usage: bench-pipeline [--deployments N] [--messages N] [--runs R] [--handlers N] [--backend sqlite|postgres|rabbitmq] [--json FILE]"
                );
                std::process::exit(2);
            }
        }
    }
    parsed
}

/// A world with an instantly provisioning emulator over `backend`'s deployments queue.
async fn world(backend: Backend, handlers: Option<usize>) -> World {
    let (engine, queue_backend) = match backend {
        Backend::DbSqlite => (Engine::Sqlite, "db"),
        Backend::DbPostgres => (Engine::Postgres, "db"),
        Backend::RabbitMq => (Engine::Postgres, "rabbitmq"),
        Backend::Sqs => unreachable!("the pipeline benchmark does not run on SQS"),
    };
    let db = TestDb::migrated(engine).await;
    let handlers = handlers.map(|n| n.to_string());
    let mut overrides = vec![("QUEUE_BACKEND", queue_backend)];
    if let Some(n) = &handlers {
        overrides.push(("WORKER_CONCURRENCY", n));
    }
    let mut settings = fast_settings(&db.url, &overrides);
    settings.worker.status_poll_initial = Duration::from_millis(10);
    settings.worker.status_poll_max = Duration::from_millis(100);
    // As the worker builds it (`Worker::build_with`): a broker's prefetch is the handlers.
    let options =
        QueueOptions::from_settings(&settings.queue).with_prefetch(settings.worker.concurrency);
    let queue: Arc<dyn Queue> = match backend {
        Backend::RabbitMq => Arc::new(
            RabbitMqQueue::connect(&Secret::new(amqp_url()), options)
                .await
                .expect("RabbitMQ must be reachable (HOKUSAI_TEST_AMQP_URL)"),
        ),
        _ => Arc::new(DbQueue::new(db.conn.clone(), options)),
    };
    let route = Route::for_backend(settings.queue.backend);
    let emulator = EmulatorConfig {
        pending_time: Duration::ZERO,
        initializing_time: Duration::ZERO,
        ..EmulatorConfig::default()
    };
    World::with_queue(db, settings, emulator, queue, route).await
}

/// Where the handlers' time went in one run: per command kind and phase, commands per
/// deployment and milliseconds per command (`hokusai_worker_step_duration_seconds`), and
/// the handler-milliseconds a deployment cost against the wall time of the handlers.
fn print_breakdown(label: &str, before: &str, n: usize, wall: Duration, handlers: usize) {
    let after = shared::telemetry::metrics::render();
    let delta = histogram_delta(
        before,
        &after,
        shared::telemetry::metrics::names::WORKER_STEP,
    );
    eprintln!("{label}: where a deployment's handler time went (last run, {n} deployments)");
    eprintln!(
        "  {:<40} {:>10} {:>12} {:>16}",
        "kind, phase", "per depl.", "ms each", "ms per depl."
    );
    let mut busy = 0.0;
    for (labels, (sum, count)) in &delta {
        busy += sum;
        eprintln!(
            "  {labels:<40} {:>10.2} {:>12.3} {:>16.3}",
            count / n as f64,
            sum / count * 1e3,
            sum / n as f64 * 1e3
        );
    }
    let handlers = handlers as f64;
    eprintln!(
        "  handler time {:.2} ms per deployment; {:.2} ms of wall time per deployment with {handlers} handlers ({:.0} % of the handlers' time in steps)",
        busy / n as f64 * 1e3,
        wall.as_secs_f64() / n as f64 * 1e3 * handlers,
        busy / (wall.as_secs_f64() * handlers) * 100.0
    );
}

/// Requests `n` deployments, then runs a worker until all are `deployed`; returns
/// deployments per second from the worker's start, the time it took and the worker's handlers.
async fn pipeline(backend: Backend, n: usize, handlers: Option<usize>) -> (f64, Duration, usize) {
    let world = world(backend, handlers).await;
    let handlers = world.settings.worker.concurrency;
    for i in 0..n {
        world
            .request_deploy(&format!("bench-model-{i:05}"), "1")
            .await;
    }
    let World { db, worker, .. } = world;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run_until_stopped(async {
        stopped.await.ok();
    }));
    loop {
        let deployed = deployed_models::Entity::find()
            .filter(Column::Status.eq(DeploymentStatus::Deployed))
            .count(&db.conn)
            .await
            .expect("count deployments") as usize;
        if deployed == n {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "only {deployed}/{n} deployed after {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let rate = n as f64 / wall.as_secs_f64();
    let _ = stop.send(());
    running
        .await
        .expect("worker task")
        .expect("worker stops cleanly");
    if backend == Backend::RabbitMq {
        delete_rabbitmq_queues(DEPLOYMENTS_QUEUE).await;
    }
    db.drop_database().await;
    (rate, wall, handlers)
}

/// The raw queue throughput of `backend` (fresh queue, `n` messages).
async fn raw_queue(backend: Backend, n: usize) -> f64 {
    let t = TestQueue::new(backend, 8).await;
    let rate = queue_throughput(t.queue.clone(), n).await;
    t.cleanup().await;
    rate
}

#[tokio::main]
async fn main() {
    let args = args();
    // The in-process worker's step histograms feed the breakdown.
    shared::telemetry::metrics::install();
    if args.backend.as_deref() != Some("sqlite") {
        println!(
            "PostgreSQL connection: {}",
            tests::bench::postgres_transport().await
        );
    }
    let mut rows = Vec::new();
    for (key, label, backend) in [
        ("sqlite", "db (SQLite)", Backend::DbSqlite),
        ("postgres", "db (PostgreSQL)", Backend::DbPostgres),
        ("rabbitmq", "rabbitmq", Backend::RabbitMq),
    ] {
        if args.backend.as_deref().is_some_and(|only| only != key) {
            continue;
        }
        let (mut deploys, mut messages) = (Vec::new(), Vec::new());
        pipeline(backend, WARM_UP.min(args.deployments), args.handlers).await;
        for run in 1..=args.runs {
            messages.push(raw_queue(backend, args.messages).await);
            let before = shared::telemetry::metrics::render();
            let (rate, wall, handlers) = pipeline(backend, args.deployments, args.handlers).await;
            deploys.push(rate);
            if run == args.runs {
                print_breakdown(label, &before, args.deployments, wall, handlers);
            }
            eprintln!(
                "{label} run {run}: {:.1} deployments/s, {:.0} queue msg/s",
                deploys[run - 1],
                messages[run - 1]
            );
        }
        let figure = Figure::new(&format!("pipeline {label}"), "deployments/s", deploys)
            .against(&format!("{label} queue msg/s"), messages)
            .target(Target::at_least(
                Of::Value,
                FLOOR,
                &format!(">= {FLOOR} deployments/s"),
            ));
        rows.push((label, figure));
    }
    println!(
        "deployment pipeline, {} deployments to `deployed` (zero provisioning time), \
         median of {} runs; queue: {} messages published + consumed",
        args.deployments, args.runs, args.messages
    );
    println!(
        "{:<18} {:>14} {:>14} {:>10}",
        "backend", "deployments/s", "queue msg/s", "ratio"
    );
    for (label, figure) in &rows {
        println!(
            "{label:<18} {:>14.1} {:>14.0} {:>10.4}",
            figure.median(),
            figure.baseline_median().unwrap_or(f64::NAN),
            figure.ratio().unwrap_or(f64::NAN)
        );
    }
    let figures: Vec<Figure> = rows.into_iter().map(|(_, f)| f).collect();
    print_verdicts(&figures);
    if let Some(path) = &args.json {
        let parameters = serde_json::json!({
            "deployments": args.deployments,
            "messages": args.messages,
            "runs": args.runs,
            "handlers": args.handlers.map_or("default (WORKER_CONCURRENCY)".to_owned(), |n| n.to_string()),
        });
        let notes = [
            "a deployment is at least 4 queue commands (deploy, check_status, \
                      activation), so ratios under 0.25 are expected; the target is on deployments/s"
                .to_owned(),
        ];
        tests::bench::write_json(path, "pipeline", parameters, &figures, &notes);
    }
}
