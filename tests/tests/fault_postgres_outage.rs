//! Fault test: PostgreSQL unreachable for 150 s while 50 deployments are on their way.
//!
//! A worker (its consumers, its reconciler) reaches a fresh PostgreSQL database through a
//! loopback [`TcpProxy`] and runs on the embedded queue, which lives in that same database.
//! 50 deployments are requested; a second later the proxy is cut (every connection dropped,
//! every new one refused) for [`OUTAGE`]. Infrastructure failures spend no attempt
//! (docs/architecture.md, section 4), so afterwards every deployment must end `deployed`,
//! with nothing dead-lettered and no endpoint orphaned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use emulator::{Emulator, EmulatorConfig};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::json;
use shared::config::Secret;
use shared::db::deployments;
use shared::db::entities::{deployed_models, queue_messages};
use shared::db::outbox::Route;
use shared::domain::DeploymentStatus;
use shared::provider::{ProviderRegistry, ProvidersConfig};
use shared::queue::{Envelope, MessageKind};
use tests::db::{Engine, TestDb};
use tests::proxy::TcpProxy;

const DEPLOYMENTS: usize = 50;
/// How long PostgreSQL is unreachable.
const OUTAGE: Duration = Duration::from_secs(150);
/// How long the deployments may take once it is back.
const RECOVERY: Duration = Duration::from_secs(120);

#[tokio::test]
async fn fifty_deployments_survive_postgres_gone_for_150_seconds() {
    // Arrange: the worker reaches the database only through the proxy.
    let started = Instant::now();
    let db = TestDb::migrated(Engine::Postgres).await;
    let (proxy, worker_url) = TcpProxy::in_front_of(&db.url).await;
    let settings = tests::world::fast_settings(&worker_url, &[]);
    // Provisioning takes seconds, so the cut lands with deployments in every state.
    let emulator = Emulator::start(EmulatorConfig {
        pending_time: Duration::from_secs(2),
        initializing_time: Duration::from_secs(3),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator starts");
    let config = ProvidersConfig::with_hf_emulator(
        &settings,
        &emulator.base_url,
        Secret::new(emulator.token.clone()),
    );
    let providers = Arc::new(ProviderRegistry::build(&config).expect("providers"));
    let worker_conn = shared::db::connect(&worker_url)
        .await
        .expect("worker connection through the proxy");
    let mut options = shared::queue::QueueOptions::new(
        shared::queue::DEPLOYMENTS_QUEUE,
        settings.queue.max_attempts,
    );
    options.lease = Duration::from_secs(3);
    let queue = Arc::new(shared::queue::db::DbQueue::new(
        worker_conn.clone(),
        options,
    ));
    let worker = worker::Worker::assemble(settings, worker_conn, providers, queue);

    let mut requested = Vec::new();
    for n in 0..DEPLOYMENTS {
        let new = tests::world::new_deployment(&format!("outage-{n}"), "1");
        let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
        let row = deployments::create(&db.conn, Route::Direct, new, &command)
            .await
            .expect("create");
        requested.push(row.id);
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run_until_stopped(async move {
        stop_rx.await.ok();
    }));

    // Act: the database goes away with work in flight, for OUTAGE.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_cut = count_deployed(&db).await;
    proxy.cut();
    tokio::time::sleep(OUTAGE).await;
    proxy.restore();
    let restored = Instant::now();
    loop {
        let deployed = count_deployed(&db).await;
        if deployed == DEPLOYMENTS {
            break;
        }
        assert!(
            restored.elapsed() < RECOVERY,
            "{deployed}/{DEPLOYMENTS} deployed {RECOVERY:?} after PostgreSQL came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop_tx.send(());
    running.await.expect("worker task").expect("worker stops");

    // Assert, from what the emulator and the database hold.
    let rows = deployed_models::Entity::find()
        .all(&db.conn)
        .await
        .expect("rows");
    let orphaned =
        tests::fault::orphaned_endpoints(emulator.endpoints().into_iter().map(|e| e.name), &rows)
            .len();
    let deployed = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed)
        .count();
    let terminal = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    let dead = queue_messages::Entity::find()
        .filter(queue_messages::Column::DeadAt.is_not_null())
        .count(&db.conn)
        .await
        .expect("dead letters");
    let (accepted, refused) = proxy.counts();
    tests::fault::report(&format!(
        "fault postgres_outage_150s: requested {} / terminal {terminal} / orphaned {orphaned} / lost {} \
         ({before_cut} deployed before the cut, {dead} dead-lettered, {refused} connections refused, \
         {accepted} accepted, {:.1} s recovery, {:.1} s in all)",
        requested.len(),
        rows.len() - terminal,
        restored.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    assert!(refused > 0, "the outage must have been felt");
    assert_eq!(deployed, DEPLOYMENTS, "every deployment deployed");
    assert_eq!(dead, 0, "nothing dead-lettered");
    assert_eq!(orphaned, 0, "no endpoint without its deployment");
}

async fn count_deployed(db: &TestDb) -> usize {
    deployed_models::Entity::find()
        .filter(deployed_models::Column::Status.eq(DeploymentStatus::Deployed))
        .count(&db.conn)
        .await
        .expect("count") as usize
}
