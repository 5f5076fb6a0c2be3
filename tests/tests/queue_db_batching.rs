//! The embedded queue's batching and wake-ups (docs/design/queue.md, "The embedded queue"),
//! on SQLite and PostgreSQL: consumers waiting together share claims without a message
//! being leased twice or left leased in a buffer; acks are written behind the handler (an
//! ack returns while its delete waits on a locked row) and every ack handed over is
//! committed by `drain`, or by the queue's task once the queue is dropped; a consumer that
//! dies between claim and ack gets its batch redelivered; and a message enqueued by another
//! connection wakes an idle consumer long before its poll.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, PaginatorTrait, QueryFilter,
    Statement,
};
use shared::db::entities::queue_messages::{self, Column};
use shared::domain::DeploymentId;
use shared::queue::db::DbQueue;
use shared::queue::{Delivery, Envelope, MessageKind, Queue, QueueOptions};
use tests::db::{Engine, TestDb};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

fn command() -> Envelope {
    Envelope::new(
        MessageKind::CheckStatus,
        DeploymentId::new(),
        serde_json::Value::Null,
    )
}

fn options(lease: Duration, poll: Duration) -> QueueOptions {
    let mut options = QueueOptions::new(format!("hk-batch-{}", Uuid::new_v4().simple()), 8);
    options.lease = lease;
    options.poll_interval = poll;
    options
}

async fn rows(db: &TestDb, name: &str) -> u64 {
    queue_messages::Entity::find()
        .filter(Column::Queue.eq(name))
        .count(&db.conn)
        .await
        .expect("count")
}

async fn leased(db: &TestDb, name: &str) -> u64 {
    queue_messages::Entity::find()
        .filter(Column::Queue.eq(name))
        .filter(Column::ClaimToken.is_not_null())
        .count(&db.conn)
        .await
        .expect("count")
}

/// `consumers` tasks receive and ack until `n` messages were consumed; returns the message
/// ids each delivery carried.
async fn consume(queue: Arc<dyn Queue>, n: usize, consumers: usize) -> Vec<Uuid> {
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (queue, seen) = (queue.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if seen.lock().await.len() >= n {
                    return;
                }
                let Some(delivery) = queue
                    .receive(Duration::from_millis(300))
                    .await
                    .expect("receive")
                else {
                    continue;
                };
                let id = delivery.envelope().message_id;
                delivery.ack().await.expect("ack");
                seen.lock().await.push(id);
            }
        }));
    }
    for task in tasks {
        task.await.expect("consumer");
    }
    Arc::try_unwrap(seen).expect("consumers done").into_inner()
}

async fn concurrent_consumers_get_each_message_once(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    let queue: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let sent: Vec<Envelope> = (0..400).map(|_| command()).collect();
    let publishes: Vec<_> = sent
        .iter()
        .cloned()
        .map(|e| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.publish(&e, None).await })
        })
        .collect();
    for publish in publishes {
        publish.await.expect("task").expect("publish");
    }
    assert_eq!(rows(&db, &opts.name).await, 400, "every publish committed");

    let got = consume(queue.clone(), sent.len(), 8).await;
    queue.drain().await.expect("drain");

    let unique: HashSet<Uuid> = got.iter().copied().collect();
    let expected: HashSet<Uuid> = sent.iter().map(|e| e.message_id).collect();
    let left = rows(&db, &opts.name).await;
    println!(
        "batching {engine:?}: published {} / delivered {} / distinct {} / left in the table {left}",
        sent.len(),
        got.len(),
        unique.len()
    );
    assert_eq!(got.len(), sent.len(), "no message delivered twice");
    assert_eq!(unique, expected);
    assert_eq!(left, 0, "acked rows are deleted");
    drop(queue);
    db.drop_database().await;
}

