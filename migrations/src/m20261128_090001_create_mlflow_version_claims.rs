//! `mlflow_version_claims`: the one deployment of each MLflow model version.
//!
//! The primary key (`model_name`, `version`) is what makes duplicate and reordered webhook
//! deliveries, reconciliation and concurrent workers create a single deployment per
//! version: the claim is inserted in the transaction that creates the deployment, and the
//! loser of a race finds it taken.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `mlflow_version_claims`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "mlflow_version_claims";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(string_len("model_name", 255))
                    .col(string_len("version", 64))
                    .col(uuid("deployment_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("model_name").col("version"))
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
