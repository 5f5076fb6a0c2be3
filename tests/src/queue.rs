//! Queues for tests: the same [`Queue`] trait on every backend, each test on its own fresh
//! queue names (RabbitMQ, SQS) or its own database (db backend), removed afterwards.
//!
//! Services are required, never optional: RabbitMQ at `HOKUSAI_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`), PostgreSQL as in [`crate::db`], and an SQS
//! server (moto, started by `scripts/test`) at `HOKUSAI_TEST_SQS_ENDPOINT`. A test whose
//! service is missing fails with a message naming the variable.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use shared::config::Secret;
use shared::queue::db::DbQueue;
use shared::queue::rabbitmq::RabbitMqQueue;
use shared::queue::sqs::SqsQueue;
use shared::queue::{Queue, QueueOptions};
use uuid::Uuid;

use crate::db::{Engine, TestDb};

/// The RabbitMQ the tests use.
pub fn amqp_url() -> String {
    std::env::var("HOKUSAI_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// An SQS client on the test SQS server (`HOKUSAI_TEST_SQS_ENDPOINT`).
pub fn sqs_client() -> Client {
    let endpoint = std::env::var("HOKUSAI_TEST_SQS_ENDPOINT").expect(
        "HOKUSAI_TEST_SQS_ENDPOINT must name a running SQS server (e.g. moto_server on \
         http://127.0.0.1:5055); scripts/test starts one",
    );
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .build();
    Client::from_conf(config)
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The db backend on SQLite.
    DbSqlite,
    /// The db backend on PostgreSQL.
    DbPostgres,
    /// RabbitMQ.
    RabbitMq,
    /// SQS (moto).
    Sqs,
}

/// A fresh queue on one backend, plus a fresh database for the consumers' inbox (the
/// queue's own database on the db backend).
pub struct TestQueue {
    /// The queue under test.
    pub queue: Arc<dyn Queue>,
    /// Its database (db backend) or a SQLite database for the inbox.
    pub db: TestDb,
    /// Names and limits in use.
    pub options: QueueOptions,
    backend: Backend,
    sqs_urls: Option<(String, String)>,
}

impl TestQueue {
    /// A fresh queue on `backend` with `max_attempts` and a short lease (2 s) so abandoned
    /// deliveries come back quickly.
    pub async fn new(backend: Backend, max_attempts: u32) -> TestQueue {
        let name = format!("hk-test-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let mut options = QueueOptions::new(name, max_attempts);
        options.lease = Duration::from_secs(2);
        let engine = match backend {
            Backend::DbPostgres => Engine::Postgres,
            _ => Engine::Sqlite,
        };
        let db = TestDb::migrated(engine).await;
        let sqs_urls = match backend {
            Backend::Sqs => Some(
                SqsQueue::provision(&sqs_client(), &options.name, max_attempts, options.lease)
                    .await
                    .expect("create SQS queues on the test SQS server"),
            ),
            _ => None,
        };
        let mut test = TestQueue {
            queue: Arc::new(DbQueue::new(db.conn.clone(), options.clone())),
            db,
            options,
            backend,
            sqs_urls,
        };
        test.queue = test.another_consumer().await;
        test
    }

    /// A second, independent handle on the same queue (its own connection), e.g. a
    /// consumer process that will crash.
    pub async fn another_consumer(&self) -> Arc<dyn Queue> {
        let options = self.options.clone();
        match self.backend {
            Backend::DbSqlite | Backend::DbPostgres => {
                Arc::new(DbQueue::new(self.db.conn.clone(), options))
            }
            Backend::RabbitMq => Arc::new(
                RabbitMqQueue::connect(&Secret::new(amqp_url()), options)
                    .await
                    .expect("RabbitMQ must be reachable (HOKUSAI_TEST_AMQP_URL)"),
            ),
            Backend::Sqs => {
                let (queue_url, dlq_url) = self.sqs_urls.clone().expect("SQS queues provisioned");
                Arc::new(SqsQueue::new(sqs_client(), queue_url, dlq_url, options))
            }
        }
    }

    /// Deletes the queues and the database.
    pub async fn cleanup(self) {
        drop(self.queue);
        match self.backend {
            Backend::RabbitMq => delete_rabbitmq_queues(&self.options.name).await,
            Backend::Sqs => {
                let client = sqs_client();
                if let Some((queue_url, dlq_url)) = self.sqs_urls {
                    for url in [queue_url, dlq_url] {
                        client.delete_queue().queue_url(url).send().await.ok();
                    }
                }
            }
            Backend::DbSqlite | Backend::DbPostgres => {}
        }
        self.db.drop_database().await;
    }
}

/// Deletes the queues and exchange the RabbitMQ backend declared for `name` (delay queues
/// of up to 60 s included).
pub async fn delete_rabbitmq_queues(name: &str) {
    let Ok(Ok(connection)) = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&amqp_url(), ConnectionProperties::default()),
    )
    .await
    else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    let mut queues = vec![name.to_owned(), format!("{name}.dlq")];
    queues.extend((1..=60).map(|s| format!("{name}.delay.{s}s")));
    for queue in queues {
        let delete = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default());
        if tokio::time::timeout(Duration::from_secs(5), delete)
            .await
            .is_err()
        {
            break;
        }
    }
    let exchange = format!("{name}.dlx");
    let delete =
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default());
    tokio::time::timeout(Duration::from_secs(5), delete)
        .await
        .ok();
    connection.close(200, "OK".into()).await.ok();
}
