//! `deployed_models`: one row per deployment of a model (docs/design/domain.md). The first eleven
//! columns keep the names of Hokusai's original table so existing tools keep working.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `deployed_models`, its indexes and the "one active deployment per model" rule.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "deployed_models";

/// A partial unique index: at most one row per `model_id` has `is_active` true. Written as
/// SQL because sea-query cannot express the `WHERE`; the statement is the same on SQLite and
/// PostgreSQL.
const ONE_ACTIVE_PER_MODEL: &str = "CREATE UNIQUE INDEX ux_deployed_models_active_model \
     ON deployed_models (model_id) WHERE is_active";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(pk_uuid("id"))
                    .col(string_len("model_id", 255))
                    .col(string_len_null("model_version", 64))
                    .col(string_len("provider", 50))
                    .col(string_len_null("provider_model_id", 255))
                    .col(text_null("endpoint_url"))
                    .col(string_len("status", 32))
                    .col(string_len_null("provider_status", 32))
                    .col(string_len("instance_type", 64).default("cpu"))
                    .col(string_len_null("instance_size", 32))
                    .col(string_len_null("vendor", 32))
                    .col(string_len_null("region", 64))
                    .col(string_len_null("task", 64))
                    .col(string_len_null("framework", 32))
                    .col(string_len_null("repository", 255))
                    .col(string_len_null("revision", 255))
                    .col(text_null("error_message"))
                    .col(json_binary_null("metadata"))
                    .col(boolean("is_active").default(false))
                    .col(double_null("hourly_cost_usd"))
                    .col(double("accrued_cost_usd").default(0.0))
                    .col(integer("lock_version").default(0))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deployed_at"))
                    .col(timestamp_with_time_zone_null("stopped_at"))
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_deployed_models_model_id", "model_id"),
            ("idx_deployed_models_status", "status"),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(TABLE)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(ONE_ACTIVE_PER_MODEL)
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TABLE).to_owned())
            .await
    }
}
