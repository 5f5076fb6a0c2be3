//! `queue_messages`: the embedded DB queue (QUEUE_BACKEND=db). Delays use `available_at`,
//! consumers lease a row until `locked_until`, dead letters keep their row with `dead_at`.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `queue_messages` with the index consumers poll.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "queue_messages";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(pk_uuid("id"))
                    .col(string_len("queue", 255))
                    // Text, not JSON: an undecodable payload must still be stored and dead-lettered.
                    .col(text("payload"))
                    .col(timestamp_with_time_zone("available_at"))
                    .col(integer("attempts").default(0))
                    .col(timestamp_with_time_zone_null("locked_until"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone_null("dead_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_queue_messages_ready")
                    .table(TABLE)
                    .col("queue")
                    .col("dead_at")
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
