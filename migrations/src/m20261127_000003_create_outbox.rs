//! `outbox`: commands written in the same transaction as the business change, published to
//! the queue by the relay (transactional outbox, docs/design/queue.md).

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `outbox` with its index on `published_at` (null = pending).
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "outbox";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(pk_uuid("id"))
                    .col(string_len("queue", 255))
                    .col(json_binary("payload"))
                    .col(timestamp_with_time_zone_null("available_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("published_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_outbox_published_at")
                    .table(TABLE)
                    .col("published_at")
                    .col("created_at")
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
