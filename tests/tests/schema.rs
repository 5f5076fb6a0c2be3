//! The schema and the deployment repository on both engines: migrations go up, down and up
//! again; the indexes of docs/design/domain.md exist in the catalogs; the database itself refuses a
//! second active deployment; stale transitions fail; creation is all-or-nothing.

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, PaginatorTrait, Set, Statement};
use shared::db::deployments::{self, Changes, NewDeployment, Transition};
use shared::db::entities::{deployed_models, deployment_events, outbox};
use shared::db::outbox::Route;
use shared::db::{DbError, outbox as outbox_repo};
use shared::domain::{DeploymentId, DeploymentStatus, ModelId};
use shared::queue::{DEPLOYMENTS_QUEUE, Envelope, MessageKind};
use tests::db::{Engine, TestDb};

const TABLES: [&str; 12] = [
    "deployed_models",
    "deployment_events",
    "outbox",
    "queue_messages",
    "processed_messages",
    "mlflow_deliveries",
    "mlflow_events",
    "mlflow_version_claims",
    "mlflow_sync_cursors",
    "leader_leases",
    "mlflow_sync_retries",
    "model_operations",
];

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::Engine::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::Engine::Postgres).await })*
        }
    };
}

on_both_engines!(
    migrations_go_up_down_and_up_again,
    indexes_exist_in_the_catalog,
    database_refuses_a_second_active_deployment,
    stale_transition_is_refused,
    illegal_transition_is_refused,
    creation_is_all_or_nothing,
    creation_writes_deployment_event_and_command,
    queries_filter_and_find_the_active_deployment,
    a_step_reads_its_deployment_and_the_serving_one_in_one_statement,
);

fn new_deployment(model: &str) -> NewDeployment {
    NewDeployment {
        id: DeploymentId::new(),
        model_id: ModelId::parse(model).expect("valid model id"),
        model_version: Some("1".into()),
        provider: "huggingface".into(),
        instance_type: "intel-spr".into(),
        instance_size: Some("x2".into()),
        vendor: Some("aws".into()),
        region: Some("us-east-1".into()),
        task: Some("text-classification".into()),
        framework: Some("pytorch".into()),
        repository: Some("distilbert/distilbert-base-uncased-finetuned-sst-2-english".into()),
        revision: None,
        metadata: Some(serde_json::json!({"source": "test"})),
        hourly_cost_usd: Some(0.067),
        idempotency_key: None,
    }
}

async fn create(db: &TestDb, model: &str) -> deployments::Deployment {
    let new = new_deployment(model);
    let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
    deployments::create(&db.conn, Route::Relay, new, &command)
        .await
        .expect("create deployment")
}

async fn table_names(db: &TestDb) -> Vec<String> {
    let sql = match db.engine {
        Engine::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Engine::Postgres => "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'",
    };
    query_strings(db, sql).await
}

async fn query_strings(db: &TestDb, sql: &str) -> Vec<String> {
    let rows = db
        .conn
        .query_all_raw(Statement::from_string(db.conn.get_database_backend(), sql))
        .await
        .expect("catalog query");
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).expect("a string column"))
        .collect()
}

async fn migrations_go_up_down_and_up_again(engine: Engine) {
    let db = TestDb::empty(engine).await;
    for round in 0..2 {
        Migrator::up(&db.conn, None).await.expect("up");
        let tables = table_names(&db).await;
        for table in TABLES {
            assert!(
                tables.iter().any(|t| t == table),
                "round {round}: {table} missing after up"
            );
        }
        Migrator::down(&db.conn, None).await.expect("down");
        let tables = table_names(&db).await;
        for table in TABLES {
            assert!(
                !tables.iter().any(|t| t == table),
                "round {round}: {table} left after down"
            );
        }
    }
    Migrator::up(&db.conn, None).await.expect("up again");
    assert!(
        Migrator::get_pending_migrations(&db.conn)
            .await
            .expect("status")
            .is_empty()
    );
    db.drop_database().await;
}

