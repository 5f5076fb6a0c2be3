//! `leader_leases`: one row per singleton job (the reconciler), naming the worker that runs
//! it and until when.
//!
//! `expires_at` is seconds since the Unix epoch **by the database's clock** (a float), so
//! workers with skewed clocks still agree on who holds the lease. `token` grows by one at
//! every change of holder (a fencing token). `shared::db::lease` reads and writes it.

use sea_orm_migration::{prelude::*, schema::*};

/// Creates `leader_leases`.
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "leader_leases";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TABLE)
                    .col(string_len("name", 64).primary_key())
                    .col(string_len("holder", 128))
                    .col(big_integer("token"))
                    .col(double("expires_at"))
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
