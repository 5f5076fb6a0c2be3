//! Crash test of the deployment saga (issues 5 and 11): 200 deployments in flight on the embedded
//! PostgreSQL queue, three real `hokusai-serve worker` processes SIGKILLed at random moments
//! and restarted. Afterwards every deployment must be settled (`deployed`: the emulator runs
//! no chaos), the emulator must hold exactly the endpoints the database records for deployed
//! deployments, and no queue message may be left over or dead-lettered.
//!
//! The kill schedule comes from a seeded generator; the seed is printed and can be replayed
//! with `HOKUSAI_CRASH_SEED=<seed>`. Workers run with a 3 s queue lease so a killed worker's
//! messages come back quickly.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use sea_orm::{DatabaseConnection, EntityTrait};
use shared::db::deployments;
use shared::db::entities::{deployed_models, queue_messages};
use shared::db::outbox::Route;
use shared::domain::DeploymentStatus;
use shared::queue::{Envelope, MessageKind};
use tests::db::{Engine, TestDb};
use tests::process;
use tests::world::new_deployment;
use tokio::process::Child;

const DEPLOYMENTS: usize = 200;
const WORKERS: usize = 3;
/// How long workers keep being killed (less if everything settles sooner).
const CHAOS: Duration = Duration::from_secs(25);
/// The whole test, chaos included.
const LIMIT: Duration = Duration::from_secs(240);

/// splitmix64: a tiny seeded generator, so a failing kill schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("HOKUSAI_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.expect("clock after 1970").as_nanos() as u64
        })
}

/// Starts one worker process, its stderr appended to `log`.
fn spawn_worker(dir: &Path, log: &Path, envs: &[(&str, &str)]) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("worker log");
    process::command(dir, &["worker"], envs)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("the worker starts")
}

/// (settled, all) where settled means `deployed` or a terminal status.
async fn settled(db: &DatabaseConnection) -> (usize, Vec<deployed_models::Model>) {
    let rows = deployed_models::Entity::find()
        .all(db)
        .await
        .expect("list deployments");
    let done = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    (done, rows)
}

/// Live (not dead) and dead queue messages.
async fn queue_rows(db: &DatabaseConnection) -> (usize, usize) {
    let rows = queue_messages::Entity::find()
        .all(db)
        .await
        .expect("list queue messages");
    let dead = rows.iter().filter(|r| r.dead_at.is_some()).count();
    (rows.len() - dead, dead)
}

async fn request_all(db: &TestDb) {
    for i in 0..DEPLOYMENTS {
        let new = new_deployment(&format!("crash-model-{i:03}"), "1");
        let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
        deployments::create(&db.conn, Route::Direct, new, &command)
            .await
            .expect("create deployment");
    }
}

fn worker_env(db: &TestDb, emulator: &EmulatorHandle) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("QUEUE_BACKEND", "db".into()),
        ("QUEUE_LEASE_SECONDS", "3".into()),
        ("HUGGINGFACE_API_KEY", emulator.token.clone()),
        ("HUGGINGFACE_NAMESPACE", "hokusai".into()),
        ("HUGGINGFACE_API_BASE", emulator.base_url.clone()),
        ("RUST_LOG", "warn".into()),
        ("ENVIRONMENT", "development".into()),
    ]
}

/// Waits until `check` holds, panicking with `what` and the worker log once `LIMIT` (from
/// `started`) has passed.
async fn wait_for<F, Fut>(started: Instant, log: &Path, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    loop {
        match check().await {
            Ok(()) => return,
            Err(state) if started.elapsed() > LIMIT => {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "timed out after {LIMIT:?} waiting for {what}: {state}\n\
                     last worker log lines (newest first):\n{}",
                    tail.join("\n")
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_no_deployment_and_leave_no_orphan_endpoint() {
    // Arrange
    let started = Instant::now();
    let seed = seed();
    println!("crash test seed: {seed} (replay with HOKUSAI_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let db = TestDb::migrated(Engine::Postgres).await;
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    request_all(&db).await;
    let dir = process::scratch_dir();
    let log = dir.join("workers.log");
    let env = worker_env(&db, &emulator);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut workers: Vec<Child> = (0..WORKERS)
        .map(|_| spawn_worker(&dir, &log, &envs))
        .collect();

    // Act: kill a random worker every 0.05–0.8 s and start a new one in its place.
    let (mut kills, mut kills_in_flight) = (0, 0);
    while started.elapsed() < CHAOS && settled(&db.conn).await.0 < DEPLOYMENTS {
        tokio::time::sleep(Duration::from_millis(50 + rng.below(750))).await;
        let victim = rng.below(WORKERS as u64) as usize;
        let in_flight = settled(&db.conn).await.0 < DEPLOYMENTS;
        workers[victim].kill().await.expect("SIGKILL the worker");
        kills += 1;
        kills_in_flight += usize::from(in_flight);
        workers[victim] = spawn_worker(&dir, &log, &envs);
    }
    println!(
        "{kills} SIGKILLs ({kills_in_flight} with work in flight) in {:.1} s; {}/{DEPLOYMENTS} \
         settled meanwhile",
        started.elapsed().as_secs_f64(),
        settled(&db.conn).await.0
    );
    wait_for(started, &log, "every deployment to settle", || async {
        let (done, _) = settled(&db.conn).await;
        (done == DEPLOYMENTS)
            .then_some(())
            .ok_or(format!("{done}/{DEPLOYMENTS} settled"))
    })
    .await;
    wait_for(started, &log, "the queue to drain", || async {
        match queue_rows(&db.conn).await {
            (0, _) => Ok(()),
            (live, dead) => Err(format!("{live} live and {dead} dead messages")),
        }
    })
    .await;
    for worker in &mut workers {
        worker.kill().await.expect("stop the worker");
    }

    // Assert
    let (_, rows) = settled(&db.conn).await;
    let deployed: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed)
        .filter_map(|r| r.provider_model_id.clone())
        .collect();
    let held: BTreeSet<String> = emulator.endpoints().into_iter().map(|e| e.name).collect();
    let orphaned: Vec<&String> = held.difference(&deployed).collect();
    let missing: Vec<&String> = deployed.difference(&held).collect();
    let terminal = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed || r.status.is_terminal())
        .count();
    let (live, dead) = queue_rows(&db.conn).await;
    tests::fault::report(&format!(
        "fault saga_crash: requested {DEPLOYMENTS} / terminal {terminal} / orphaned {} / lost {} \
         ({kills} kills, seed {seed}, {:.1} s)",
        orphaned.len(),
        DEPLOYMENTS - deployed.len(),
        started.elapsed().as_secs_f64()
    ));
    let not_deployed: Vec<String> = rows
        .iter()
        .filter(|r| r.status != DeploymentStatus::Deployed)
        .map(|r| format!("{} {}", r.model_id, r.status))
        .collect();
    assert!(not_deployed.is_empty(), "not deployed: {not_deployed:?}");
    assert_eq!(
        deployed.len(),
        DEPLOYMENTS,
        "every deployment names its endpoint"
    );
    assert!(orphaned.is_empty(), "orphaned endpoints: {orphaned:?}");
    assert!(
        missing.is_empty(),
        "deployed without an endpoint: {missing:?}"
    );
    assert_eq!((live, dead), (0, 0), "queue messages left (live, dead)");
    assert!(
        kills_in_flight > 0,
        "no worker was killed while work was in flight"
    );
    db.drop_database().await;
}
