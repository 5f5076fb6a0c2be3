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

use std::collections::HashSet;
use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Expr, ExprTrait, PostgresQueryBuilder, Query, SelectStatement, SimpleExpr,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, DbErr, DeleteMany, EntityTrait,
    IdenStatic, QueryFilter, QueryResult, Statement, UpdateMany,
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

/// Claims every row `candidates` selects (a query of ids; on PostgreSQL it should lock
/// `FOR UPDATE SKIP LOCKED`, so concurrent claimers split the rows instead of waiting), in
/// **one statement**, all under one fresh token (a token per claim, not per row: the guards
/// match the row's id *and* the token). Rows that are no longer live and free are left
/// alone. Returns each claimed row's `returning` columns with its claim.
pub async fn take_many<E: WorkTable, C: ConnectionTrait>(
    conn: &C,
    candidates: SelectStatement,
    lease: Duration,
    returning: impl IntoIterator<Item = E::Column>,
) -> Result<Vec<(QueryResult, Claim<E>)>, DbErr> {
    let now = Utc::now();
    let until = later(now, lease);
    let token = Uuid::new_v4();
    let returning: Vec<E::Column> = returning.into_iter().collect();
    let rows = match conn.get_database_backend() {
        // `= ANY(ARRAY(subquery))`: the array is computed once (an init plan), whereas
        // `IN (subquery)` may be planned as a join that runs the `LIMIT … SKIP LOCKED`
        // subquery again and claims more rows than asked. sea-query cannot write it, so the
        // statement is composed around the rendered subquery (names are the entity's own,
        // every value a bound parameter).
        DatabaseBackend::Postgres => {
            let (select, mut values) = candidates.build(PostgresQueryBuilder);
            let name = |c: E::Column| format!("\"{}\"", IdenStatic::as_str(&c));
            let (until_at, token_at) = (values.0.len() + 1, values.0.len() + 2);
            values.0.push(until.into());
            values.0.push(token.into());
            let attempts = name(E::attempts());
            let sql = format!(
                "UPDATE \"{table}\" SET {locked} = ${until_at}, {attempts} = {attempts} + 1, \
                 {token_col} = ${token_at} WHERE {id} = ANY(ARRAY({select})) RETURNING {columns}",
                table = E::default().table_name(),
                locked = name(E::locked_until()),
                token_col = name(E::claim_token()),
                id = name(E::id()),
                columns = returning
                    .iter()
                    .map(|c| name(*c))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            conn.query_all_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                sql,
                values,
            ))
            .await?
        }
        // One writer at a time: the subquery and the update are one atomic step.
        _ => {
            let statement = Query::update()
                .table(E::default())
                .value(E::locked_until(), until)
                .value(E::attempts(), Expr::col(E::attempts()).add(1))
                .value(E::claim_token(), token)
                .and_where(E::id().in_subquery(candidates))
                .and_where(E::live())
                .cond_where(free::<E>(now))
                .returning(Query::returning().columns(returning))
                .to_owned();
            conn.query_all(&statement).await?
        }
    };
    rows.into_iter()
        .map(|row| {
            let id: Uuid = row.try_get("", IdenStatic::as_str(&E::id()))?;
            Ok((
                row,
                Claim {
                    id,
                    token,
                    until,
                    table: PhantomData,
                },
            ))
        })
        .collect()
}

/// Deletes the rows of `claims` that their claim still holds, in one statement; returns
/// the ids deleted (a claim missing from it was lost to another claimer).
pub async fn delete_held<E: WorkTable, C: ConnectionTrait>(
    conn: &C,
    claims: &[Claim<E>],
) -> Result<HashSet<Uuid>, DbErr> {
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let held = claims.iter().fold(Condition::any(), |any, claim| {
        any.add(
            Condition::all()
                .add(E::id().eq(claim.id))
                .add(E::claim_token().eq(claim.token)),
        )
    });
    let statement = Query::delete()
        .from_table(E::default())
        .cond_where(held)
        .returning_col(E::id())
        .to_owned();
    let id_column = IdenStatic::as_str(&E::id());
    conn.query_all(&statement)
        .await?
        .into_iter()
        .map(|row| row.try_get::<Uuid>("", id_column))
        .collect()
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
