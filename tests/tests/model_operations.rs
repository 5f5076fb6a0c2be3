//! Operations on one model under its operation lock (`shared::db::operations`,
//! docs/design/domain.md "Concurrent operations on one model"), on both engines with the
//! real worker: conditional operations (`If-Match`), superseding, identical deploys, and the
//! refusals beside an undeploy or a rollback in flight.

use std::sync::Arc;
use std::time::Duration;

use emulator::EmulatorConfig;
use serde_json::json;
use shared::db::DbError;
use shared::db::deployments;
use shared::db::model_ops;
use shared::db::operations::{self, Deployed, Rollback};
use shared::domain::{DeploymentStatus, ModelId};
use shared::queue::{Envelope, MessageKind};
use tests::db::Engine;
use tests::world::{World, new_deployment};

const LIMIT: Duration = Duration::from_secs(60);

fn deploy_command(new: &deployments::NewDeployment) -> Envelope {
    Envelope::new(MessageKind::Deploy, new.id, json!({}))
}

async fn deploy(world: &World, model: &str, version: &str) -> operations::Versioned<Deployed> {
    let new = new_deployment(model, version);
    let command = deploy_command(&new);
    operations::deploy(&world.db.conn, world.route, new, &command, None)
        .await
        .expect("deploy")
}

fn created(d: &operations::Versioned<Deployed>) -> uuid::Uuid {
    match &d.value {
        Deployed::Created(row) => row.id,
        Deployed::InFlight(row) => panic!("expected a new deployment, got {}", row.id),
    }
}

/// Deploys versions 1 and 2 of `model` one after the other until 2 serves and 1 runs
/// inactive (the rollback target).
async fn two_versions(world: &World, model: &str) -> (uuid::Uuid, uuid::Uuid) {
    let v1 = created(&deploy(world, model, "1").await);
    world.run_until(v1, LIMIT, |d| d.is_active).await;
    let v2 = created(&deploy(world, model, "2").await);
    world.run_until(v2, LIMIT, |d| d.is_active).await;
    (v1, v2)
}

async fn parallel_rollbacks_with_one_if_match(engine: Engine) {
    let world = World::on_db_queue(engine, EmulatorConfig::default(), &[]).await;
    let model = ModelId::parse("churn").unwrap();
    two_versions(&world, model.as_str()).await;
    let tag = model_ops::version(&world.db.conn, model.as_str())
        .await
        .unwrap();

    let conn = Arc::new(world.db.conn.clone());
    let tries = (0..4).map(|_| {
        let (conn, model) = (conn.clone(), model.clone());
        tokio::spawn(async move {
            operations::rollback(
                &conn,
                shared::db::outbox::Route::Direct,
                &model,
                Duration::from_secs(600),
                Some(tag),
            )
            .await
        })
    });
    let results: Vec<_> = futures_util::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.expect("join"))
        .collect();

    let accepted = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    let stale: Vec<i64> = results
        .iter()
        .filter_map(|r| match r {
            Err(DbError::PreconditionFailed { current }) => Some(*current),
            _ => None,
        })
        .collect();
    let now = model_ops::version(&world.db.conn, model.as_str())
        .await
        .unwrap();
    println!(
        "rollbacks with If-Match {tag} ({engine:?}): accepted {accepted}, 412 {} (current {stale:?}), version now {now}",
        stale.len()
    );
    assert_eq!(accepted, 1, "{results:?}");
    assert_eq!(stale.len(), 3, "{results:?}");
    assert!(stale.iter().all(|c| *c == tag + 1));
    assert_eq!(now, tag + 1);
    let rows = deployments::list(&world.db.conn, &Default::default())
        .await
        .unwrap();
    assert_eq!(rows.iter().filter(|d| d.is_active).count(), 1);
}

#[tokio::test]
async fn four_rollbacks_with_one_if_match_accept_one_sqlite() {
    parallel_rollbacks_with_one_if_match(Engine::Sqlite).await;
}