async fn a_claim_leases_no_more_rows_than_consumers_wait(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    let queue = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    for _ in 0..50 {
        queue.publish(&command(), None).await.expect("publish");
    }

    let takes: Vec<_> = (0..3)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.receive(WAIT).await })
        })
        .collect();
    let mut held: Vec<Delivery> = Vec::new();
    for take in takes {
        held.push(
            take.await
                .expect("task")
                .expect("receive")
                .expect("message"),
        );
    }

    let leased_now = leased(&db, &opts.name).await;
    println!("{engine:?}: 3 consumers waited, {leased_now} rows leased of 50");
    assert_eq!(leased_now, 3, "only the waiting consumers' rows are leased");
    for delivery in held {
        delivery.ack().await.expect("ack");
    }
    queue.drain().await.expect("drain");
    assert_eq!(rows(&db, &opts.name).await, 47);
    assert_eq!(leased(&db, &opts.name).await, 0);
    db.drop_database().await;
}

/// Publishes 64 messages on a fresh queue and receives them all.
async fn held_deliveries(db: &TestDb, opts: &QueueOptions) -> (Arc<DbQueue>, Vec<Delivery>) {
    let queue = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    for _ in 0..64 {
        queue.publish(&command(), None).await.expect("publish");
    }
    let mut held = Vec::new();
    while held.len() < 64 {
        held.push(
            queue
                .receive(WAIT)
                .await
                .expect("receive")
                .expect("message"),
        );
    }
    (queue, held)
}

async fn drain_commits_every_ack_handed_over(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    let (queue, held) = held_deliveries(&db, &opts).await;

    // All acks at once (they share statements), then the drain a stopping worker runs.
    let acks: Vec<_> = held
        .into_iter()
        .map(|d| tokio::spawn(async move { d.ack().await }))
        .collect();
    let mut answered = 0;
    for ack in acks {
        ack.await.expect("task").expect("ack handed over");
        answered += 1;
    }
    queue.drain().await.expect("drain");

    let left = rows(&db, &opts.name).await;
    println!("{engine:?}: {answered} acks answered, drained, {left} rows left");
    assert_eq!(left, 0, "after drain every ack is a committed delete");
    drop(queue);
    db.drop_database().await;
}

async fn acks_handed_over_are_committed_after_the_queue_is_dropped(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    let (queue, held) = held_deliveries(&db, &opts).await;

    let answered = held.len();
    for delivery in held {
        delivery.ack().await.expect("ack handed over");
    }
    drop(queue); // no drain: the queue's task still finishes its backlog

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut left = rows(&db, &opts.name).await;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = rows(&db, &opts.name).await;
    }
    println!("{engine:?}: {answered} acks handed over, queue dropped, {left} rows left");
    assert_eq!(
        left, 0,
        "the backlog of acks is committed without the queue handle"
    );
    db.drop_database().await;
}

