//! Fenced claims on the rows of a work table — the one lease implementation of the work
//! tables (`queue_messages` for the embedded queue, `mlflow_events` for the MLflow intake).
//!
//! A row is free when it is live (not dead-lettered, not processed) and nobody holds a
//! running lease on it (`locked_until` null or past). [`take`] claims a free row with one
//! conditional update — only one claimer can win it — setting `locked_until`, counting the
//! claim in `attempts`, and writing a **fresh token** to `claim_token`. Everything the holder
//! does afterwards ([`Claim::extend`], and the settling updates built on
//! [`Claim::guard`] / [`Claim::guard_delete`]) only touches the row while it still carries
//! that token: a holder whose lease ran out and whose row someone else claimed since cannot
//! ack, retry, finish or extend it, whatever happened to `attempts` meanwhile. (The token
//! used to be `attempts`, which a retry resets to 0, so a stale holder could match again.)

use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, DeleteMany, EntityTrait, QueryFilter,
    UpdateMany,
};
use uuid::Uuid;

use super::entities::{mlflow_events, queue_messages};

/// A table whose rows are claimed with fenced leases.
pub trait WorkTable: EntityTrait {
    /// The `id` column.
    fn id() -> Self::Column;
    /// `locked_until`.
    fn locked_until() -> Self::Column;
    /// `attempts` (claims so far).
    fn attempts() -> Self::Column;
    /// `claim_token`.
    fn claim_token() -> Self::Column;
    /// Rows that can still be claimed (not dead, not done).
    fn live() -> SimpleExpr;
}

impl WorkTable for queue_messages::Entity {
    fn id() -> Self::Column {
        queue_messages::Column::Id
    }
    fn locked_until() -> Self::Column {
        queue_messages::Column::LockedUntil
    }
    fn attempts() -> Self::Column {
        queue_messages::Column::Attempts
    }
    fn claim_token() -> Self::Column {
        queue_messages::Column::ClaimToken
    }
    fn live() -> SimpleExpr {
        queue_messages::Column::DeadAt.is_null()
    }
}

impl WorkTable for mlflow_events::Entity {
    fn id() -> Self::Column {
        mlflow_events::Column::Id
    }
    fn locked_until() -> Self::Column {
        mlflow_events::Column::LockedUntil
    }
    fn attempts() -> Self::Column {
        mlflow_events::Column::Attempts
    }
    fn claim_token() -> Self::Column {
        mlflow_events::Column::ClaimToken
    }
    fn live() -> SimpleExpr {
        mlflow_events::Column::ProcessedAt.is_null()
    }
}

/// Rows nobody holds a running lease on at `now` (for the candidates' query).
pub fn free<E: WorkTable>(now: DateTime<Utc>) -> Condition {
    Condition::any()
        .add(E::locked_until().is_null())
        .add(E::locked_until().lt(now))
}

fn later(now: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX)
}

/// A claim held on one row of `E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<E> {
    /// The row.
    pub id: Uuid,
    /// This claim's token.
    pub token: Uuid,
    /// Until when the lease runs (as written).
    pub until: DateTime<Utc>,
    table: PhantomData<fn() -> E>,
}

/// Claims row `id` for `lease` if it is live and free; `None` when someone else won it.
pub async fn take<E: WorkTable, C: ConnectionTrait>(
    conn: &C,
    id: Uuid,
    lease: Duration,
) -> Result<Option<Claim<E>>, DbErr> {
    let now = Utc::now();
    let until = later(now, lease);
    let token = Uuid::new_v4();
    let taken = E::update_many()
        .col_expr(E::locked_until(), Expr::value(until))
        .col_expr(E::attempts(), Expr::col(E::attempts()).add(1))
        .col_expr(E::claim_token(), Expr::value(token))
        .filter(E::id().eq(id))
        .filter(E::live())
        .filter(free::<E>(now))
        .exec(conn)
        .await?;
    Ok((taken.rows_affected == 1).then_some(Claim {
        id,
        token,
        until,
        table: PhantomData,
    }))
}

impl<E: WorkTable> Claim<E> {
    /// An update of this row that applies only while this claim holds it (add the columns
    /// to set; `rows_affected == 0` means the claim was lost).
    pub fn guard(&self) -> UpdateMany<E> {
        E::update_many()
            .filter(E::id().eq(self.id))
            .filter(E::claim_token().eq(self.token))
    }

    /// A delete of this row that applies only while this claim holds it.
    pub fn guard_delete(&self) -> DeleteMany<E> {
        E::delete_many()
            .filter(E::id().eq(self.id))
            .filter(E::claim_token().eq(self.token))
    }

    /// Extends the lease by `lease` from now; `false` when the claim was lost.
    pub async fn extend<C: ConnectionTrait>(
        &self,
        conn: &C,
        lease: Duration,
    ) -> Result<bool, DbErr> {
        let extended = self
            .guard()
            .col_expr(E::locked_until(), Expr::value(later(Utc::now(), lease)))
            .exec(conn)
            .await?;
        Ok(extended.rows_affected == 1)
    }
}
