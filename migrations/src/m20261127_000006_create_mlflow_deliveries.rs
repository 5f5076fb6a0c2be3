//! `mlflow_deliveries`: webhook delivery ids already accepted (MLflow retries reuse the id).

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `mlflow_deliveries`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "mlflow_deliveries";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(string_len("delivery_id", 64).primary_key())
                    .col(timestamp_with_time_zone("received_at"))
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
