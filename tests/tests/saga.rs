//! The deployment saga end to end on the embedded DB queue and the HF emulator: happy path,
//! provider failure with compensation, timeout, 429 storms, blue/green switch with
//! retirement, undeploy, duplicates and out-of-order messages — each with its event log.

use std::time::Duration;

use emulator::{ChaosConfig, EmulatorConfig};
use shared::domain::DeploymentStatus::{self, *};
use shared::queue::MessageKind;
use tests::db::Engine;
use tests::world::World;

const LIMIT: Duration = Duration::from_secs(30);

fn story(events: &[shared::db::deployments::DeploymentEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{}:{}", e.kind, e.to_status.clone().unwrap_or_default()))
        .collect()
}

fn transitions(events: &[shared::db::deployments::DeploymentEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.kind == "transition" || e.kind == "created")
        .map(|e| e.to_status.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn happy_path_reaches_deployed_and_active_with_its_story_told() {
    happy_path(Engine::Sqlite).await;
}

/// On PostgreSQL the common steps are committed as one statement each
/// (`db::one_statement`): the same story, the same rows.
#[tokio::test]
async fn happy_path_on_postgres_tells_the_same_story() {
    happy_path(Engine::Postgres).await;
}

async fn happy_path(engine: Engine) {
    let world = World::on_db_queue(engine, EmulatorConfig::default(), &[]).await;
    let requested = world.request("fraud-detector", "1").await;

    let deployed = world.run_until_status(requested.id, Deployed, LIMIT).await;

    assert!(deployed.is_active);
    assert_eq!(deployed.provider_status.as_deref(), Some("running"));
    let url = deployed.endpoint_url.clone().expect("endpoint url");
    assert!(url.starts_with(&world.emulator.base_url), "{url}");
    assert!(deployed.deployed_at.is_some());
    let name = deployed.provider_model_id.clone().expect("endpoint name");
    assert!(
        name.starts_with("hk-fraud-detector-") && name.len() <= 32,
        "{name}"
    );
    assert_eq!(world.endpoint_names(), vec![name]);
    let events = world.events(requested.id).await;
    assert_eq!(
        transitions(&events),
        vec!["pending", "deploying", "deployed"],
        "{:?}",
        story(&events)
    );
    let last = events
        .iter()
        .rfind(|e| e.kind == "transition")
        .expect("transition");
    assert_eq!(last.from_status.as_deref(), Some("deploying"));
    assert_eq!(
        last.details.as_ref().expect("details")["provider_state"],
        "running"
    );
}

#[tokio::test]
async fn provider_failure_rolls_back_and_the_old_version_keeps_serving() {
    let world = World::on_db_queue(Engine::Postgres, EmulatorConfig::default(), &[]).await;
    let v1 = world.request("fraud-detector", "1").await;
    world.run_until_status(v1.id, Deployed, LIMIT).await;
    world.emulator.set_chaos(ChaosConfig {
        fail_next_deploys: 1,
        ..ChaosConfig::default()
    });

    let v2 = world.request("fraud-detector", "2").await;
    let failed = world.run_until_status(v2.id, Failed, LIMIT).await;

    assert!(!failed.is_active);
    assert!(
        failed
            .error_message
            .as_deref()
            .is_some_and(|m| m.contains("failed")),
        "{failed:?}"
    );
    let v1_now = world.get(v1.id).await;
    assert!(
        v1_now.is_active,
        "a failed deploy never touches the active deployment"
    );
    assert_eq!(v1_now.status, Deployed);
    assert_eq!(
        world.endpoint_names(),
        vec![v1_now.provider_model_id.clone().expect("name")],
        "v2's endpoint deleted"
    );
    let events = world.events(v2.id).await;
    assert_eq!(
        transitions(&events),
        vec!["pending", "deploying", "rolling_back", "failed"],
        "{:?}",
        story(&events)
    );
    world.db.drop_database().await;
}

#[tokio::test]
async fn provisioning_past_the_deploy_timeout_rolls_back() {
    let slow = EmulatorConfig {
        initializing_time: Duration::from_secs(600),
        ..EmulatorConfig::default()
    };
    let world = World::on_db_queue(Engine::Sqlite, slow, &[("DEPLOY_TIMEOUT_SECONDS", "1")]).await;
    let requested = world.request("slow-model", "1").await;

    let failed = world.run_until_status(requested.id, Failed, LIMIT).await;

    let message = failed.error_message.clone().unwrap_or_default();
    assert!(message.contains("DEPLOY_TIMEOUT_SECONDS"), "{message}");
    assert!(world.endpoint_names().is_empty(), "the endpoint is deleted");
    let events = world.events(requested.id).await;
    assert!(
        events.iter().any(|e| e.kind == "provider_state"),
        "provisioning observed: {:?}",
        story(&events)
    );
    assert_eq!(
        transitions(&events),
        vec!["pending", "deploying", "rolling_back", "failed"]
    );
}

#[tokio::test]
async fn a_429_storm_is_retried_until_success() {
    let storm = ChaosConfig {
        rate_limit_next: 9,
        retry_after_secs: 0,
        ..ChaosConfig::default()
    };
    let world = World::on_db_queue(
        Engine::Sqlite,
        EmulatorConfig {
            chaos: storm,
            ..EmulatorConfig::default()
        },
        &[
            ("HUGGINGFACE_MAX_RETRIES", "1"),
            ("QUEUE_MAX_ATTEMPTS", "12"),
        ],
    )
    .await;
    let requested = world.request("busy-model", "1").await;

    let deployed = world.run_until_status(requested.id, Deployed, LIMIT).await;

    assert!(deployed.is_active);
    let events = world.events(requested.id).await;
    let retries = events.iter().filter(|e| e.kind == "provider_error").count();
    assert!(
        retries >= 1,
        "the storm is visible in the log: {:?}",
        story(&events)
    );
    let details = &events
        .iter()
        .find(|e| e.kind == "provider_error")
        .expect("retry event")
        .details;
    assert_eq!(
        details.as_ref().expect("details")["error_kind"],
        "rate_limited"
    );
}

#[tokio::test]
async fn a_second_version_takes_over_and_the_first_is_retired_after_the_delay() {
    let world = World::on_db_queue(
        Engine::Postgres,
        EmulatorConfig::default(),
        &[("RETIRE_AFTER_SECONDS", "2")],
    )
    .await;
    let v1 = world.request("fraud-detector", "1").await;
    world.run_until_status(v1.id, Deployed, LIMIT).await;

    let v2 = world.request("fraud-detector", "2").await;
    let v2_deployed = world.run_until_status(v2.id, Deployed, LIMIT).await;
    let v1_replaced = world.get(v1.id).await;

    assert!(v2_deployed.is_active);
    assert!(!v1_replaced.is_active);
    assert_eq!(
        v1_replaced.status, Deployed,
        "kept running for instant rollback"
    );
    assert_eq!(world.endpoint_names().len(), 2);
    let v1_stopped = world.run_until_status(v1.id, Stopped, LIMIT).await;
    let waited =
        v1_stopped.stopped_at.expect("stopped_at") - v2_deployed.deployed_at.expect("deployed_at");
    assert!(
        waited >= chrono::Duration::seconds(2),
        "retired only after RETIRE_AFTER_SECONDS: {waited}"
    );
    assert_eq!(
        world.endpoint_names(),
        vec![v2_deployed.provider_model_id.clone().expect("name")]
    );
    let events = world.events(v1.id).await;
    assert!(
        events.iter().any(|e| e.kind == "deactivated"),
        "{:?}",
        story(&events)
    );
    assert_eq!(
        transitions(&events),
        vec!["pending", "deploying", "deployed", "undeploying", "stopped"]
    );
    world.db.drop_database().await;
}

#[tokio::test]
async fn undeploy_takes_the_active_deployment_down() {
    let world = World::on_db_queue(Engine::Sqlite, EmulatorConfig::default(), &[]).await;
    let requested = world.request("fraud-detector", "1").await;
    world.run_until_status(requested.id, Deployed, LIMIT).await;

    world.command(MessageKind::Undeploy, requested.id).await;
    let stopped = world.run_until_status(requested.id, Stopped, LIMIT).await;

    assert!(!stopped.is_active);
    assert!(stopped.stopped_at.is_some());
    assert!(
        stopped.accrued_cost_usd > 0.0,
        "billable time was accrued: {}",
        stopped.accrued_cost_usd
    );
    assert!(world.endpoint_names().is_empty());
    let events = world.events(requested.id).await;
    assert_eq!(
        transitions(&events),
        vec!["pending", "deploying", "deployed", "undeploying", "stopped"]
    );
}

#[tokio::test]
async fn duplicate_and_out_of_order_messages_change_nothing() {
    let world = World::on_db_queue(Engine::Sqlite, EmulatorConfig::default(), &[]).await;
    let requested = world.request("fraud-detector", "1").await;
    let deployed = world.run_until_status(requested.id, Deployed, LIMIT).await;
    let events_before = world.events(requested.id).await.len();

    // A duplicate deploy, a stale retire of the active version, an early status check of a
    // stopped deployment's neighbour: none may change anything.
    world.command(MessageKind::Deploy, requested.id).await;
    world.command(MessageKind::Retire, requested.id).await;
    world.drain(Duration::from_millis(600), LIMIT).await;

    let after = world.get(requested.id).await;
    assert_eq!((after.status, after.is_active), (Deployed, true));
    assert_eq!(after.provider_model_id, deployed.provider_model_id);
    assert_eq!(
        world.events(requested.id).await.len(),
        events_before,
        "no new events"
    );
    assert_eq!(world.endpoint_names().len(), 1, "no second endpoint");
}

/// A copy of a handled command (the same message id) changes nothing. On the embedded queue
/// a copy cannot come from a redelivery (the step's transaction deletes the message) and
/// is decided again from the state the first left; on a broker the inbox stops it too.
#[tokio::test]
async fn a_copy_of_a_handled_message_changes_nothing() {
    a_copy_on_the_embedded_queue(Engine::Sqlite).await;
}

/// The same on PostgreSQL, where the steps that can are one statement each.
#[tokio::test]
async fn a_copy_of_a_handled_message_changes_nothing_on_postgres() {
    a_copy_on_the_embedded_queue(Engine::Postgres).await;
}

async fn a_copy_on_the_embedded_queue(engine: Engine) {
    use sea_orm::{EntityTrait, PaginatorTrait};
    let world = World::on_db_queue(engine, EmulatorConfig::default(), &[]).await;
    a_copy_changes_nothing(&world).await;
    // Every step deleted its message in its own transaction: no inbox row was needed.
    let inbox = shared::db::entities::processed_messages::Entity::find()
        .count(&world.db.conn)
        .await
        .expect("count the inbox");
    assert_eq!(inbox, 0, "the embedded queue's steps write no inbox rows");
}

async fn a_copy_changes_nothing(world: &World) {
    let requested = world.request("fraud-detector", "1").await;
    world.run_until_status(requested.id, Deployed, LIMIT).await;
    let undeploy = world.command(MessageKind::Undeploy, requested.id).await;
    world.run_until_status(requested.id, Stopped, LIMIT).await;
    let events_before = world.events(requested.id).await.len();

    // The very same message (same id) delivered again.
    world
        .worker
        .queue()
        .publish(&undeploy, None)
        .await
        .expect("publish");
    world.drain(Duration::from_millis(600), LIMIT).await;

    assert_eq!(world.events(requested.id).await.len(), events_before);
    assert_eq!(
        world.get(requested.id).await.status,
        DeploymentStatus::Stopped
    );
}

/// The same saga over RabbitMQ: commands travel through the outbox, the relay and the
/// broker (delays through its TTL queues).
mod rabbitmq {
    use super::*;

    #[tokio::test]
    async fn a_copy_of_a_handled_message_changes_nothing() {
        let world = World::on_rabbitmq(EmulatorConfig::default(), &[]).await;
        a_copy_changes_nothing(&world).await;
        world.cleanup().await;
    }

    #[tokio::test]
    async fn happy_path_and_a_second_version_with_retirement() {
        let world =
            World::on_rabbitmq(EmulatorConfig::default(), &[("RETIRE_AFTER_SECONDS", "1")]).await;
        let v1 = world.request("fraud-detector", "1").await;
        world.run_until_status(v1.id, Deployed, LIMIT).await;

        let v2 = world.request("fraud-detector", "2").await;
        let v2 = world.run_until_status(v2.id, Deployed, LIMIT).await;
        let v1 = world.run_until_status(v1.id, Stopped, LIMIT).await;

        assert!(v2.is_active && !v1.is_active);
        assert_eq!(
            world.endpoint_names(),
            vec![v2.provider_model_id.clone().expect("name")]
        );
        let events = world.events(v1.id).await;
        assert_eq!(
            transitions(&events),
            vec!["pending", "deploying", "deployed", "undeploying", "stopped"]
        );
        world.cleanup().await;
    }

    #[tokio::test]
    async fn a_failed_endpoint_is_compensated() {
        let chaos = ChaosConfig {
            fail_next_deploys: 1,
            ..ChaosConfig::default()
        };
        let world = World::on_rabbitmq(
            EmulatorConfig {
                chaos,
                ..EmulatorConfig::default()
            },
            &[],
        )
        .await;
        let requested = world.request("fraud-detector", "1").await;

        let failed = world.run_until_status(requested.id, Failed, LIMIT).await;

        assert!(!failed.is_active);
        assert!(world.endpoint_names().is_empty());
        let events = world.events(requested.id).await;
        assert_eq!(
            transitions(&events),
            vec!["pending", "deploying", "rolling_back", "failed"],
            "{:?}",
            story(&events)
        );
        world.cleanup().await;
    }
}
