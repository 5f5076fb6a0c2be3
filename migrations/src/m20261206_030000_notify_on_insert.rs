//! On PostgreSQL, an insert into `queue_messages` or `outbox` notifies the channel
//! `hokusai_queue` itself (docs/design/queue.md, "The embedded queue"), through a
//! statement-level trigger: the notification is delivered when the inserting transaction
//! commits, as the writers' own `SELECT pg_notify(…)` was, without a round trip of its own
//! per enqueue. PostgreSQL folds identical notifications of one transaction into one.
//! SQLite has no NOTIFY: its writers wake their own process after commit, as before.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

/// Creates `hokusai_queue_notify()` and its two triggers (PostgreSQL only).
#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE OR REPLACE FUNCTION hokusai_queue_notify() RETURNS trigger \
     LANGUAGE plpgsql AS $$ \
     BEGIN PERFORM pg_notify('hokusai_queue', TG_TABLE_NAME); RETURN NULL; END $$",
    "CREATE TRIGGER queue_messages_notify AFTER INSERT ON queue_messages \
     FOR EACH STATEMENT EXECUTE FUNCTION hokusai_queue_notify()",
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox \
     FOR EACH STATEMENT EXECUTE FUNCTION hokusai_queue_notify()",
];

const DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS outbox_notify ON outbox",
    "DROP TRIGGER IF EXISTS queue_messages_notify ON queue_messages",
    "DROP FUNCTION IF EXISTS hokusai_queue_notify()",
];

async fn run(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    for sql in statements {
        manager.get_connection().execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, DOWN).await
    }
}