async fn indexes_exist_in_the_catalog(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let sql = match engine {
        Engine::Sqlite => {
            "SELECT name || ' ' || COALESCE(sql, '') FROM sqlite_master WHERE type = 'index'"
        }
        Engine::Postgres => {
            "SELECT indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'"
        }
    };
    let indexes = query_strings(&db, sql).await;
    let find = |name: &str| {
        indexes
            .iter()
            .find(|i| i.starts_with(&format!("{name} ")))
            .cloned()
    };
    for name in [
        "idx_deployed_models_model_id",
        "idx_deployed_models_status",
        "idx_deployment_events_deployment_id",
        "idx_outbox_published_at",
        "idx_queue_messages_claim",
        "idx_queue_messages_dead",
        "idx_rollouts_model_state",
        "idx_rollouts_canary",
        "idx_rollout_measurements_step",
    ] {
        assert!(find(name).is_some(), "index {name} missing: {indexes:?}");
    }
    // Replaced by idx_queue_messages_dead: it tempted the planner into sorting the backlog.
    assert!(
        find("idx_queue_messages_ready").is_none(),
        "idx_queue_messages_ready must be gone: {indexes:?}"
    );
    let active = find("ux_deployed_models_active_model").expect("partial unique index");
    assert!(active.to_uppercase().contains("UNIQUE"), "{active}");
    assert!(active.contains("WHERE"), "must be partial: {active}");
    db.drop_database().await;
}

async fn database_refuses_a_second_active_deployment(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let first = create(&db, "fraud-detector").await;
    let second = create(&db, "fraud-detector").await;
    let other_model = create(&db, "sentiment").await;
    let activate = |row: &deployments::Deployment| {
        let mut active: deployed_models::ActiveModel = row.clone().into();
        active.is_active = Set(true);
        active
    };

    activate(&first)
        .update(&db.conn)
        .await
        .expect("first active deployment");
    activate(&other_model)
        .update(&db.conn)
        .await
        .expect("another model may be active too");
    let refused = activate(&second).update(&db.conn).await;

    let error = refused.expect_err("the database must refuse a second active deployment");
    let error = DbError::from(error);
    assert!(
        format!("{error}").to_lowercase().contains("unique"),
        "{error}"
    );
    // Through the repository the same refusal has a domain name.
    let via_repo = deployments::transition(
        &db.conn,
        &second,
        Transition {
            to: DeploymentStatus::Deploying,
            message: "activate".into(),
            details: None,
            changes: Changes {
                is_active: Some(true),
                ..Changes::default()
            },
        },
    )
    .await;
    assert!(
        matches!(via_repo, Err(DbError::ActiveConflict(ref m)) if m == "fraud-detector"),
        "{via_repo:?}"
    );
    db.drop_database().await;
}

fn to_deploying() -> Transition {
    Transition {
        to: DeploymentStatus::Deploying,
        message: "provider create accepted".into(),
        details: Some(serde_json::json!({"provider_state": "pending"})),
        changes: Changes {
            provider_status: Some("pending".into()),
            ..Changes::default()
        },
    }
}

async fn stale_transition_is_refused(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let read_by_a = create(&db, "fraud-detector").await;
    let read_by_b = read_by_a.clone();

    let moved = deployments::transition(&db.conn, &read_by_a, to_deploying())
        .await
        .expect("first wins");
    let stale = deployments::transition(&db.conn, &read_by_b, to_deploying()).await;

    assert_eq!(moved.status, DeploymentStatus::Deploying);
    assert_eq!(moved.lock_version, read_by_a.lock_version + 1);
    assert_eq!(moved.provider_status.as_deref(), Some("pending"));
    assert!(
        matches!(stale, Err(DbError::StaleTransition { expected: 0, .. })),
        "{stale:?}"
    );
    let events = deployments::events(&db.conn, DeploymentId(moved.id))
        .await
        .expect("events");
    assert_eq!(
        events.len(),
        2,
        "created + one transition, none for the stale attempt"
    );
    db.drop_database().await;
}

async fn illegal_transition_is_refused(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let pending = create(&db, "fraud-detector").await;
    let illegal = Transition {
        to: DeploymentStatus::Stopped,
        ..to_deploying()
    };

    let result = deployments::transition(&db.conn, &pending, illegal).await;

    assert!(matches!(
        result,
        Err(DbError::IllegalTransition {
            from: DeploymentStatus::Pending,
            to: DeploymentStatus::Stopped,
            ..
        })
    ));
    let row = deployments::get(&db.conn, DeploymentId(pending.id))
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (row.status, row.lock_version),
        (DeploymentStatus::Pending, 0)
    );
    db.drop_database().await;
}

