//! Dead letters of the embedded queue: rows with `dead_at` set, listed, replayed (reset in
//! place, in one transaction) and purged with plain SQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use uuid::Uuid;

use super::DbQueue;
use crate::db::entities::queue_messages::{self, Column, Entity};
use crate::queue::{DeadLetter, DeadLetters, QueueError, Selection, replay_body};

#[async_trait]
impl DeadLetters for DbQueue {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let rows = self
            .inner
            .dead()
            .order_by_asc(Column::DeadAt)
            .order_by_asc(Column::Id)
            // SQL takes a signed 64-bit limit: a larger one (`usize::MAX` for "all") is all.
            .limit(
                u64::try_from(limit)
                    .unwrap_or(u64::MAX)
                    .min(i64::MAX as u64),
            )
            .all(&self.inner.db)
            .await?;
        Ok(rows.into_iter().map(describe).collect())
    }

    async fn show(&self, id: &str) -> Result<Option<DeadLetter>, QueueError> {
        let Ok(id) = Uuid::parse_str(id) else {
            return Ok(None);
        };
        let row = self
            .inner
            .dead()
            .filter(Column::Id.eq(id))
            .one(&self.inner.db)
            .await?;
        Ok(row.map(describe))
    }

    async fn replay(&self, selection: &Selection, by: &str) -> Result<Vec<String>, QueueError> {
        let txn = self.inner.db.begin().await?;
        let rows = self
            .inner
            .dead()
            .filter(Column::Id.is_in(self.inner.selected(selection).await?))
            .all(&txn)
            .await?;
        let now = Utc::now();
        for row in &rows {
            Entity::update_many()
                .col_expr(
                    Column::Payload,
                    Expr::value(
                        String::from_utf8_lossy(&replay_body(row.payload.as_bytes(), by))
                            .into_owned(),
                    ),
                )
                .col_expr(Column::DeadAt, Expr::value(Option::<DateTime<Utc>>::None))
                .col_expr(Column::Attempts, Expr::value(0))
                .col_expr(Column::AvailableAt, Expr::value(now))
                .col_expr(
                    Column::LockedUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .filter(Column::Id.eq(row.id))
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        self.inner.woke().await?;
        Ok(rows.into_iter().map(|r| r.id.to_string()).collect())
    }

    async fn purge(&self, selection: &Selection) -> Result<Vec<String>, QueueError> {
        let ids = self.inner.selected(selection).await?;
        Entity::delete_many()
            .filter(Column::Id.is_in(ids.clone()))
            .filter(Column::DeadAt.is_not_null())
            .exec(&self.inner.db)
            .await?;
        Ok(ids.into_iter().map(|id| id.to_string()).collect())
    }
}

fn describe(row: queue_messages::Model) -> DeadLetter {
    let deliveries = u32::try_from(row.attempts).unwrap_or(0);
    DeadLetter {
        last_error: row.last_error,
        dead_lettered_at: row.dead_at,
        ..DeadLetter::describe(
            row.id.to_string(),
            &row.queue,
            row.payload.into_bytes(),
            deliveries,
        )
    }
}
