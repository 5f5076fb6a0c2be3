//! `idx_queue_messages_claim`: the order the embedded queue claims in (docs/design/queue.md,
//! "The embedded queue").
//!
//! Claims read the ready rows `ORDER BY available_at, id`. The first index,
//! `(queue, dead_at, available_at)`, does not hold `id`, so the database sorted every ready
//! row to find the first few: a claim's cost grew with the backlog (137 msg/s with 20,000
//! messages waiting against 611 with 5,000). This partial index holds live rows only, in
//! exactly the claim's order, so a claim reads the first rows of the index whatever the
//! depth. Dead letters stay out of it (the old index still serves their listing).

use sea_orm_migration::prelude::*;

/// Creates `idx_queue_messages_claim`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Raw SQL: the same partial-index syntax on PostgreSQL and SQLite.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS idx_queue_messages_claim \
                 ON queue_messages (queue, available_at, id) WHERE dead_at IS NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS idx_queue_messages_claim")
            .await?;
        Ok(())
    }
}
