//! `mlflow_events`: webhook events the API accepted and the worker has yet to handle.
//!
//! The listener answers MLflow at once and records the event here, in the transaction that
//! records its delivery id; a worker leases each row (`locked_until`), fetches the model's
//! metadata from MLflow and deploys, retrying transient failures (`available_at`,
//! `attempts`, `last_error`) until `processed_at` is set with its `outcome`.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `mlflow_events` with its index of pending rows.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "mlflow_events";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(pk_uuid("id"))
                    .col(string_len("delivery_id", 64))
                    .col(string_len("event", 64))
                    .col(string_len("model_name", 255))
                    .col(string_len_null("version", 64))
                    .col(json_binary("payload"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(timestamp_with_time_zone("available_at"))
                    .col(integer("attempts").default(0))
                    .col(timestamp_with_time_zone_null("locked_until"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone_null("processed_at"))
                    .col(string_len_null("outcome", 32))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_mlflow_events_pending")
                    .table(TABLE)
                    .col("processed_at")
                    .col("available_at")
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