/// The handler is free before its ack commits: with the message's row locked by another
/// transaction the ack returns at once, the drain waits for the lock, and the row is gone
/// once it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_ack_returns_before_its_delete_commits() {
    use sea_orm::{ConnectionTrait, TransactionTrait};
    let db = TestDb::migrated(Engine::Postgres).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    let queue = DbQueue::new(db.conn.clone(), opts.clone());
    queue.publish(&command(), None).await.expect("publish");
    let delivery = queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("message");
    let other = sea_orm::Database::connect(&db.url).await.expect("connect");
    let blocker = other.begin().await.expect("begin");
    blocker
        .execute_unprepared(&format!(
            "SELECT id FROM queue_messages WHERE queue = '{}' FOR UPDATE",
            opts.name
        ))
        .await
        .expect("lock the row");

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(2), delivery.ack())
        .await
        .expect("the ack does not wait for the locked delete")
        .expect("ack handed over");
    let ack_took = started.elapsed();
    let draining = tokio::spawn({
        let queue = queue.clone();
        async move { queue.drain().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let drained_early = draining.is_finished();
    let rows_while_locked = rows(&db, &opts.name).await;
    blocker.rollback().await.expect("release");
    draining.await.expect("task").expect("drain");
    let left = rows(&db, &opts.name).await;
    println!(
        "write-behind: ack returned in {ack_took:?}; while locked: drained {drained_early}, \
         {rows_while_locked} row; after the release {left} rows"
    );
    assert!(!drained_early, "drain waits for the delete to commit");
    assert_eq!(rows_while_locked, 1);
    assert_eq!(left, 0);
    other.close().await.ok();
    drop(queue);
    db.drop_database().await;
}

async fn a_batch_claimed_by_a_dead_consumer_comes_back(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(2), Duration::from_millis(200));
    let doomed = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let sent: Vec<Envelope> = (0..6).map(|_| command()).collect();
    for e in &sent {
        doomed.publish(e, None).await.expect("publish");
    }
    let takes: Vec<_> = (0..6)
        .map(|_| {
            let queue = doomed.clone();
            tokio::spawn(async move { queue.receive(WAIT).await })
        })
        .collect();
    let mut taken = Vec::new();
    for take in takes {
        taken.push(
            take.await
                .expect("task")
                .expect("receive")
                .expect("message"),
        );
    }
    assert_eq!(leased(&db, &opts.name).await, 6);

    // The consumer dies between claim and ack: nothing settles, nothing extends the leases.
    drop(taken);
    drop(doomed);

    let survivor: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let mut again = Vec::new();
    while again.len() < sent.len() {
        let d = survivor
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("redelivered after the lease");
        assert!(d.deliveries() >= 2, "deliveries {}", d.deliveries());
        again.push(d.envelope().message_id);
        d.ack().await.expect("ack");
    }
    survivor.drain().await.expect("drain");
    let left = rows(&db, &opts.name).await;
    println!(
        "{engine:?}: {} redelivered of {}, {left} left",
        again.len(),
        sent.len()
    );
    let expected: HashSet<Uuid> = sent.iter().map(|e| e.message_id).collect();
    assert_eq!(again.into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(left, 0);
    drop(survivor);
    db.drop_database().await;
}

/// An enqueue from another connection, in a committed transaction, with no in-process
/// wake-up: on PostgreSQL the NOTIFY wakes the idle consumer long before its 60 s poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_wakes_an_idle_consumer_before_its_poll() {
    let db = TestDb::migrated(Engine::Postgres).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(60));
    let queue = DbQueue::new(db.conn.clone(), opts.clone());
    // The consumer is idle (its first claim found nothing) before the message exists.
    let waiting = tokio::spawn({
        let queue = queue.clone();
        async move {
            let started = Instant::now();
            let got = queue.receive(Duration::from_secs(30)).await;
            (got, started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let other = sea_orm::Database::connect(&db.url).await.expect("connect");
    let sent = command();
    let txn = sea_orm::TransactionTrait::begin(&other)
        .await
        .expect("begin");
    shared::queue::db::insert(&txn, &opts.name, &sent.to_bytes(), None)
        .await
        .expect("insert");
    txn.commit().await.expect("commit");
    let enqueued = Instant::now();

    let (got, waited) = waiting.await.expect("task");
    let delivery = got.expect("receive").expect("woken by the notification");
    let after_commit = enqueued.elapsed();
    println!("notify: received {after_commit:?} after the commit (waited {waited:?}; poll 60 s)");
    assert_eq!(delivery.envelope().message_id, sent.message_id);
    assert!(
        after_commit < Duration::from_secs(10),
        "woken by the NOTIFY, not by the 60 s poll: {after_commit:?}"
    );
    delivery.ack().await.expect("ack");
    other.close().await.ok();
    drop(queue);
    db.drop_database().await;
}

/// Messages enqueued before the depth test's claims; the table is never analysed.
const DEEP: usize = 20_000;

/// Enqueues [`DEEP`] messages on `name` in multi-row inserts, as a burst of publishes would.
async fn enqueue_deep(db: &TestDb, name: &str) {
    let bodies: Vec<Vec<u8>> = (0..DEEP).map(|_| command().to_bytes()).collect();
    for chunk in bodies.chunks(500) {
        shared::queue::db::insert_many(&db.conn, name, chunk.iter().map(|b| (b.as_slice(), None)))
            .await
            .expect("enqueue");
    }
}

/// A claim reads the first entries of `idx_queue_messages_claim` however deep the backlog,
/// even on a table the database has no statistics for yet (a fresh or fast-filled queue):
/// its plan walks the claim index in order and sorts nothing. (The old
/// `(queue, dead_at, available_at)` index tempted PostgreSQL into sorting all 20,000 ready
/// rows for every claim: 15 ms per claim, docs/benchmarks.md.) Then the queue hands out
/// and acks messages from that depth.
async fn a_claim_walks_the_claim_index_at_any_depth(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    enqueue_deep(&db, &opts.name).await;
    assert_eq!(rows(&db, &opts.name).await, DEEP as u64);
    let candidates = shared::queue::db::claim_candidates(&opts.name, chrono::Utc::now(), 4);
    let backend = db.conn.get_database_backend();
    let (sql, values) = match backend {
        DatabaseBackend::Postgres => candidates.build(PostgresQueryBuilder),
        _ => candidates.build(SqliteQueryBuilder),
    };
    let explain = match backend {
        DatabaseBackend::Postgres => format!("EXPLAIN {sql}"),
        _ => format!("EXPLAIN QUERY PLAN {sql}"),
    };
    let plan: Vec<String> = db
        .conn
        .query_all_raw(Statement::from_sql_and_values(backend, explain, values))
        .await
        .expect("explain the claim")
        .iter()
        .map(|row| match backend {
            DatabaseBackend::Postgres => row.try_get_by_index::<String>(0),
            _ => row.try_get::<String>("", "detail"),
        })
        .collect::<Result<_, _>>()
        .expect("plan lines");
    println!(
        "claim plan at {DEEP} messages ({backend:?}):\n  {}",
        plan.join("\n  ")
    );
    assert!(
        plan.iter().any(|l| l.contains("idx_queue_messages_claim")),
        "the claim must walk idx_queue_messages_claim: {plan:?}"
    );
    assert!(
        !plan
            .iter()
            .any(|l| l.trim_start().starts_with("Sort") || l.contains("TEMP B-TREE")),
        "a claim must not sort the backlog: {plan:?}"
    );
    let queue: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let handled = consume(Arc::clone(&queue), 100, 4).await;
    queue.drain().await.expect("drain");
    let left = rows(&db, &opts.name).await;
    println!("handled {} of {DEEP}; {left} rows left", handled.len());
    assert_eq!(left, (DEEP - handled.len()) as u64);
    drop(queue);
    db.drop_database().await;
}

/// `delivery.ack_within` in a transaction of its own, then committed or rolled back.
async fn ack_within_own_transaction(
    db: &TestDb,
    delivery: &Delivery,
    commit: bool,
) -> Option<bool> {
    use sea_orm::TransactionTrait;
    let txn = db.conn.begin().await.expect("begin");
    let deleted = delivery.ack_within(&txn).await.expect("delete");
    if commit {
        txn.commit().await.expect("commit");
    } else {
        txn.rollback().await.expect("rollback");
    }
    deleted
}

/// A handler that writes to the queue's database deletes its message in its own
/// transaction (`Delivery::ack_within`, docs/design/queue.md, "Ack after commit — or in
/// it"): rolled back, the message stays; committed, it is gone with no ack after. A
/// delivery whose lease expired and whose message another consumer claimed since deletes
/// nothing; the new holder's delete does.
async fn a_message_acked_within_a_transaction_leaves_with_its_commit(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let opts = options(Duration::from_secs(30), Duration::from_millis(200));
    let queue: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    for _ in 0..2 {
        queue.publish(&command(), None).await.expect("publish");
    }

    let first = queue.receive(WAIT).await.expect("receive").expect("first");
    let rolled = ack_within_own_transaction(&db, &first, false).await;
    let after_rollback = rows(&db, &opts.name).await;
    let committed = ack_within_own_transaction(&db, &first, true).await;
    first.acked_within();
    let after_commit = rows(&db, &opts.name).await;

    let stale = queue.receive(WAIT).await.expect("receive").expect("second");
    // Another consumer takes the row over once its lease is free (freed here, as a consumer
    // that stalled past its lease would find it).
    let other: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let taken = {
        db.conn
            .execute_unprepared(&format!(
                "UPDATE queue_messages SET locked_until = NULL WHERE queue = '{}'",
                opts.name
            ))
            .await
            .expect("expire the lease");
        other
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("taken over")
    };
    let lost = ack_within_own_transaction(&db, &stale, false).await;
    let after_lost = rows(&db, &opts.name).await;
    let holder = ack_within_own_transaction(&db, &taken, true).await;
    taken.acked_within();
    let after_holder = rows(&db, &opts.name).await;

    println!(
        "{engine:?}: rolled back {rolled:?} → {after_rollback} rows; committed {committed:?} → \
         {after_commit}; stale claim {lost:?} → {after_lost}; new holder {holder:?} → {after_holder}"
    );
    assert_eq!((rolled, after_rollback), (Some(true), 2));
    assert_eq!((committed, after_commit), (Some(true), 1));
    assert_eq!((lost, after_lost), (Some(false), 1));
    assert_eq!((holder, after_holder), (Some(true), 0));
    drop(stale);
    drop((queue, other));
    db.drop_database().await;
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(Engine::Sqlite).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(Engine::Postgres).await;
                }
            )*
        }
    };
}

