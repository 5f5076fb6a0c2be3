//! Worker robustness on real services (docs/design/runtime.md): SQS visibility kept for every
//! message in work, supervised loops and `/ready`, leader-only periodic jobs, a relay that
//! parks a poison row and lets the rows behind it flow, fenced claims a stale holder cannot
//! settle, and retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use emulator::{Emulator, EmulatorConfig};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{Value, json};
use shared::config::Secret;
use shared::db::DbError;
use shared::db::deployments;
use shared::db::entities::{
    deployment_events, mlflow_deliveries, mlflow_events, outbox, processed_messages,
    queue_messages, rollout_measurements, rollouts,
};
use shared::db::mlflow::{self, NewEvent};
use shared::db::outbox::Route;
use shared::domain::DeploymentId;
use shared::provider::{ProviderRegistry, ProvidersConfig};
use shared::queue::{self, Envelope, MessageKind, QueueError};
use shared::runtime::{Shutdown, ShutdownTrigger, TaskState, Tasks};
use tests::db::{Engine, TestDb};
use tests::queue::{Backend, TestQueue};
use tests::world::new_deployment;
use worker::metrics_server::MetricsServer;
use worker::relay::Relay;

fn command() -> Envelope {
    Envelope::new(MessageKind::Deploy, DeploymentId::new(), json!({}))
}

/// Serves `tasks` on a worker metrics listener; returns its base URL.
async fn serve_ready(tasks: &Tasks) -> String {
    let server = MetricsServer::bind("127.0.0.1", 0).await.expect("bind");
    let base = format!("http://{}", server.local_addr());
    tokio::spawn(server.run_until_stopped(tasks.clone(), std::future::pending()));
    base
}

