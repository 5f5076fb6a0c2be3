//! Fault test (issue 11): HuggingFace misbehaves during 100 deployments.
//!
//! Four consumer loops work 100 deployment requests on PostgreSQL while the emulator answers
//! every 4th management request 429 (`Retry-After: 1`) and every 9th 500, adds latency,
//! throws a 429 storm, makes the next 10 created endpoints end `failed`, and fails a few
//! endpoints while they provision. Afterwards every deployment is `deployed` or `failed`
//! (compensated: never `rollback_failed` or in between), every `deployed` one owns its
//! endpoint, failed ones left none behind, and the queue holds nothing live or dead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use emulator::{ChaosConfig, EmulatorConfig};
use sea_orm::EntityTrait;
use shared::db::entities::{deployed_models, queue_messages};
use shared::domain::DeploymentStatus;
use tests::db::Engine;
use tests::world::World;

const DEPLOYMENTS: usize = 100;
const CHAOS: Duration = Duration::from_secs(20);
const LIMIT: Duration = Duration::from_secs(150);

fn steady_chaos() -> ChaosConfig {
    ChaosConfig {
        rate_limit_every: 4,
        retry_after_secs: 1,
        server_error_every: 9,
        latency_ms: 40,
        ..ChaosConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hf_chaos_loses_nothing_and_leaves_no_orphaned_endpoint() {
    // Arrange
    let started = Instant::now();
    let chaos = ChaosConfig {
        fail_next_deploys: 10,
        ..steady_chaos()
    };
    let emulator = EmulatorConfig {
        chaos,
        ..EmulatorConfig::default()
    };
    let world = World::on_db_queue(Engine::Postgres, emulator, &[]).await;
    for i in 0..DEPLOYMENTS {
        world.request(&format!("hf-chaos-{i:03}"), "1").await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (consumer, stop, errors) = (
            world.worker.consumer().clone(),
            stop.clone(),
            errors.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if consumer.try_process_one().await.is_err() {
                    errors.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }

    // Act: storms, slow answers and failing endpoints while the deployments run.
    let (mut storms, mut slow, mut failed_by_hand) = (0, 0, BTreeSet::new());
    let chaos_start = Instant::now();
    while chaos_start.elapsed() < CHAOS {
        let second = chaos_start.elapsed().as_secs();
        let mut current = world.emulator.chaos();
        if second % 5 == 1 && current.rate_limit_next == 0 {
            current.rate_limit_next = 12;
            storms += 1;
        }
        current.latency_ms = if second % 6 == 3 { 800 } else { 40 };
        slow += usize::from(current.latency_ms > 100);
        world.emulator.set_chaos(current);
        if failed_by_hand.len() < 5 {
            let provisioning = world
                .emulator
                .endpoints()
                .into_iter()
                .find(|e| e.state == "initializing" || e.state == "pending");
            if let Some(endpoint) = provisioning
                && world
                    .emulator
                    .fail_endpoint(&endpoint.namespace, &endpoint.name)
            {
                failed_by_hand.insert(endpoint.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    world.emulator.set_chaos(ChaosConfig::default());
    let rows = loop {
        let rows = deployed_models::Entity::find()
            .all(&world.db.conn)
            .await
            .expect("list deployments");
        let live = queue_messages::Entity::find()
            .all(&world.db.conn)
            .await
            .expect("queue")
            .iter()
            .filter(|m| m.dead_at.is_none())
            .count();
        let settled = rows
            .iter()
            .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
            .count();
        if settled == DEPLOYMENTS && live == 0 {
            break rows;
        }
        assert!(
            started.elapsed() < LIMIT,
            "not settled within {LIMIT:?}: {settled}/{DEPLOYMENTS}, {live} live messages"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::SeqCst);
    for handle in loops {
        handle.await.expect("consumer loop");
    }

    // Assert
    let dead = queue_messages::Entity::find()
        .all(&world.db.conn)
        .await
        .expect("queue")
        .iter()
        .filter(|m| m.dead_at.is_some())
        .count();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        *by_status.entry(row.status.to_string()).or_default() += 1;
    }
    let deployed: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed)
        .filter_map(|r| r.provider_model_id.clone())
        .collect();
    let held: BTreeSet<String> = world.endpoint_names().into_iter().collect();
    let orphaned: Vec<&String> = held.difference(&deployed).collect();
    let missing: Vec<&String> = deployed.difference(&held).collect();
    let terminal = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    let failed = by_status.get("failed").copied().unwrap_or(0);
    let lost = DEPLOYMENTS - terminal;
    tests::fault::report(&format!(
        "fault hf_chaos: requested {DEPLOYMENTS} / terminal {terminal} / orphaned {} / lost \
         {lost} (statuses {by_status:?}, {storms} 429 storms, {slow} slow periods, {} endpoints \
         failed while provisioning, {} consumer errors, {:.1} s)",
        orphaned.len(),
        failed_by_hand.len(),
        errors.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(rows.len(), DEPLOYMENTS);
    assert_eq!(lost, 0);
    let stuck: Vec<String> = rows
        .iter()
        .filter(|r| {
            !matches!(
                r.status,
                DeploymentStatus::Deployed | DeploymentStatus::Failed
            )
        })
        .map(|r| format!("{} {}", r.model_id, r.status))
        .collect();
    assert!(
        stuck.is_empty(),
        "neither deployed nor compensated: {stuck:?}"
    );
    assert!(orphaned.is_empty(), "orphaned endpoints: {orphaned:?}");
    assert!(
        missing.is_empty(),
        "deployed without an endpoint: {missing:?}"
    );
    assert!(
        failed >= 10,
        "the 10 doomed endpoints (and those failed by hand) end their deployments: {by_status:?}"
    );
    assert!(
        deployed.len() >= DEPLOYMENTS - 10 - failed_by_hand.len(),
        "429s and 500s are retried, not fatal: {by_status:?}"
    );
    assert!(storms > 0 && slow > 0 && !failed_by_hand.is_empty());
    assert_eq!(dead, 0, "dead-lettered commands");
}