on_both!(
    concurrent_consumers_get_each_message_once,
    a_claim_leases_no_more_rows_than_consumers_wait,
    drain_commits_every_ack_handed_over,
    acks_handed_over_are_committed_after_the_queue_is_dropped,
    a_batch_claimed_by_a_dead_consumer_comes_back,
    a_claim_walks_the_claim_index_at_any_depth,
    a_message_acked_within_a_transaction_leaves_with_its_commit,
);

/// `(seq_tup_read, idx_scan of the claim index)` of `queue_messages`, as the statistics
/// collector last heard from every backend.
async fn scan_counters(db: &TestDb) -> (i64, i64) {
    let row = db
        .conn
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT t.seq_tup_read, i.idx_scan FROM pg_stat_user_tables t \
             JOIN pg_stat_user_indexes i ON i.relid = t.relid \
             WHERE t.relname = 'queue_messages' AND i.indexrelname = 'idx_queue_messages_claim'",
        ))
        .await
        .expect("read the table's statistics")
        .expect("queue_messages is in pg_stat_user_tables");
    (
        row.try_get_by_index(0).expect("seq_tup_read"),
        row.try_get_by_index(1).expect("idx_scan"),
    )
}

/// The claim statement is prepared once per lease session and PostgreSQL may switch it to
/// a cached generic plan after five runs. Planned while the table was nearly empty, that
/// plan scanned the whole table for every later claim (seen in `scripts/bench queue`: one
/// run in four fell from ~4,700 to ~1,500 msg/s, every claim a sequential scan of the
/// backlog; docs/benchmarks.md, "A plan cached on an empty table"). So the first claims
/// here run one by one on a table of one row, then the backlog grows to 20,000 and 200
/// messages are consumed: the table's statistics must show no sequential read of it, once
/// they show the claims' index scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_claim_planned_on_an_empty_table_never_scans_the_grown_table() {
    let db = TestDb::migrated(Engine::Postgres).await;
    let opts = options(Duration::from_secs(30), Duration::from_secs(1));
    let queue: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    for _ in 0..16 {
        queue.publish(&command(), None).await.expect("publish");
        let delivery = queue
            .receive(WAIT)
            .await
            .expect("receive")
            .expect("the message just published");
        delivery.ack().await.expect("ack");
    }
    queue.drain().await.expect("drain");
    enqueue_deep(&db, &opts.name).await;
    // Backends report their counters about a second after their last statement.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (seq_before, claims_before) = scan_counters(&db).await;
    let handled = consume(Arc::clone(&queue), 200, 4).await;
    queue.drain().await.expect("drain");
    // At most 4 rows per claim: at least 50 claims, each an index scan once reported.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (seq_after, claims_after) = loop {
        let (seq, claims) = scan_counters(&db).await;
        if claims - claims_before >= 50 || Instant::now() > deadline {
            break (seq, claims);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "{} messages handled from a backlog of {DEEP}: {} claim index scans, {} rows read sequentially",
        handled.len(),
        claims_after - claims_before,
        seq_after - seq_before
    );
    assert!(
        claims_after - claims_before >= 50,
        "the claims' statistics never arrived ({} index scans counted)",
        claims_after - claims_before
    );
    assert!(
        seq_after - seq_before < DEEP as i64,
        "claims scanned the table: {} rows read sequentially for {} messages",
        seq_after - seq_before,
        handled.len()
    );
    drop(queue);
    db.drop_database().await;
}

