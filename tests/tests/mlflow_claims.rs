//! One deployment per MLflow model version, enforced by the database: a second creation
//! for the same version (a duplicate or reordered delivery, reconciliation, another
//! worker) creates nothing, and only the `production` alias path may hand the version to a
//! new deployment, and only over the deployment it read.

use shared::db::deployments::{self, Filter, NewDeployment};
use shared::db::mlflow::{claim_of, create_for_version};
use shared::db::outbox::Route;
use shared::domain::{DeploymentId, ModelId};
use shared::queue::{Envelope, MessageKind};
use tests::db::{Engine, TestDb};

fn new_deployment() -> NewDeployment {
    NewDeployment {
        id: DeploymentId::new(),
        model_id: ModelId::parse("fraud-detector").expect("id"),
        model_version: Some("7".into()),
        provider: "huggingface".into(),
        instance_type: "intel-spr".into(),
        instance_size: Some("x2".into()),
        vendor: Some("aws".into()),
        region: Some("us-east-1".into()),
        task: Some("text-classification".into()),
        framework: None,
        repository: Some("org/model".into()),
        revision: None,
        metadata: None,
        hourly_cost_usd: Some(0.067),
        idempotency_key: None,
    }
}

async fn create(db: &TestDb, replacing: Option<uuid::Uuid>) -> Option<uuid::Uuid> {
    let new = new_deployment();
    let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
    let version = ("fraud-detector", "7");
    create_for_version(&db.conn, Route::Direct, version, replacing, new, &command)
        .await
        .expect("database")
        .map(|d| d.id)
}

async fn exactly_one_deployment_per_version(engine: Engine) {
    let db = TestDb::migrated(engine).await;

    let first = create(&db, None)
        .await
        .expect("the first claims the version");
    let duplicate = create(&db, None).await;
    let stale_takeover = create(&db, Some(uuid::Uuid::new_v4())).await;

    assert_eq!(duplicate, None);
    assert_eq!(stale_takeover, None);
    let all = deployments::list(&db.conn, &Filter::default())
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    let claim = claim_of(&db.conn, "fraud-detector", "7")
        .await
        .expect("db")
        .expect("claim");
    assert_eq!(claim.deployment_id, first);

    let takeover = create(&db, Some(first))
        .await
        .expect("replaces the one it read");

    let claim = claim_of(&db.conn, "fraud-detector", "7")
        .await
        .expect("db")
        .expect("claim");
    assert_eq!(claim.deployment_id, takeover);
    db.drop_database().await;
}

#[tokio::test]
async fn exactly_one_deployment_per_version_on_sqlite() {
    exactly_one_deployment_per_version(Engine::Sqlite).await;
}

#[tokio::test]
async fn exactly_one_deployment_per_version_on_postgres() {
    exactly_one_deployment_per_version(Engine::Postgres).await;
}