#[tokio::test]
async fn four_rollbacks_with_one_if_match_accept_one_postgres() {
    parallel_rollbacks_with_one_if_match(Engine::Postgres).await;
}

#[tokio::test]
async fn a_newer_deploy_supersedes_one_still_provisioning() {
    let world = World::on_db_queue(Engine::Sqlite, EmulatorConfig::default(), &[]).await;
    let older = created(&deploy(&world, "fraud", "1").await);
    let newer = created(&deploy(&world, "fraud", "2").await);

    let older_row = world
        .run_until(older, LIMIT, |d| d.status == DeploymentStatus::Failed)
        .await;
    let newer_row = world.run_until(newer, LIMIT, |d| d.is_active).await;

    let events = world.events(older).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    println!(
        "superseded: {kinds:?}; endpoints at the provider {:?}",
        world.endpoint_names()
    );
    assert!(kinds.contains(&"superseded"), "{kinds:?}");
    assert!(!kinds.contains(&"activated"), "the older one never served");
    assert!(
        older_row
            .error_message
            .unwrap_or_default()
            .contains("superseded")
    );
    assert!(newer_row.is_active);
    world.drain(Duration::from_millis(500), LIMIT).await;
    assert_eq!(
        world.endpoint_names().len(),
        1,
        "{:?}",
        world.endpoint_names()
    );
}

#[tokio::test]
async fn an_identical_deploy_in_flight_is_answered_with_the_first() {
    let world = World::on_db_queue(Engine::Sqlite, EmulatorConfig::default(), &[]).await;
    let first = deploy(&world, "spam", "3").await;
    let id = created(&first);
    let again = deploy(&world, "spam", "3").await;
    match &again.value {
        Deployed::InFlight(row) => assert_eq!(row.id, id),
        Deployed::Created(row) => panic!("a second deployment {} of the same request", row.id),
    }
    assert_eq!(
        again.version, first.version,
        "answering the first changes nothing"
    );
}

#[tokio::test]
async fn rollback_or_undeploy_beside_an_undeploy_in_flight_is_refused() {
    let world = World::on_db_queue(Engine::Sqlite, EmulatorConfig::default(), &[]).await;
    let model = ModelId::parse("ranker").unwrap();
    let (_, v2) = two_versions(&world, model.as_str()).await;
    let route = world.route;
    let undeployed = operations::undeploy(&world.db.conn, route, &model, None)
        .await
        .expect("undeploy")
        .expect("something was active");
    assert_eq!(undeployed.value.id, v2);
    // A deploy accepted meanwhile does not hide the undeploy in flight.
    created(&deploy(&world, model.as_str(), "3").await);

    let rollback = operations::rollback(
        &world.db.conn,
        route,
        &model,
        Duration::from_secs(600),
        None,
    )
    .await;
    let undeploy = operations::undeploy(&world.db.conn, route, &model, None).await;
    println!("beside an undeploy in flight: rollback {rollback:?}; undeploy {undeploy:?}");
    for refused in [rollback.map(|_| ()), undeploy.map(|_| ())] {
        match refused {
            Err(DbError::OperationInFlight {
                operation,
                deployment,
            }) => {
                assert_eq!((operation.as_str(), deployment), ("undeploy", v2));
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    // Once the undeploy finished, a rollback is an operation like any other.
    world
        .run_until_status(v2, DeploymentStatus::Stopped, LIMIT)
        .await;
    let after = operations::rollback(
        &world.db.conn,
        route,
        &model,
        Duration::from_secs(600),
        None,
    )
    .await
    .expect("rollback")
    .expect("a version to roll back to");
    // Version 1 still runs (reactivated) or was retired meanwhile (redeployed).
    assert!(matches!(
        after.value,
        Rollback::Reactivated(_) | Rollback::Redeploying(_)
    ));
}
