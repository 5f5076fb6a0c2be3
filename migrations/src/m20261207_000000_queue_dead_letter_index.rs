//! `idx_queue_messages_dead` replaces `idx_queue_messages_ready` (docs/design/queue.md, "The
//! embedded queue").
//!
//! The first index, `(queue, dead_at, available_at)`, matches a claim's filter as well as
//! `idx_queue_messages_claim` does, but not its order (`available_at, id`). On a table
//! PostgreSQL has not analysed yet — every fresh or fast-filled queue until autovacuum's next
//! round — the planner estimated one ready row, took the old index and sorted every ready
//! row under it for each claim: 15 ms per claim at 20,000 messages waiting, 0.3 ms through the
//! claim index (EXPLAIN ANALYZE, docs/benchmarks.md). With the old index gone, the claim
//! index is the only one that serves a claim, whatever the statistics say. Dead letters,
//! which the claim index leaves out, get a partial index of their own for their listing,
//! replay and retention.

use sea_orm_migration::prelude::*;

/// Drops `idx_queue_messages_ready`, creates `idx_queue_messages_dead`.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        // Raw SQL: the same partial-index syntax on PostgreSQL and SQLite.
        conn.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_queue_messages_dead \
             ON queue_messages (queue, dead_at) WHERE dead_at IS NOT NULL",
        )
        .await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS idx_queue_messages_ready")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        conn.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS idx_queue_messages_ready \
             ON queue_messages (queue, dead_at, available_at)",
        )
        .await?;
        conn.execute_unprepared("DROP INDEX IF EXISTS idx_queue_messages_dead")
            .await?;
        Ok(())
    }
}
