//! `model_operations`: one row per model, the **operation lock and version** of its
//! deployments (docs/design/domain.md, "Concurrent operations on one model").
//!
//! Every accepted operation on a model (deploy, rollback, undeploy) and every change of its
//! active deployment takes this row's lock first in its transaction (an `UPDATE` of it), so
//! operations on one model are serialised across API processes and workers, and bumps
//! `version` — the model's `ETag`. `operation` and `deployment_id` name the last accepted
//! undeploy or rollback, so a later one can tell whether it is still in flight.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `model_operations`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "model_operations";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(string_len("model_id", 255).primary_key())
                    .col(big_integer("version").default(0))
                    .col(string_len_null("operation", 32))
                    .col(uuid_null("deployment_id"))
                    .col(timestamp_with_time_zone("updated_at"))
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
