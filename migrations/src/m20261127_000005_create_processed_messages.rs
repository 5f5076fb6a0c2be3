//! `processed_messages`: the consumers' inbox; a message id found here was already handled.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `processed_messages`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "processed_messages";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(pk_uuid("message_id"))
                    .col(timestamp_with_time_zone("processed_at"))
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
