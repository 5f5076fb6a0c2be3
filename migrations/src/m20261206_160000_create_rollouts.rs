//! `rollouts` and `rollout_measurements`: a canary rollout of a model (docs/design/rollouts.md).
//!
//! `rollouts` holds one row per rollout: the stable deployment and the canary, the validated
//! spec, the current step (an index into the spec's steps), the state (`running`, `paused`,
//! `promoted`, `aborted`), an operator's pending request (`promote`, `abort`) and the outcome.
//! `rollout_measurements` is append-only: each API process writes, about once a second, what
//! it measured per deployment in the current step (requests, errors, latency histogram
//! buckets); the reconciler sums a step's rows to judge it.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates both tables and their indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

const ROLLOUTS: &str = "rollouts";
const MEASUREMENTS: &str = "rollout_measurements";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ROLLOUTS)
                    .col(uuid("id").primary_key())
                    .col(string_len("model_id", 255))
                    .col(uuid("stable_id"))
                    .col(uuid("canary_id"))
                    .col(json_binary("spec"))
                    .col(integer("step"))
                    .col(string_len("state", 16))
                    .col(string_len_null("requested", 16))
                    .col(timestamp_with_time_zone("started_at"))
                    .col(timestamp_with_time_zone("step_started_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("ended_at"))
                    .col(text_null("outcome"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rollouts_model_state")
                    .table(ROLLOUTS)
                    .col("model_id")
                    .col("state")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MEASUREMENTS)
                    .col(uuid("id").primary_key())
                    .col(uuid("rollout_id"))
                    .col(uuid("deployment_id"))
                    .col(integer("step"))
                    .col(timestamp_with_time_zone("recorded_at"))
                    .col(big_integer("requests"))
                    .col(big_integer("errors"))
                    .col(json_binary("latency_buckets"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_rollout_measurements_step")
                    .table(MEASUREMENTS)
                    .col("rollout_id")
                    .col("step")
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MEASUREMENTS).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(ROLLOUTS).to_owned())
            .await
    }
}
