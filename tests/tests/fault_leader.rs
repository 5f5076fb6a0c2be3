//! Fault test: two worker processes share one PostgreSQL database; exactly one leads the
//! reconciler (`hokusai_leader` 1 on it, 0 on the other). The leader is killed with SIGKILL
//! (it cannot release its lease); the other takes over within one lease and its passes
//! continue (`hokusai_reconcile_passes_total{outcome="ok"}` grows).

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use emulator::{Emulator, EmulatorConfig};
use sea_orm::EntityTrait;
use serde_json::json;
use shared::db::deployments;
use shared::db::entities::deployed_models;
use shared::db::outbox::Route;
use shared::domain::DeploymentStatus;
use shared::queue::{Envelope, MessageKind};
use tests::db::{Engine, TestDb};
use tests::process;
use tests::scrape::Scrape;
use tokio::process::Child;

const LEASE: Duration = Duration::from_secs(2);
/// Deployments requested after the takeover.
const DEPLOYMENTS: usize = 5;
const LIMIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn spawn_worker(dir: &Path, envs: &[(&str, &str)], port: u16) -> Child {
    let port = port.to_string();
    let mut all = envs.to_vec();
    all.push(("WORKER_METRICS_PORT", &port));
    process::command(dir, &["worker"], &all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts")
}

/// `(hokusai_leader, ok passes)` of the worker whose metrics listen on `port`; `None`
/// while it does not answer.
async fn leader_state(port: u16) -> Option<(f64, f64)> {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let scrape = Scrape::parse(&text);
    let leader = scrape.value("hokusai_leader", &[])?;
    let passes = scrape
        .value("hokusai_reconcile_passes_total", &[("outcome", "ok")])
        .unwrap_or(0.0);
    Some((leader, passes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_killed_leader_is_replaced_within_one_lease() {
    let db = TestDb::migrated(Engine::Postgres).await;
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    let lease = LEASE.as_secs().to_string();
    let envs = [
        ("DATABASE_URL", db.url.as_str()),
        ("QUEUE_BACKEND", "db"),
        ("HUGGINGFACE_API_KEY", emulator.token.as_str()),
        ("HUGGINGFACE_NAMESPACE", "hokusai"),
        ("HUGGINGFACE_API_BASE", emulator.base_url.as_str()),
        ("RUST_LOG", "warn"),
        ("ENVIRONMENT", "development"),
        ("LEADER_LEASE_SECONDS", lease.as_str()),
        ("DEPLOYMENT_RECONCILE_INTERVAL_SECONDS", "1"),
    ];
    let dir = process::scratch_dir();
    let ports = [free_port(), free_port()];
    let mut workers = [
        spawn_worker(&dir, &envs, ports[0]),
        spawn_worker(&dir, &envs, ports[1]),
    ];

    // Exactly one leads, and it runs passes.
    let started = Instant::now();
    let leader = loop {
        assert!(started.elapsed() < LIMIT, "no single leader emerged");
        let states = [leader_state(ports[0]).await, leader_state(ports[1]).await];
        if let [Some((a, pa)), Some((b, pb))] = states {
            match (a, b) {
                (1.0, 0.0) if pa >= 1.0 => break 0,
                (0.0, 1.0) if pb >= 1.0 => break 1,
                (1.0, 1.0) => panic!("two leaders at once"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let follower = 1 - leader;
    let (_, follower_passes) = leader_state(ports[follower])
        .await
        .expect("follower answers");

    // SIGKILL the leader: its lease is not released; the follower takes over within one
    // lease (plus one renewal period of the follower).
    workers[leader].kill().await.expect("SIGKILL the leader");
    let killed = Instant::now();
    let took = loop {
        assert!(
            killed.elapsed() < LEASE * 3,
            "no takeover within {:?}",
            LEASE * 3
        );
        if let Some((1.0, passes)) = leader_state(ports[follower]).await
            && passes > follower_passes
        {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "leader {leader} killed; worker {follower} led and passed after {took:?} (lease {LEASE:?})"
    );

    // The survivor still does the work: deployments requested now all end deployed.
    let mut requested = Vec::new();
    for n in 0..DEPLOYMENTS {
        let new = tests::world::new_deployment(&format!("leader-{n}"), "1");
        let command = Envelope::new(MessageKind::Deploy, new.id, json!({}));
        let row = deployments::create(&db.conn, Route::Direct, new, &command)
            .await
            .expect("create");
        requested.push(row.id);
    }
    let rows = loop {
        let rows = deployed_models::Entity::find()
            .all(&db.conn)
            .await
            .expect("rows");
        if rows.iter().all(|r| r.status == DeploymentStatus::Deployed) {
            break rows;
        }
        assert!(started.elapsed() < LIMIT * 2, "not all deployed: {rows:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    workers[follower].kill().await.expect("stop the follower");
    let terminal = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    let orphaned =
        tests::fault::orphaned_endpoints(emulator.endpoints().into_iter().map(|e| e.name), &rows)
            .len();
    tests::fault::report(&format!(
        "fault leader_killed: requested {} / terminal {terminal} / orphaned {orphaned} / lost {} \
         (takeover {:.1} s after the SIGKILL, lease {} s)",
        requested.len(),
        rows.len() - terminal,
        took.as_secs_f64(),
        LEASE.as_secs()
    ));
    assert_eq!(orphaned, 0);
}
