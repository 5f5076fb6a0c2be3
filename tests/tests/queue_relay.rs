//! The transactional outbox end to end: commands written with `Route::Relay` reach a real
//! RabbitMQ queue through the relay in creation order, delayed ones not early (and ones due
//! within the broker's one-second resolution not a second late), and a new relay (a
//! restart) publishes nothing twice; with `Route::Direct` the business
//! transaction itself enqueues on the db backend, all or nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, TransactionTrait};
use shared::config::Secret;
use shared::db::deployments::{self, NewDeployment};
use shared::db::entities::outbox as outbox_rows;
use shared::db::outbox::{self, Route};
use shared::domain::{DeploymentId, ModelId};
use shared::queue::rabbitmq::RabbitMqQueue;
use shared::queue::{Envelope, MessageKind, Queue};
use tests::db::{Engine, TestDb};
use tests::proxy::TcpProxy;
use tests::queue::{Backend, TestQueue};
use worker::relay::Relay;

fn command() -> Envelope {
    Envelope::new(
        MessageKind::CheckStatus,
        DeploymentId::new(),
        serde_json::Value::Null,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_committed_rows_in_order_once_and_honours_delays() {
    let t = TestQueue::new(Backend::RabbitMq, 8).await;
    let db = TestDb::migrated(Engine::Postgres).await;
    let (queue, name) = (t.queue.clone(), t.options.name.clone());
    let commands: Vec<Envelope> = (0..5).map(|_| command()).collect();
    let delayed = command();
    let txn = db.conn.begin().await.expect("begin");
    for c in &commands {
        outbox::enqueue(&txn, Route::Relay, &name, c, None)
            .await
            .expect("enqueue");
    }
    let delay = Some(Duration::from_secs(2));
    outbox::enqueue(&txn, Route::Relay, &name, &delayed, delay)
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    let started = Instant::now();

    let first = Relay::new(db.conn.clone(), queue.clone());
    let published = first.try_relay_batch().await;
    first.release().await.expect("release the relay lease");
    let after_restart = Relay::new(db.conn.clone(), queue.clone())
        .try_relay_batch()
        .await;

    assert_eq!(published.expect("relay"), 6);
    assert_eq!(after_restart.expect("relay again"), 0);
    let pending = outbox_rows::Entity::find()
        .filter(outbox_rows::Column::PublishedAt.is_null())
        .count(&db.conn)
        .await
        .expect("count");
    assert_eq!(pending, 0);
    for expected in &commands {
        let d = queue
            .receive(Duration::from_secs(10))
            .await
            .expect("receive")
            .expect("message");
        assert_eq!(d.envelope().message_id, expected.message_id);
        d.ack().await.expect("ack");
    }
    let last = queue
        .receive(Duration::from_secs(10))
        .await
        .expect("receive")
        .expect("delayed");
    assert_eq!(last.envelope().message_id, delayed.message_id);
    assert!(started.elapsed() >= Duration::from_secs(2));
    last.ack().await.expect("ack");
    db.drop_database().await;
    t.cleanup().await;
}

/// A broker takes delays in whole seconds, rounded up: a row due sooner waits in the
/// outbox, with the row behind it of the same deployment, and goes out undelayed once due,
/// while another deployment's row goes out at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_due_within_the_brokers_resolution_waits_in_the_outbox_and_goes_out_undelayed() {
    let t = TestQueue::new(Backend::RabbitMq, 8).await;
    let db = TestDb::migrated(Engine::Postgres).await;
    let (queue, name) = (t.queue.clone(), t.options.name.clone());
    assert_eq!(queue.delay_resolution(), Duration::from_secs(1));
    let deployment = DeploymentId::new();
    let soon = Envelope::new(
        MessageKind::CheckStatus,
        deployment,
        serde_json::Value::Null,
    );
    let behind = Envelope::new(MessageKind::Undeploy, deployment, serde_json::Value::Null);
    let other = command();
    let short = Duration::from_millis(300);
    let txn = db.conn.begin().await.expect("begin");
    for (envelope, delay) in [(&soon, Some(short)), (&behind, None), (&other, None)] {
        outbox::enqueue(&txn, Route::Relay, &name, envelope, delay)
            .await
            .expect("enqueue");
    }
    txn.commit().await.expect("commit");

    let relay = Relay::new(db.conn.clone(), queue.clone());
    let first = relay.relay_batch().await.expect("relay");
    let first_out = queue
        .receive(Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("the other deployment's row");
    let first_out_id = first_out.envelope().message_id;
    first_out.ack().await.expect("ack");
    let due = first.next_due.expect("a held row says when it is due");
    tokio::time::sleep(due).await;
    let second = relay.relay_batch().await.expect("relay");
    let mut then = Vec::new();
    for _ in 0..2 {
        // Undelayed: on the main queue at once, not in the one-second delay queue.
        let d = queue
            .receive(Duration::from_millis(500))
            .await
            .expect("receive")
            .expect("the held rows, published undelayed");
        then.push(d.envelope().message_id);
        d.ack().await.expect("ack");
    }

    println!(
        "first batch: read {}, published {}, held {} (due in {due:?}); second: published {}, held {}",
        first.read, first.published, first.held, second.published, second.held
    );
    assert_eq!((first.read, first.published, first.held), (3, 1, 2));
    assert!(due <= short, "due in {due:?}, delayed by {short:?}");
    assert_eq!(first_out_id, other.message_id);
    assert_eq!((second.published, second.held), (2, 0));
    assert_eq!(then, vec![soon.message_id, behind.message_id]);
    db.drop_database().await;
    t.cleanup().await;
}

/// Outbox rows not yet marked published.
async fn pending(db: &TestDb) -> u64 {
    outbox_rows::Entity::find()
        .filter(outbox_rows::Column::PublishedAt.is_null())
        .count(&db.conn)
        .await
        .expect("count pending rows")
}

/// A relay publishes only while its lease surely runs: with the broker frozen behind a
/// proxy (connections open, not a byte answered) a batch ends when the lease does, its rows
/// left pending and nothing marked; once the broker answers again the next batch renews
/// the lease and publishes them. Every command arrives (the frozen publishes may arrive
/// too: copies with the same message id, which consumers' inbox absorbs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_stops_publishing_when_its_lease_runs_out() {
    let t = TestQueue::new(Backend::RabbitMq, 8).await;
    let db = TestDb::migrated(Engine::Postgres).await;
    let (proxy, url) = TcpProxy::in_front_of(&tests::queue::amqp_url()).await;
    let through: Arc<dyn Queue> = Arc::new(
        RabbitMqQueue::connect(&Secret::new(url), t.options.clone())
            .await
            .expect("RabbitMQ through the proxy"),
    );
    let ttl = Duration::from_secs(3);
    let relay = Relay::new(db.conn.clone(), through).leasing_for(ttl);
    let mut sent = HashSet::new();
    for _ in 0..3 {
        let command = command();
        outbox::enqueue(&db.conn, Route::Relay, &t.options.name, &command, None)
            .await
            .expect("enqueue");
        sent.insert(command.message_id);
    }

    proxy.freeze();
    let began = Instant::now();
    let frozen = relay
        .relay_batch()
        .await
        .expect("a batch the lease cut short is no error");
    let took = began.elapsed();
    let left = pending(&db).await;
    proxy.thaw();
    let next = relay.relay_batch().await.expect("the batch after the thaw");
    let left_after = pending(&db).await;
    let mut received = Vec::new();
    while let Some(delivery) = t
        .queue
        .receive(Duration::from_secs(3))
        .await
        .expect("receive")
    {
        received.push(delivery.envelope().message_id);
        delivery.ack().await.expect("ack");
    }
    let distinct: HashSet<_> = received.iter().copied().collect();

    println!(
        "frozen broker: batch ended after {took:?} (lease {ttl:?}), published {} / cut {} / \
         pending {left}; after the thaw: published {} / cut {} / pending {left_after}; \
         received {} deliveries of {} distinct commands (sent {})",
        frozen.published,
        frozen.cut,
        next.published,
        next.cut,
        received.len(),
        distinct.len(),
        sent.len()
    );
    assert_eq!((frozen.published, frozen.cut), (0, 3));
    assert!(
        took < ttl,
        "publishing stops before the lease can pass to another relay: {took:?}"
    );
    assert_eq!(left, 3, "nothing unconfirmed is marked published");
    assert_eq!((next.published, next.cut, left_after), (3, 0, 0));
    assert_eq!(distinct, sent, "every command arrives");
    relay.release().await.expect("release");
    db.drop_database().await;
    t.cleanup().await;
}

fn new_deployment(id: DeploymentId) -> NewDeployment {
    NewDeployment {
        id,
        model_id: ModelId::parse("fraud-detector").expect("model id"),
        model_version: Some("3".into()),
        provider: "huggingface".into(),
        instance_type: "intel-spr".into(),
        instance_size: Some("x2".into()),
        vendor: None,
        region: None,
        task: None,
        framework: None,
        repository: Some("org/name".into()),
        revision: None,
        metadata: None,
        hourly_cost_usd: None,
        idempotency_key: None,
    }
}

/// The lease row of the relay: (holder, expires_at as the database's epoch seconds).
async fn relay_lease(db: &TestDb) -> (String, f64) {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .conn
        .query_one_raw(Statement::from_string(
            db.conn.get_database_backend(),
            "SELECT holder, expires_at FROM leader_leases WHERE name = 'outbox_relay'",
        ))
        .await
        .expect("read the lease")
        .expect("the relay's lease row");
    (
        row.try_get_by_index(0).expect("holder"),
        row.try_get_by_index(1).expect("expires_at"),
    )
}

/// A busy relay renews its lease only when less than 10 s of it surely remain, not before
/// every batch; another relay still publishes nothing while the lease runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_relay_renews_its_lease_only_when_it_runs_low() {
    let t = TestQueue::new(Backend::RabbitMq, 8).await;
    let db = TestDb::migrated(Engine::Postgres).await;
    let (queue, name) = (t.queue.clone(), t.options.name.clone());
    let enqueue = |n: usize| {
        let (conn, name) = (db.conn.clone(), name.clone());
        async move {
            for _ in 0..n {
                outbox::enqueue(&conn, Route::Relay, &name, &command(), None)
                    .await
                    .expect("enqueue");
            }
        }
    };
    let relay = Relay::new(db.conn.clone(), queue.clone());
    let other = Relay::new(db.conn.clone(), queue.clone());

    enqueue(2).await;
    let first = relay.try_relay_batch().await.expect("first batch");
    let taken = relay_lease(&db).await;
    enqueue(3).await;
    let by_other = other.try_relay_batch().await.expect("other relay");
    let second = relay.try_relay_batch().await.expect("second batch");
    let young = relay_lease(&db).await;
    // 15 s lease, a tenth spared for clock rates, renewed with less than 10 s left: 3.5 s.
    tokio::time::sleep(Duration::from_millis(3_700)).await;
    enqueue(1).await;
    let third = relay.try_relay_batch().await.expect("third batch");
    let renewed = relay_lease(&db).await;
    let published = outbox_rows::Entity::find()
        .filter(outbox_rows::Column::PublishedAt.is_not_null())
        .count(&db.conn)
        .await
        .expect("count");

    println!(
        "published {first} / other relay {by_other} / {second} / {third} (outbox: {published} \
         marked); lease expiry {:.3} → {:.3} (no renewal) → {:.3}",
        taken.1, young.1, renewed.1
    );
    assert_eq!((first, by_other, second, third), (2, 0, 3, 1));
    assert_eq!(published, 6);
    assert_eq!(young, taken, "a young lease is not renewed before a batch");
    assert_eq!(renewed.0, taken.0, "the same holder");
    assert!(
        renewed.1 >= taken.1 + 3.5,
        "a lease with less than 10 s left is renewed before the batch: {renewed:?} after {taken:?}"
    );
    relay.release().await.expect("release");
    for _ in 0..published {
        let d = queue
            .receive(Duration::from_secs(10))
            .await
            .expect("receive")
            .expect("message");
        d.ack().await.expect("ack");
    }
    db.drop_database().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_db_backend_the_business_transaction_is_the_enqueue() {
    let t = TestQueue::new(Backend::DbPostgres, 8).await;
    let queue = shared::queue::db::DbQueue::new(
        t.db.conn.clone(),
        shared::queue::QueueOptions::new(shared::queue::DEPLOYMENTS_QUEUE, 8),
    );
    let id = DeploymentId::new();
    let cmd = Envelope::new(MessageKind::Deploy, id, serde_json::Value::Null);

    deployments::create(&t.db.conn, Route::Direct, new_deployment(id), &cmd)
        .await
        .expect("create");
    let again = Envelope::new(MessageKind::Deploy, id, serde_json::Value::Null);
    let duplicate = deployments::create(&t.db.conn, Route::Direct, new_deployment(id), &again);

    assert!(
        duplicate.await.is_err(),
        "same deployment id twice must fail"
    );
    assert_eq!(
        outbox_rows::Entity::find()
            .count(&t.db.conn)
            .await
            .expect("count"),
        0
    );
    let d = queue
        .receive(Duration::from_secs(5))
        .await
        .expect("receive")
        .expect("command");
    assert_eq!(d.envelope().message_id, cmd.message_id);
    d.ack().await.expect("ack");
    assert!(
        queue
            .receive(Duration::from_secs(1))
            .await
            .expect("receive")
            .is_none()
    );
    t.cleanup().await;
}