async fn creation_is_all_or_nothing(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let new = new_deployment("fraud-detector");
    let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
    // An outbox row with the command's id already exists: the third insert of the
    // transaction fails after the deployment and its event were written.
    outbox_repo::enqueue(&db.conn, Route::Relay, DEPLOYMENTS_QUEUE, &command, None)
        .await
        .expect("seed outbox");

    let result = deployments::create(&db.conn, Route::Relay, new.clone(), &command).await;

    assert!(
        result.is_err(),
        "the conflicting outbox insert must fail the transaction"
    );
    assert!(
        deployments::get(&db.conn, new.id)
            .await
            .expect("get")
            .is_none(),
        "no deployment left behind"
    );
    assert_eq!(
        deployment_events::Entity::find()
            .count(&db.conn)
            .await
            .expect("count"),
        0
    );
    assert_eq!(
        outbox::Entity::find().count(&db.conn).await.expect("count"),
        1,
        "only the seeded row"
    );
    db.drop_database().await;
}

async fn creation_writes_deployment_event_and_command(engine: Engine) {
    let db = TestDb::migrated(engine).await;

    let created = create(&db, "fraud-detector").await;

    assert_eq!(
        (created.status, created.is_active, created.lock_version),
        (DeploymentStatus::Pending, false, 0)
    );
    let events = deployments::events(&db.conn, DeploymentId(created.id))
        .await
        .expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].kind.as_str(), events[0].to_status.as_deref()),
        ("created", Some("pending"))
    );
    let rows = outbox::Entity::find().all(&db.conn).await.expect("outbox");
    assert_eq!(rows.len(), 1);
    let envelope =
        Envelope::decode(&serde_json::to_vec(&rows[0].payload).expect("json")).expect("envelope");
    assert_eq!(
        (envelope.kind, envelope.deployment_id.0),
        (MessageKind::Deploy, created.id)
    );
    assert_eq!(rows[0].queue, DEPLOYMENTS_QUEUE);
    db.drop_database().await;
}

async fn queries_filter_and_find_the_active_deployment(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let old = create(&db, "fraud-detector").await;
    let current = create(&db, "fraud-detector").await;
    create(&db, "sentiment").await;
    let mut active: deployed_models::ActiveModel = current.clone().into();
    active.is_active = Set(true);
    active.update(&db.conn).await.expect("activate");
    let model = ModelId::parse("fraud-detector").expect("id");

    let found = deployments::find_active(&db.conn, &model)
        .await
        .expect("query");
    let of_model = deployments::list(
        &db.conn,
        &deployments::Filter {
            model_id: Some(model.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    let pending = deployments::list(
        &db.conn,
        &deployments::Filter {
            status: Some(DeploymentStatus::Pending),
            limit: Some(2),
            ..Default::default()
        },
    )
    .await
    .expect("list");

    assert_eq!(found.map(|d| d.id), Some(current.id));
    assert_eq!(
        of_model.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![current.id, old.id],
        "newest first"
    );
    assert_eq!(pending.len(), 2);
    let none = deployments::find_active(&db.conn, &ModelId::parse("sentiment").expect("id"))
        .await
        .expect("q");
    assert!(none.is_none());
    db.drop_database().await;
}

/// `get_with_active`: what a saga step decides from, in one statement — the deployment and
/// its model's serving deployment (itself when it serves), never another model's.
async fn a_step_reads_its_deployment_and_the_serving_one_in_one_statement(engine: Engine) {
    let db = TestDb::migrated(engine).await;
    let serving = create(&db, "fraud-detector").await;
    let candidate = create(&db, "fraud-detector").await;
    let lone = create(&db, "sentiment").await;
    let other = create(&db, "churn").await;
    for row in [&serving, &other] {
        let mut active: deployed_models::ActiveModel = row.clone().into();
        active.is_active = Set(true);
        active.update(&db.conn).await.expect("activate");
    }
    let read = |id: uuid::Uuid| {
        let conn = db.conn.clone();
        async move {
            deployments::get_with_active(&conn, DeploymentId(id))
                .await
                .expect("query")
                .map(|(row, active)| (row.id, active.map(|a| a.id)))
        }
    };

    let of_candidate = read(candidate.id).await;
    let of_serving = read(serving.id).await;
    let of_lone = read(lone.id).await;
    let missing = read(uuid::Uuid::new_v4()).await;

    println!(
        "candidate {of_candidate:?}, serving {of_serving:?}, lone {of_lone:?}, missing {missing:?}"
    );
    assert_eq!(of_candidate, Some((candidate.id, Some(serving.id))));
    assert_eq!(of_serving, Some((serving.id, Some(serving.id))));
    assert_eq!(
        of_lone,
        Some((lone.id, None)),
        "churn's serving row is another model's"
    );
    assert_eq!(missing, None);
    db.drop_database().await;
}
