//! Cost tracking columns on `deployed_models`:
//! - `last_prediction_at`: when the deployment last answered a prediction (written by the
//!   API in batches, off the request path), for the idle-endpoint signal;
//! - `cost_month` and `month_start_accrued_usd`: the month (`YYYY-MM`, UTC) the accrued cost
//!   was last written in, and what had accrued when that month began, so the month-to-date
//!   cost is `accrued - month_start_accrued` without a ledger.

use sea_orm_migration::{prelude::*, schema::*};

/// Adds the three columns (one statement each: SQLite alters one column at a time).
#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = "deployed_models";
const COLUMNS: [&str; 3] = [
    "last_prediction_at",
    "cost_month",
    "month_start_accrued_usd",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns = [
            timestamp_with_time_zone_null(COLUMNS[0]),
            string_len_null(COLUMNS[1], 7),
            double(COLUMNS[2]).default(0.0).to_owned(),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table(TABLE)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in COLUMNS.iter().rev() {
            manager
                .alter_table(Table::alter().table(TABLE).drop_column(*column).to_owned())
                .await?;
        }
        Ok(())
    }
}