async fn ready(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/ready"))
        .await
        .expect("GET /ready");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// The value of `hokusai_task_restarts_total{task}` in this process's registry.
fn restarts_counted(task: &str) -> f64 {
    let text = shared::telemetry::metrics::render();
    tests::scrape::Scrape::parse(&text)
        .value("hokusai_task_restarts_total", &[("task", task)])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn sqs_messages_in_work_longer_than_their_visibility_are_not_redelivered() {
    // Visibility (the lease) is 2 s; two handlers hold one message each for 7 s.
    let t = TestQueue::new(Backend::Sqs, 5).await;
    let sent = [command(), command()];
    for c in &sent {
        t.queue.publish(c, None).await.expect("publish");
    }
    let mut held = Vec::new();
    for _ in 0..2 {
        let delivery = t
            .queue
            .receive(Duration::from_secs(5))
            .await
            .expect("receive")
            .expect("a message");
        held.push(delivery);
    }
    let other = t.another_consumer().await;
    let started = Instant::now();
    let mut stolen = 0;
    while started.elapsed() < Duration::from_secs(7) {
        if let Some(d) = other.receive(Duration::from_secs(1)).await.expect("poll") {
            stolen += 1;
            d.ack().await.expect("ack");
        }
    }
    let in_work = started.elapsed();
    for d in held {
        assert_eq!(d.deliveries(), 1);
        d.ack().await.expect("ack after the long handling");
    }
    let late = other.receive(Duration::from_secs(3)).await.expect("poll");
    println!(
        "sqs visibility: {} messages held {:.1} s (lease {:?}); redelivered while in work: {stolen}; after ack: {}",
        sent.len(),
        in_work.as_secs_f64(),
        t.options.lease,
        u8::from(late.is_some())
    );
    assert_eq!(stolen, 0, "a message in work was redelivered");
    assert!(late.is_none(), "an acked message came back");
    t.cleanup().await;
}

#[tokio::test]
async fn a_panicking_handler_is_restarted_counted_and_its_message_redelivered() {
    let t = TestQueue::new(Backend::DbSqlite, 5).await;
    let sent = command();
    t.queue.publish(&sent, None).await.expect("publish");
    let trigger = ShutdownTrigger::new();
    let tasks = Tasks::new(trigger.subscribe());
    let handled = Arc::new(AtomicU64::new(0));
    let queue = t.queue.clone();
    let name = "consumer_panics";
    let before = restarts_counted(name);
    tasks.supervise(name, Duration::from_millis(500), {
        let handled = handled.clone();
        move |heartbeat, shutdown| {
            let (queue, handled) = (queue.clone(), handled.clone());
            async move {
                while !shutdown.is_triggered() {
                    let delivery = queue
                        .receive(Duration::from_millis(200))
                        .await
                        .expect("receive");
                    heartbeat.beat();
                    if let Some(delivery) = delivery {
                        if delivery.deliveries() == 1 {
                            panic!("a bug in the handler of {}", delivery.envelope().message_id);
                        }
                        delivery.ack().await.expect("ack");
                        handled.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    });
    let base = serve_ready(&tasks).await;
    let started = Instant::now();
    let mut saw_unready = false;
    while handled.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the message never came back"
        );
        let (status, _) = ready(&base).await;
        saw_unready |= status == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = tasks.readiness();
    let restarts = report.tasks[name].restarts;
    let counted = restarts_counted(name) - before;
    let (status, body) = ready(&base).await;
    let depth = t.queue.depth().await.expect("depth");
    println!(
        "handler panic: restarts {restarts}, counted {counted}, handled {}, /ready while restarting 503: {saw_unready}, /ready now {status}, queue pending {} dead {}",
        handled.load(Ordering::SeqCst),
        depth.pending,
        depth.dead
    );
    assert_eq!(restarts, 1);
    assert_eq!(counted, 1.0);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!((depth.pending, depth.dead), (0, 0));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tasks"][name]["state"], "running");
    trigger.trigger();
    tasks.join().await;
    t.cleanup().await;
}

#[tokio::test]
async fn a_loop_that_stops_beating_makes_ready_answer_503_naming_it() {
    let trigger = ShutdownTrigger::new();
    let tasks = Tasks::new(trigger.subscribe());
    let period = Duration::from_millis(300);
    // Beats once, then hangs (a deadlock, a call without a timeout).
    tasks.supervise(
        "stuck",
        period,
        |heartbeat, shutdown: Shutdown| async move {
            heartbeat.beat();
            shutdown.wait().await;
        },
    );
    tasks.every("healthy", Duration::from_millis(100), None, || async {
        Ok(())
    });
    // A slow loop that has not run yet is never stalled before its first period.
    tasks.supervise(
        "slow_start",
        Duration::from_secs(3600),
        |_, shutdown: Shutdown| async move {
            shutdown.wait().await;
        },
    );
    let base = serve_ready(&tasks).await;
    let (status, body) = ready(&base).await;
    assert_eq!(status, 200, "ready at start-up: {body}");

    let started = Instant::now();
    let (status, body) = loop {
        let (status, body) = ready(&base).await;
        if status == 503 || started.elapsed() > Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let noticed = started.elapsed();
    println!("stalled loop: /ready {status} after {noticed:?} (grace 3 × {period:?}): {body}");
    assert_eq!(status, 503);
    assert_eq!(body["failing"], json!(["stuck"]));
    assert_eq!(body["tasks"]["stuck"]["state"], "stalled");
    assert!(
        body["tasks"]["stuck"]["seconds_since_heartbeat"]
            .as_f64()
            .unwrap()
            >= 0.9
    );
    assert_eq!(body["tasks"]["healthy"]["state"], "running");
    assert_eq!(body["tasks"]["slow_start"]["state"], "running");
    assert!(noticed >= period * 2, "stalled before its grace ran out");
    trigger.trigger();
    tasks.join().await;
    assert!(
        tasks
            .readiness()
            .tasks
            .values()
            .all(|t| t.state == TaskState::Stopped)
    );
}

#[tokio::test]
async fn with_two_workers_the_leader_only_jobs_run_on_one() {
    let mlflow = std::env::var("HOKUSAI_TEST_MLFLOW_URI").expect(
        "HOKUSAI_TEST_MLFLOW_URI must name a running MLflow server (scripts/test starts one)",
    );
    let db = TestDb::migrated(Engine::Postgres).await;
    let overrides = [
        ("MLFLOW_TRACKING_URI", mlflow.as_str()),
        ("DEPLOYMENT_RECONCILE_INTERVAL_SECONDS", "1"),
        ("LEADER_LEASE_SECONDS", "5"),
    ];
    let mut workers = Vec::new();
    let trigger = ShutdownTrigger::new();
    for _ in 0..2 {
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .expect("emulator starts");
        let settings = tests::world::fast_settings(&db.url, &overrides);
        let config = ProvidersConfig::with_hf_emulator(
            &settings,
            &emulator.base_url,
            Secret::new(emulator.token.clone()),
        );
        let providers = Arc::new(ProviderRegistry::build(&config).expect("providers"));
        let queue = Arc::new(queue::db::DbQueue::new(
            db.conn.clone(),
            queue::QueueOptions::new(queue::DEPLOYMENTS_QUEUE, 5),
        ));
        let worker = worker::Worker::assemble(settings, db.conn.clone(), providers, queue);
        let tasks = worker.tasks();
        let stop = trigger.subscribe();
        let handle = tokio::spawn(async move {
            let _emulator = emulator;
            worker
                .run_until_stopped(async move { stop.wait().await })
                .await
        });
        workers.push((tasks, handle));
    }
    // The gauges tick at start (before anyone leads: skipped) and every 15 s after.
    let started = Instant::now();
    let ran = |tasks: &Tasks, name: &str| tasks.readiness().tasks.get(name).map_or(0, |t| t.beats);
    loop {
        let gauges: u64 = workers.iter().map(|(t, _)| ran(t, "gauges")).sum();
        if gauges >= 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no worker refreshed the gauges"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reports: Vec<_> = workers.iter().map(|(t, _)| t.readiness()).collect();
    for (n, report) in reports.iter().enumerate() {
        let line: Vec<String> = ["gauges", "mlflow_sync", "retention"]
            .iter()
            .map(|job| {
                let t = &report.tasks[*job];
                format!("{job} ran {} skipped {}", t.beats, t.skipped)
            })
            .collect();
        println!("worker {n}: {}", line.join(", "));
        assert!(report.ready, "worker {n} not ready: {:?}", report.failing());
    }
    for job in ["gauges", "mlflow_sync"] {
        let running: Vec<usize> = (0..2)
            .filter(|n| reports[*n].tasks[job].beats > 0)
            .collect();
        assert_eq!(running.len(), 1, "{job} ran on {running:?}");
        let follower = 1 - running[0];
        assert!(reports[follower].tasks[job].skipped > 0);
    }
    let sync_leader = (0..2)
        .find(|n| reports[*n].tasks["mlflow_sync"].beats > 0)
        .unwrap();
    assert!(
        reports[sync_leader].tasks["gauges"].beats > 0,
        "the same worker leads every leader-only job"
    );
    trigger.trigger();
    for (_, handle) in workers {
        handle
            .await
            .expect("join")
            .expect("the worker stops cleanly");
    }
    db.drop_database().await;
}

#[tokio::test]
async fn a_poison_outbox_row_is_parked_and_the_rows_behind_it_are_published() {
    let t = TestQueue::new(Backend::Sqs, 5).await;
    let conn = &t.db.conn;
    // SQS refuses bodies over its maximum (1 MiB): this deploy command can never be published.
    let poison = new_deployment("poison-model", "1");
    let big = Envelope::new(
        MessageKind::Deploy,
        poison.id,
        json!({"padding": "x".repeat(1100 * 1024)}),
    );
    let poison = deployments::create(conn, Route::Relay, poison, &big)
        .await
        .expect("create");
    let mut behind = Vec::new();
    for n in 0..3 {
        let new = new_deployment(&format!("healthy-model-{n}"), "1");
        let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
        behind.push(
            deployments::create(conn, Route::Relay, new, &command)
                .await
                .expect("create"),
        );
    }
    let limit = 3;
    let relay = Relay::new(conn.clone(), t.queue.clone())
        .relaying(queue::DEPLOYMENTS_QUEUE)
        .parking_after(limit);
    let mut reports = Vec::new();
    for _ in 0..limit + 1 {
        reports.push(relay.relay_batch().await.expect("a batch"));
    }
    let mut received = Vec::new();
    while let Some(d) = t
        .queue
        .receive(Duration::from_secs(2))
        .await
        .expect("receive")
    {
        received.push(d.envelope().deployment_id.0);
        d.ack().await.expect("ack");
    }
    let rows = outbox::Entity::find().all(conn).await.expect("outbox");
    let published = rows.iter().filter(|r| r.published_at.is_some()).count();
    let parked: Vec<_> = rows.iter().filter(|r| r.parked_at.is_some()).collect();
    let events = deployments::events(conn, DeploymentId(poison.id))
        .await
        .expect("events");
    let parked_events = events.iter().filter(|e| e.kind == "command_parked").count();
    println!(
        "poison row: batches {reports:?}; outbox {} rows, {published} published, {} parked (attempts {:?}); queue received {}; command_parked events {parked_events}",
        rows.len(),
        parked.len(),
        parked.iter().map(|r| r.attempts).collect::<Vec<_>>(),
        received.len()
    );
    assert_eq!(published, behind.len());
    assert_eq!(received.len(), behind.len());
    for d in &behind {
        assert!(received.contains(&d.id));
    }
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].attempts, limit as i32);
    assert!(
        parked[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("InvalidParameterValue"),
        "{:?}",
        parked[0].last_error
    );
    assert_eq!(parked_events, 1);
    // Parked means left alone: a further batch reads nothing.
    assert_eq!(relay.relay_batch().await.expect("batch").read, 0);
    t.cleanup().await;
}

async fn stale_queue_holder_cannot_settle(backend: Backend) {
    let t = TestQueue::new(backend, 5).await;
    t.queue.publish(&command(), None).await.expect("publish");
    let wait = Duration::from_secs(1);
    let stale = t
        .queue
        .receive(wait)
        .await
        .expect("receive")
        .expect("A's claim");
    // A stops extending its lease (a paused process, a partition: simulated by expiring
    // the lease in the table, as A's missed heartbeats would); B claims the message and
    // postpones it (a retry, which reset `attempts` and let A's ack through before claims
    // carried a token); C claims it.
    let started = Instant::now();
    let b = loop {
        queue_messages::Entity::update_many()
            .col_expr(
                queue_messages::Column::LockedUntil,
                sea_orm::sea_query::Expr::value(Utc::now() - chrono::Duration::seconds(1)),
            )
            .exec(&t.db.conn)
            .await
            .expect("expire A's lease");
        if let Some(b) = t.queue.receive(Duration::ZERO).await.expect("receive") {
            break b;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never claimed it"
        );
    };
    b.postpone(Duration::ZERO, "not yet")
        .await
        .expect("postpone");
    let c = t
        .queue
        .receive(wait)
        .await
        .expect("receive")
        .expect("C's claim");
    // The embedded queue writes acks behind the handler: A's ack is handed over, and its
    // fenced delete, committed by the drain, must leave C's claim alone.
    let stale_ack = stale.ack().await;
    t.queue.drain().await.expect("drain");
    let after_stale = t.queue.depth().await.expect("depth");
    println!(
        "stale queue claim ({backend:?}): A's ack after B and C claimed: {stale_ack:?}; \
         pending after it committed: {}",
        after_stale.pending
    );
    assert!(
        matches!(stale_ack, Ok(()) | Err(QueueError::LeaseLost(_))),
        "{stale_ack:?}"
    );
    assert_eq!(after_stale.pending, 1, "A's stale ack removed C's message");
    c.ack().await.expect("the current holder acks");
    let depth = t.queue.depth().await.expect("depth");
    assert_eq!((depth.pending, depth.dead), (0, 0));
    t.cleanup().await;
}

#[tokio::test]
async fn a_stale_holder_cannot_ack_another_claim_on_the_db_queue_sqlite() {
    stale_queue_holder_cannot_settle(Backend::DbSqlite).await;
}

#[tokio::test]
async fn a_stale_holder_cannot_ack_another_claim_on_the_db_queue_postgres() {
    stale_queue_holder_cannot_settle(Backend::DbPostgres).await;
}

#[tokio::test]
async fn a_stale_holder_cannot_finish_an_mlflow_event_claimed_since() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let db = TestDb::migrated(engine).await;
        let event = NewEvent {
            event: "model_version.created".into(),
            model_name: "fraud-detector".into(),
            version: Some("1".into()),
            payload: json!({}),
        };
        mlflow::record_delivery(&db.conn, "delivery-1", Some(event))
            .await
            .expect("record");
        let lease = Duration::from_secs(1);
        let (_, stale) = mlflow::lease_next_event(&db.conn, lease)
            .await
            .expect("lease")
            .expect("A's claim");
        assert!(
            mlflow::lease_next_event(&db.conn, lease)
                .await
                .expect("lease")
                .is_none(),
            "two holders at once"
        );
        tokio::time::sleep(lease + Duration::from_millis(300)).await;
        let (_, current) = mlflow::lease_next_event(&db.conn, lease)
            .await
            .expect("lease")
            .expect("B's claim");
        let finish = mlflow::finish_event(&db.conn, &stale, "stale").await;
        let retry = mlflow::retry_event(&db.conn, &stale, Duration::ZERO, "stale").await;
        println!("stale MLflow claim ({engine:?}): finish {finish:?}; retry {retry:?}");
        assert!(matches!(finish, Err(DbError::LostClaim(_))));
        assert!(matches!(retry, Err(DbError::LostClaim(_))));
        mlflow::finish_event(&db.conn, &current, "done")
            .await
            .expect("the holder finishes");
        let events = mlflow::events(&db.conn).await.expect("events");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].outcome.as_deref(), Some("done"));
        db.drop_database().await;
    }
}

#[tokio::test]
async fn retention_deletes_old_rows_and_keeps_recent_ones() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let db = TestDb::migrated(engine).await;
        let conn = &db.conn;
        let old = Utc::now() - chrono::Duration::days(20);
        let recent = Utc::now() - chrono::Duration::days(1);
        for (n, (published, created)) in [
            (Some(old), old),
            (Some(recent), old),
            (None, old), // pending: never pruned, whatever its age
        ]
        .into_iter()
        .enumerate()
        {
            outbox::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                queue: Set(queue::DEPLOYMENTS_QUEUE.into()),
                payload: Set(json!({"n": n})),
                available_at: Set(None),
                created_at: Set(created),
                published_at: Set(published),
                attempts: Set(0),
                last_error: Set(None),
                parked_at: Set(None),
            }
            .insert(conn)
            .await
            .expect("outbox row");
        }
        for at in [old, recent] {
            processed_messages::ActiveModel {
                message_id: Set(uuid::Uuid::now_v7()),
                processed_at: Set(at),
            }
            .insert(conn)
            .await
            .expect("inbox row");
            mlflow_deliveries::ActiveModel {
                delivery_id: Set(uuid::Uuid::now_v7().to_string()),
                received_at: Set(at),
            }
            .insert(conn)
            .await
            .expect("delivery row");
        }
        for (n, processed) in [Some(old), Some(recent), None].into_iter().enumerate() {
            mlflow_events::ActiveModel {
                id: Set(uuid::Uuid::now_v7()),
                delivery_id: Set(format!("d-{n}")),
                event: Set("model_version.created".into()),
                model_name: Set("m".into()),
                version: Set(Some("1".into())),
                payload: Set(json!({})),
                received_at: Set(old),
                available_at: Set(old),
                attempts: Set(1),
                locked_until: Set(None),
                last_error: Set(None),
                processed_at: Set(processed),
                outcome: Set(processed.map(|_| "done".into())),
                claim_token: Set(None),
            }
            .insert(conn)
            .await
            .expect("event row");
        }
        // A deployment's history is kept, however old.
        let new = new_deployment("history-model", "1");
        let deployment = deployments::create(conn, Route::Direct, new, &command())
            .await
            .expect("create");
        deployment_events::Entity::update_many()
            .col_expr(
                deployment_events::Column::CreatedAt,
                sea_orm::sea_query::Expr::value(old),
            )
            .filter(deployment_events::Column::DeploymentId.eq(deployment.id))
            .exec(conn)
            .await
            .expect("age the history");
        let history = deployment_events::Entity::find().count(conn).await.unwrap();
        // Rollouts: one ended long ago, one ended recently, one running since long ago; each
        // with two measurements. Only the first's go.
        for (n, (started, ended)) in [(old, Some(old)), (old, Some(recent)), (old, None)]
            .into_iter()
            .enumerate()
        {
            let rollout = uuid::Uuid::now_v7();
            rollouts::ActiveModel {
                id: Set(rollout),
                model_id: Set(format!("rollout-model-{n}")),
                stable_id: Set(deployment.id),
                canary_id: Set(uuid::Uuid::now_v7()),
                spec: Set(json!({"strategy": "canary"})),
                step: Set(0),
                state: Set(if ended.is_some() {
                    "promoted"
                } else {
                    "running"
                }
                .into()),
                requested: Set(None),
                started_at: Set(started),
                step_started_at: Set(started),
                updated_at: Set(started),
                ended_at: Set(ended),
                outcome: Set(None),
            }
            .insert(conn)
            .await
            .expect("rollout row");
            for _ in 0..2 {
                rollout_measurements::ActiveModel {
                    id: Set(uuid::Uuid::now_v7()),
                    rollout_id: Set(rollout),
                    deployment_id: Set(deployment.id),
                    step: Set(0),
                    recorded_at: Set(old),
                    requests: Set(10),
                    errors: Set(0),
                    latency_buckets: Set(json!([])),
                }
                .insert(conn)
                .await
                .expect("measurement row");
            }
        }

        let pruned = worker::retention::prune_once(conn, Duration::from_secs(14 * 86_400))
            .await
            .expect("prune");
        let outbox_left = outbox::Entity::find().count(conn).await.unwrap();
        let inbox_left = processed_messages::Entity::find()
            .count(conn)
            .await
            .unwrap();
        let deliveries_left = mlflow_deliveries::Entity::find().count(conn).await.unwrap();
        let events_left = mlflow_events::Entity::find().count(conn).await.unwrap();
        let history_left = deployment_events::Entity::find().count(conn).await.unwrap();
        let measurements_left = rollout_measurements::Entity::find()
            .count(conn)
            .await
            .unwrap();
        let rollouts_left = rollouts::Entity::find().count(conn).await.unwrap();
        println!(
            "retention ({engine:?}): pruned {pruned:?}; left outbox {outbox_left}, processed_messages {inbox_left}, mlflow_deliveries {deliveries_left}, mlflow_events {events_left}, deployment_events {history_left}/{history}, rollout_measurements {measurements_left}, rollouts {rollouts_left}"
        );
        assert_eq!(pruned.of("outbox"), 1);
        assert_eq!(pruned.of("processed_messages"), 1);
        assert_eq!(pruned.of("mlflow_deliveries"), 1);
        assert_eq!(pruned.of("mlflow_events"), 1);
        assert_eq!(pruned.of("rollout_measurements"), 2);
        assert_eq!(
            measurements_left, 4,
            "a running or recent rollout keeps its figures"
        );
        assert_eq!(rollouts_left, 3, "rollouts are history");
        // Route::Direct wrote the deployment's command into queue_messages, not the outbox.
        assert_eq!(outbox_left, 2);
        assert_eq!(inbox_left, 1);
        assert_eq!(deliveries_left, 1);
        assert_eq!(events_left, 2);
        assert_eq!(history_left, history);
        let again = worker::retention::prune_once(conn, Duration::from_secs(14 * 86_400))
            .await
            .expect("prune again");
        assert_eq!(again.0.iter().map(|(_, n)| n).sum::<u64>(), 0);
        db.drop_database().await;
    }
}
