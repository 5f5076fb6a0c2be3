//! `mlflow_sync_cursors`: how far the status sync has followed `deployment_events`.
//!
//! The worker's sync loop writes each deployment's state back to MLflow as version tags;
//! the cursor (the last handled event id, a time-ordered UUIDv7) lets any worker pick up
//! where another stopped.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `mlflow_sync_cursors`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "mlflow_sync_cursors";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(string_len("name", 64).primary_key())
                    .col(uuid("last_event_id"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TABLE).to_owned())
            .await
    }
}