/// A saga step as one statement (`db::one_statement`, docs/design/queue.md, "A step in one
/// statement") writes everything or nothing: applied, the deployment moves, its event and
/// follow-up command are written and its message is gone; from a stale read of the
/// deployment, or with a claim another consumer took over, nothing is written and the
/// message stays with its holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_in_one_statement_writes_everything_or_nothing() {
    a_step_in_one_statement(Engine::Postgres).await;
}

/// The same on SQLite, where the step is one script in a transaction that commits only
/// when every guard answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_in_one_sqlite_script_writes_everything_or_nothing() {
    a_step_in_one_statement(Engine::Sqlite).await;
}

async fn a_step_in_one_statement(engine: Engine) {
    use sea_orm::TransactionTrait;
    use shared::db::deployments::{self, Changes};
    use shared::db::one_statement::{OneStatement, Outcome};
    use shared::db::outbox::{self, Route};
    use shared::db::transitions;
    use shared::domain::DeploymentStatus;
    use shared::queue::DEPLOYMENTS_QUEUE;

    let db = TestDb::migrated(engine).await;
    let backend = db.conn.get_database_backend();
    let conn = &db.conn;
    // As `Plan::commit` runs it: on SQLite in a transaction committed only when written.
    let run = move |statement: OneStatement| async move {
        if backend != DatabaseBackend::Sqlite {
            return statement.run(conn).await.expect("run");
        }
        let txn = conn.begin().await.expect("begin");
        let outcome = statement.run_in(&txn).await.expect("run");
        if outcome == Outcome::Written {
            txn.commit().await.expect("commit");
        } else {
            txn.rollback().await.expect("rollback");
        }
        outcome
    };
    let mut opts = options(Duration::from_secs(30), Duration::from_millis(200));
    opts.name = DEPLOYMENTS_QUEUE.to_owned();
    let queue: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let new = tests::world::new_deployment("one-statement", "1");
    let id = new.id;
    let deploy = Envelope::new(MessageKind::Deploy, id, serde_json::Value::Null);
    let created = deployments::create(&db.conn, Route::Direct, new, &deploy)
        .await
        .expect("create");
    // One step: pending → deploying, its event, a check_status command; the message goes.
    let step = |delivery: &Delivery, read: &deployments::Deployment, to: DeploymentStatus| {
        let now = chrono::Utc::now();
        let transition = deployments::Transition {
            to,
            message: "one statement".into(),
            details: None,
            changes: Changes::default(),
        };
        let planned = transitions::plan_transition(read, transition, now).expect("legal");
        let event = deployments::event_row(
            backend,
            read.id,
            planned.to,
            "transition",
            Some(read.status),
            "one statement",
            None,
        );
        let next = Envelope::new(MessageKind::CheckStatus, id, serde_json::Value::Null);
        let claim = delivery
            .claim_for_commit()
            .expect("a claim on the embedded queue");
        let note = deployments::event_row(
            backend,
            read.id,
            planned.to,
            "note",
            None,
            "after the transition",
            None,
        );
        OneStatement::new(claim)
            // As an activation does: the model's operation lock, bumped once written.
            .locking_model(&read.model_id)
            .update(planned.update)
            .insert(event)
            .insert(note)
            .insert(outbox::direct_row(DEPLOYMENTS_QUEUE, &next, None, now))
    };
    let state = || async {
        let row = deployments::get(&db.conn, id)
            .await
            .expect("get")
            .expect("row");
        let events = deployments::events(&db.conn, id)
            .await
            .expect("events")
            .len();
        let version = db
            .conn
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT version FROM model_operations WHERE model_id = 'one-statement'",
            ))
            .await
            .expect("model version")
            .map(|r| r.try_get_by_index::<i64>(0).expect("version"))
            .unwrap_or(0);
        (
            row.status,
            row.lock_version,
            events,
            rows(&db, DEPLOYMENTS_QUEUE).await,
            version,
        )
    };
    let before = state().await;

    let first = queue.receive(WAIT).await.expect("receive").expect("deploy");
    // No operation on the model created its row yet. PostgreSQL: nothing to lock, nothing
    // written (the caller commits in a transaction). SQLite's script creates the row as
    // the transaction's lock does, so the step is written at once.
    let mut unlocked = None;
    if engine == Engine::Postgres {
        let outcome = run(step(&first, &created, DeploymentStatus::Deploying)).await;
        unlocked = Some((outcome, state().await));
        db.conn
            .execute_unprepared(
                "INSERT INTO model_operations (model_id, version, updated_at) \
                 VALUES ('one-statement', 0, now())",
            )
            .await
            .expect("the model's operation row");
    }
    if engine == Engine::Sqlite {
        // Outside a transaction a failed guard could not undo the writes before it: refused.
        let refused = step(&first, &created, DeploymentStatus::Deploying)
            .run(conn)
            .await
            .expect_err("a script outside a transaction");
        assert!(refused.to_string().contains("run_in"), "{refused}");
    }
    let applied = run(step(&first, &created, DeploymentStatus::Deploying)).await;
    first.acked_within();
    let after_applied = state().await;

    // The check_status step, decided from the row as read before the first step.
    let second = queue
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("check_status");
    let stale = run(step(&second, &created, DeploymentStatus::Deploying)).await;
    let after_stale = state().await;

    // Its lease runs out and another consumer takes the message over.
    db.conn
        .execute_unprepared(&format!(
            "UPDATE queue_messages SET locked_until = NULL WHERE queue = '{DEPLOYMENTS_QUEUE}'"
        ))
        .await
        .expect("expire the lease");
    let other: Arc<dyn Queue> = Arc::new(DbQueue::new(db.conn.clone(), opts.clone()));
    let taken = other
        .receive(WAIT)
        .await
        .expect("receive")
        .expect("taken over");
    let current = deployments::get(&db.conn, id)
        .await
        .expect("get")
        .expect("row");
    let lost = run(step(&second, &current, DeploymentStatus::Deployed)).await;
    let after_lost = state().await;
    let holder = run(step(&taken, &current, DeploymentStatus::Deployed)).await;
    taken.acked_within();
    let after_holder = state().await;

    // A second event, inserted after the first (the inserts keep the plan's order).
    let order: Vec<String> = deployments::events(&db.conn, id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();

    println!(
        "(status, lock_version, events, messages, model version): before {before:?}; applied {applied:?} → \
         {after_applied:?}; stale read {stale:?} → {after_stale:?}; lost claim {lost:?} → \
         {after_lost:?}; new holder {holder:?} → {after_holder:?}; unlocked model \
         {unlocked:?}; events {order:?}"
    );
    let (_, version, events, messages, model) = before;
    assert_eq!(messages, 1, "the deploy command");
    assert_eq!(applied, Outcome::Written);
    assert_eq!(
        after_applied,
        (
            DeploymentStatus::Deploying,
            version + 1,
            events + 2,
            1,
            model + 1
        ),
        "moved, two events, the deploy command replaced by its follow-up, the model's version bumped"
    );
    assert_eq!((stale, after_stale), (Outcome::Stale, after_applied));
    assert_eq!((lost, after_lost), (Outcome::Lost, after_applied));
    assert_eq!(holder, Outcome::Written);
    assert_eq!(
        after_holder,
        (
            DeploymentStatus::Deployed,
            version + 2,
            events + 4,
            1,
            model + 2
        )
    );
    if engine == Engine::Postgres {
        assert_eq!(unlocked, Some((Outcome::Unlocked, before)));
    }
    assert_eq!(
        order,
        ["created", "transition", "note", "transition", "note"],
        "a step's events in the plan's order"
    );
    drop(second);
    drop((queue, other));

    // A broker's message: the inbox instead of the claim. Written once with its inbox row
    // and an outbox row; its copy finds the inbox row; a copy decided from the row as read
    // before the first commit finds the deployment changed.
    let message = Uuid::now_v7();
    let inbox_step = |read: &deployments::Deployment| {
        let now = chrono::Utc::now();
        let planned = transitions::plan_observe(
            read,
            Changes {
                provider_status: Some(format!("state-{}", read.lock_version)),
                ..Changes::default()
            },
            None,
            now,
        );
        let next = Envelope::new(MessageKind::CheckStatus, id, serde_json::Value::Null);
        OneStatement::for_message(message)
            .update(planned.update)
            .insert(outbox::relay_row(DEPLOYMENTS_QUEUE, &next, None, now))
    };
    let counts = || async {
        let inbox = db
            .conn
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT (SELECT count(*) FROM processed_messages), (SELECT count(*) FROM outbox)",
            ))
            .await
            .expect("count")
            .expect("a row");
        let lock_version = deployments::get(&db.conn, id)
            .await
            .expect("get")
            .expect("row")
            .lock_version;
        (
            inbox.try_get_by_index::<i64>(0).expect("inbox"),
            inbox.try_get_by_index::<i64>(1).expect("outbox"),
            lock_version,
        )
    };
    let read = deployments::get(&db.conn, id)
        .await
        .expect("get")
        .expect("row");
    let inbox_before = counts().await;
    let first = run(inbox_step(&read)).await;
    let inbox_after = counts().await;
    let fresh = deployments::get(&db.conn, id)
        .await
        .expect("get")
        .expect("row");
    let copy = run(inbox_step(&fresh)).await;
    let concurrent = run(inbox_step(&read)).await;
    let inbox_end = counts().await;
    println!(
        "(inbox, outbox, lock_version): before {inbox_before:?}; first {first:?} → \
         {inbox_after:?}; copy {copy:?}, copy from the old read {concurrent:?} → {inbox_end:?}"
    );
    let (inbox, outbox_rows, version) = inbox_before;
    assert_eq!(
        (first, inbox_after),
        (Outcome::Written, (inbox + 1, outbox_rows + 1, version + 1))
    );
    assert_eq!((copy, concurrent), (Outcome::Handled, Outcome::Handled));
    assert_eq!(inbox_end, inbox_after);
    db.drop_database().await;
}
