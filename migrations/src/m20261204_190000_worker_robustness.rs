//! What the worker's robustness needs in the schema (docs/design/domain.md):
//! - `queue_messages.claim_token`, `mlflow_events.claim_token`: the fencing token of the
//!   current claim, unique per claim (`shared::db::claim`): a holder whose lease ran out can
//!   no longer settle the row, even after a retry reset `attempts`.
//! - `outbox.attempts`, `outbox.last_error`, `outbox.parked_at`: the relay counts failed
//!   publishes of a row and parks it after `RELAY_MAX_ATTEMPTS`, so the rows behind it flow.
//! - `mlflow_sync_retries`: deployments whose MLflow tag write failed, retried with backoff by
//!   the status sync across restarts.
//! - `deployment_events.created_at` defaults to `clock_timestamp()` on PostgreSQL (the
//!   database stamps events, so the status sync's cursor needs no application clock), with an
//!   index on `(created_at, id)`, the order the sync follows.

use sea_orm_migration::{prelude::*, schema::*};

/// Adds the columns (one statement each: SQLite alters one column at a time) and the table.
#[derive(DeriveMigrationName)]
pub struct Migration;

const RETRIES: &str = "mlflow_sync_retries";
const EVENTS_INDEX: &str = "idx_deployment_events_created_at_id";

fn columns() -> Vec<(&'static str, ColumnDef)> {
    vec![
        ("queue_messages", uuid_null("claim_token")),
        ("mlflow_events", uuid_null("claim_token")),
        ("outbox", integer("attempts").default(0).to_owned()),
        ("outbox", text_null("last_error")),
        ("outbox", timestamp_with_time_zone_null("parked_at")),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE deployment_events ALTER COLUMN created_at SET DEFAULT clock_timestamp()",
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(EVENTS_INDEX)
                    .table("deployment_events")
                    .col("created_at")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        for (table, mut column) in columns() {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(RETRIES)
                    .col(uuid("deployment_id").primary_key())
                    .col(integer("attempts"))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(RETRIES).to_owned())
            .await?;
        for (table, column) in columns().into_iter().rev() {
            let name = column.get_column_name();
            manager
                .alter_table(Table::alter().table(table).drop_column(name).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name(EVENTS_INDEX)
                    .table("deployment_events")
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared(
                    "ALTER TABLE deployment_events ALTER COLUMN created_at DROP DEFAULT",
                )
                .await?;
        }
        Ok(())
    }
}
