//! `deployment_events`: the append-only event log of every deployment's state changes.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `deployment_events` with its index on `deployment_id`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "deployment_events";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(pk_uuid("id"))
                    .col(uuid("deployment_id"))
                    .col(string_len("kind", 64))
                    .col(string_len_null("from_status", 32))
                    .col(string_len_null("to_status", 32))
                    .col(text_null("message"))
                    .col(json_binary_null("details"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_deployment_events_deployment")
                            .from(TABLE, "deployment_id")
                            .to("deployed_models", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_deployment_events_deployment_id")
                    .table(TABLE)
                    .col("deployment_id")
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
