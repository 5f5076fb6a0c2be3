//! `deployed_models.idempotency_key`: the `Idempotency-Key` of the request that created a
//! deployment, unique per model, so a repeated request finds the deployment it created
//! (even when two copies race: the database refuses the second insert).

use sea_orm_migration::{prelude::*, schema::*};

/// Adds `idempotency_key` and its unique index.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "deployed_models";
const INDEX: &str = "ux_deployed_models_idempotency";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TABLE)
                    .add_column(string_len_null("idempotency_key", 255))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(TABLE)
                    .col("model_id")
                    .col("idempotency_key")
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(INDEX).table(TABLE).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(TABLE)
                    .drop_column("idempotency_key")
                    .to_owned(),
            )
            .await
    }
}
