//! Schema migrations of hokusai-serve (docs/design/domain.md), run by `hokusai-serve migrate`, by
//! `dev` at start-up and by the tests.
//!
//! Each migration declares its tables by name, never through the entities of `shared`, so an
//! applied migration can never change under our feet. Migrations are append-only, named
//! `mYYYYMMDD_HHMMSS_verb_noun`, each with a working `down`, and run on SQLite and PostgreSQL.
//!
//! Layout: one file per migration; [`Migrator`] lists them in order.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_deployed_models;
mod m20261127_000002_create_deployment_events;
mod m20261127_000003_create_outbox;
mod m20261127_000004_create_queue_messages;
mod m20261127_000005_create_processed_messages;
mod m20261127_000006_create_mlflow_deliveries;
mod m20261127_200000_add_idempotency_key;
mod m20261128_090000_create_mlflow_events;
mod m20261128_090001_create_mlflow_version_claims;
mod m20261128_090002_create_mlflow_sync_cursors;
mod m20261129_100000_add_cost_tracking;
mod m20261204_090000_create_leader_leases;
mod m20261204_190000_worker_robustness;
mod m20261205_080000_create_model_operations;
mod m20261205_130000_queue_claim_index;
mod m20261206_030000_notify_on_insert;
mod m20261206_160000_create_rollouts;
mod m20261206_210000_rollouts_canary_index;
mod m20261207_000000_queue_dead_letter_index;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_deployed_models::Migration),
            Box::new(m20261127_000002_create_deployment_events::Migration),
            Box::new(m20261127_000003_create_outbox::Migration),
            Box::new(m20261127_000004_create_queue_messages::Migration),
            Box::new(m20261127_000005_create_processed_messages::Migration),
            Box::new(m20261127_000006_create_mlflow_deliveries::Migration),
            Box::new(m20261127_200000_add_idempotency_key::Migration),
            Box::new(m20261128_090000_create_mlflow_events::Migration),
            Box::new(m20261128_090001_create_mlflow_version_claims::Migration),
            Box::new(m20261128_090002_create_mlflow_sync_cursors::Migration),
            Box::new(m20261129_100000_add_cost_tracking::Migration),
            Box::new(m20261204_090000_create_leader_leases::Migration),
            Box::new(m20261204_190000_worker_robustness::Migration),
            Box::new(m20261205_080000_create_model_operations::Migration),
            Box::new(m20261205_130000_queue_claim_index::Migration),
            Box::new(m20261206_030000_notify_on_insert::Migration),
            Box::new(m20261206_160000_create_rollouts::Migration),
            Box::new(m20261206_210000_rollouts_canary_index::Migration),
            Box::new(m20261207_000000_queue_dead_letter_index::Migration),
        ]
    }
}
