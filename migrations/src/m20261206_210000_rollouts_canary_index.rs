//! `idx_rollouts_canary`: a rollout found by its canary deployment.
//!
//! The MLflow status sync writes `hokusai.deployment.rollout` for each deployment it pushes
//! and looks its rollout up by `canary_id` (`db::rollouts::of_canary`); the `rollouts` table
//! keeps every rollout ever run, so without this index each push would scan all of them.

use sea_orm_migration::prelude::*;

/// Creates `idx_rollouts_canary`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("idx_rollouts_canary")
                    .table("rollouts")
                    .col("canary_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("idx_rollouts_canary")
                    .table("rollouts")
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
