//! A saga step's writes as **one PostgreSQL statement**, or **one SQLite script** in a
//! transaction (docs/design/queue.md, "A step in one statement").
//!
//! A step on the embedded queue deletes its message under its claim, updates its deployment
//! under the optimistic lock and appends events and follow-up commands — run one by one in
//! a transaction, that is six or more round trips (`BEGIN`, the statements, `COMMIT`), each
//! parsed, executed and answered on both sides. On PostgreSQL the same writes fit in one
//! statement of data-modifying common table expressions, which is its own transaction:
//!
//! ```sql
//! WITH held    AS (SELECT id FROM queue_messages WHERE id = $m AND claim_token = $t FOR UPDATE),
//!      lk      AS (SELECT model_id FROM model_operations WHERE model_id = $model FOR UPDATE),
//!      changed AS (UPDATE deployed_models SET … WHERE id = $d AND lock_version = $v
//!                    AND EXISTS (SELECT 1 FROM held) AND EXISTS (SELECT 1 FROM lk) RETURNING id),
//!      acked   AS (DELETE FROM queue_messages WHERE id = $m AND claim_token = $t
//!                    AND EXISTS (SELECT 1 FROM changed)),
//!      w0      AS (INSERT INTO deployment_events (…) SELECT … WHERE EXISTS (SELECT 1 FROM changed)
//!                    RETURNING 1),
//!      w1      AS (INSERT INTO queue_messages (…) SELECT … WHERE EXISTS (SELECT 1 FROM w0) RETURNING 1),
//!      bump    AS (INSERT INTO model_operations … SELECT … WHERE EXISTS (SELECT 1 FROM changed)
//!                    ON CONFLICT (model_id) DO UPDATE SET version = model_operations.version + 1 …)
//! SELECT (SELECT count(*) FROM held) AS held, (SELECT count(*) FROM lk) AS locked,
//!        (SELECT count(*) FROM changed) AS changed
//! ```
//!
//! A broker's message has no row to hold; its step is guarded by the inbox instead, as in
//! the transaction: `held AS (SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM processed_messages
//! WHERE message_id = $id))`, and in place of `acked` the inbox row, inserted (`ON CONFLICT
//! DO NOTHING`) only if the update matched.
//!
//! PostgreSQL runs every data-modifying sub-statement to completion and cannot undo one
//! when a later one matches nothing, so the statement is built around **one guarded update**,
//! and every write depends on it: nothing before it writes (`held` and `lk` only lock), and
//! everything after it runs only if it matched. The statement thus writes everything or
//! nothing, as the transaction did: no row `held` — the claim was lost, another consumer
//! holds the message ([`Outcome::Lost`]), or the inbox already has the message
//! ([`Outcome::Handled`]); no row `lk` — the model has no operation row yet
//! ([`Outcome::Unlocked`]: commit in a transaction, whose lock creates it); the update
//! matched nothing — someone changed the deployment since it was read ([`Outcome::Stale`]);
//! otherwise everything is written and the message is gone (or in the inbox) with it. Plans
//! that update two deployments (a deactivation beside the activation) keep the transaction.
//! Two copies of a broker's message handled at once both find the inbox empty, but both
//! update the same deployment under its `lock_version`: the second waits for the first's row
//! lock, then matches nothing (the caller then finds the message in the inbox).
//!
//! The order is the transaction's, kept by the dependencies (a sub-statement runs when the
//! first one that reads it needs its rows): `held` locks the message row first, so a consumer
//! that claims it after an expired lease waits for this statement or skips the row (its
//! claim is `SKIP LOCKED`); a model operation then takes the model's operation lock (`lk`,
//! the row lock `db::model_ops::lock` holds, taken before any deployment row as everywhere);
//! then the update; the inserts each after the one before (sub-statements nobody reads run
//! at the end, last first, and events are stamped by the database's clock as inserted);
//! the model's version is bumped only when the update is written. All sub-statements share
//! one snapshot; an update of a row someone changed meanwhile sees the newer row (PostgreSQL
//! re-checks its `WHERE` on it), so the optimistic lock holds as in the transaction.
//!
//! **SQLite** has no data-modifying CTEs, and no network between the process and the file,
//! but its driver (sqlx) runs each connection on a thread of its own and hands it every
//! statement over a channel: a statement costs two thread switches however small it is, and
//! those switches were a quarter of the SQLite pipeline's CPU (docs/benchmarks.md, "A step
//! in one SQLite script"). A query of several statements separated by `;` is one hand-over
//! (the driver steps through them on its thread), so on SQLite the same writes are **one
//! script** — the guard (`DELETE … RETURNING 'held'`, or the inbox insert `ON CONFLICT DO
//! NOTHING RETURNING 'held'`), the model's operation upsert (`RETURNING 'locked'`), the
//! guarded update (`RETURNING 'changed'`), the inserts in the plan's order — run in the
//! caller's transaction (`BEGIN` and `COMMIT` are the other two hand-overs, three where
//! there were six to eight). The model's upsert and the update run only after a guard that
//! held (`… WHERE changes() > 0`: the previous write changed a row), so a lost claim is
//! [`Outcome::Lost`] as in the transaction, never an error of an update that should not have
//! run; the inserts after them run in any case. The tagged rows say which guards held, and
//! the caller commits only on [`Outcome::Written`] and rolls back on any other outcome or an
//! error part-way (`Plan::commit`, with `BEGIN IMMEDIATE` in the writer's turn, so the rows
//! are stamped once the file's write lock is held). SQLite has one writer at a time, so the
//! order of the locks does not matter there; the upsert creates a model's operation row on
//! first use ([`Outcome::Unlocked`] does not happen on SQLite). A copy of a broker's message
//! handled after another finds its inbox row ([`Outcome::Handled`]): SQLite's writers take
//! turns, so two copies never write at once.

use chrono::Utc;
use sea_orm::sea_query::{
    Alias, CommonTableExpression, DynIden, Expr, ExprTrait, InsertStatement, IntoIden,
    IntoTableRef, LockType, OnConflict, PostgresQueryBuilder, Query, ReturningClause, SimpleExpr,
    SqliteQueryBuilder, SubQueryStatement, TableRef, UpdateStatement, WithClause,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, Iterable, QueryTrait, Set, Statement, UpdateMany,
};
use uuid::Uuid;

use super::claim::Claim;
use super::entities::{deployed_models, processed_messages, queue_messages};

/// What the statement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything written; the message is gone (or in the inbox).
    Written,
    /// The claim on the message was lost: nothing written.
    Lost,
    /// The inbox has the message (a broker's copy of a handled one): nothing written.
    Handled,
    /// The deployment changed since it was read: nothing written.
    Stale,
    /// The model has no operation row to lock yet: nothing written; commit in a
    /// transaction instead (`db::model_ops::lock` creates the row).
    Unlocked,
}

/// The writes of one step, to run as one statement.
#[derive(Debug)]
pub struct OneStatement {
    guard: Guard,
    model: Option<String>,
    update: Option<UpdateStatement>,
    inserts: Vec<Row>,
}

/// `EXISTS (SELECT 1 FROM name)`.
fn exists_in(name: &str) -> SimpleExpr {
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from(Alias::new(name))
            .to_owned(),
    )
}

/// `(SELECT count(*) FROM name)`.
fn count_of(name: &str) -> SimpleExpr {
    Expr::cust(format!("(SELECT count(*) FROM \"{name}\")"))
}

fn cte(name: &str, query: SubQueryStatement) -> CommonTableExpression {
    CommonTableExpression::new()
        .table_name(Alias::new(name))
        .query(query)
        .to_owned()
}

/// What makes the statement the step of its message, once.
#[derive(Debug, Clone, Copy)]
enum Guard {
    /// The embedded queue's row under this claim, deleted with the writes.
    Claim(Claim<queue_messages::Entity>),
    /// A broker's message id, written to the inbox (`processed_messages`) with the writes.
    Inbox(Uuid),
}

impl OneStatement {
    /// The step of the embedded queue's message under `claim`.
    pub fn new(claim: &Claim<queue_messages::Entity>) -> Self {
        Self::guarded(Guard::Claim(*claim))
    }

    /// The step of a broker's message `message_id`: written only if the inbox does not have
    /// it yet, and the inbox gets it with the writes. On PostgreSQL a copy handled at the
    /// same time finds the deployment changed (every statement updates its deployment under
    /// the optimistic lock) and writes nothing ([`Outcome::Stale`]); a later one (on SQLite
    /// every other one: writers take turns) finds the inbox row ([`Outcome::Handled`]).
    pub fn for_message(message_id: Uuid) -> Self {
        Self::guarded(Guard::Inbox(message_id))
    }

    fn guarded(guard: Guard) -> Self {
        Self {
            guard,
            model: None,
            update: None,
            inserts: Vec::new(),
        }
    }

    /// Takes `model`'s operation lock before any update and bumps its version once
    /// everything is written (`db::model_ops::lock`, without an expected version).
    pub fn locking_model(mut self, model: &str) -> Self {
        self.model = Some(model.to_owned());
        self
    }

    /// The step's update of its deployment (a guarded update:
    /// `db::transitions::guarded_update`). One per statement: a later write cannot undo an
    /// earlier one, so a second guarded update that matched nothing would leave the first
    /// one written (a plan that updates two deployments keeps its transaction).
    pub fn update(mut self, update: UpdateMany<deployed_models::Entity>) -> Self {
        assert!(self.update.is_none(), "one guarded update per statement");
        self.update = Some(update.into_query());
        self
    }

    /// Also inserts `row` (its set columns) after the rows given before it: on PostgreSQL
    /// only if the update matched, on SQLite in any case, rolled back with the transaction
    /// unless everything was written.
    pub fn insert<A: ActiveModelTrait>(mut self, row: A) -> Self {
        self.inserts.push(Row::of(&row));
        self
    }

    /// The statement, built.
    fn statement(self) -> Statement {
        let mut update = self
            .update
            .expect("a step's statement updates its deployment");
        let mut with = WithClause::new();
        let held = match self.guard {
            Guard::Claim(claim) => Query::select()
                .column(queue_messages::Column::Id)
                .from(queue_messages::Entity)
                .and_where(queue_messages::Column::Id.eq(claim.id))
                .and_where(queue_messages::Column::ClaimToken.eq(claim.token))
                .lock(LockType::Update)
                .to_owned(),
            Guard::Inbox(message_id) => Query::select()
                .expr(Expr::val(1))
                .and_where(
                    Expr::exists(
                        Query::select()
                            .expr(Expr::val(1))
                            .from(processed_messages::Entity)
                            .and_where(processed_messages::Column::MessageId.eq(message_id))
                            .to_owned(),
                    )
                    .not(),
                )
                .to_owned(),
        };
        with.cte(cte("held", held.into()));
        let mut first = exists_in("held");
        // Without a model to lock, `locked` is 1: nothing to miss.
        let mut locked = Expr::val(1i64);
        if let Some(model) = &self.model {
            let lock = Query::select()
                .column(Alias::new("model_id"))
                .from(Alias::new("model_operations"))
                .and_where(Expr::col(Alias::new("model_id")).eq(model.as_str()))
                .lock(LockType::Update)
                .to_owned();
            with.cte(cte("lk", lock.into()));
            // No row to lock (a model no operation has touched yet): nothing is written and
            // the caller commits in a transaction, whose lock creates the row.
            first = first.and(exists_in("lk"));
            locked = count_of("lk");
        }
        update
            .and_where(first)
            .returning_col(deployed_models::Column::Id);
        with.cte(cte("changed", update.into()));
        match self.guard {
            Guard::Claim(claim) => {
                let mut acked = claim.guard_delete().into_query();
                acked.and_where(exists_in("changed"));
                with.cte(cte("acked", acked.into()));
            }
            Guard::Inbox(message_id) => {
                let row = processed_messages::ActiveModel {
                    message_id: Set(message_id),
                    processed_at: Set(Utc::now()),
                };
                let mut inbox = Row::of(&row).insert_if(exists_in("changed"));
                inbox.on_conflict(
                    OnConflict::column(processed_messages::Column::MessageId)
                        .do_nothing()
                        .to_owned(),
                );
                with.cte(cte("inbox", inbox.into()));
            }
        }
        // Each row after the one before: PostgreSQL runs the sub-statements nobody reads at
        // the end, last first, and events are stamped by the database's clock as they are
        // inserted; reading the previous row's `RETURNING` keeps the plan's order.
        let mut previous = "changed".to_owned();
        for (i, row) in self.inserts.into_iter().enumerate() {
            let name = format!("w{i}");
            let mut insert = row.insert_if(exists_in(&previous));
            insert.returning(Query::returning().expr(Expr::val(1)));
            with.cte(cte(&name, insert.into()));
            previous = name;
        }
        if let Some(model) = self.model {
            let bump = model_upsert(model, exists_in("changed"));
            with.cte(cte("bump", bump.into()));
        }
        let counts = Query::select()
            .expr_as(count_of("held"), Alias::new("held"))
            .expr_as(locked, Alias::new("locked"))
            .expr_as(count_of("changed"), Alias::new("changed"))
            .to_owned();
        let (sql, values) = with.query(counts).build(PostgresQueryBuilder);
        Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
    }

    /// The same writes as one SQLite script: the statements the transaction would run, in
    /// its order, separated by `;`, each guard answering with a row tagged by its name
    /// (`RETURNING 'held'` …). SQLite has no data-modifying CTEs, but runs a multi-statement
    /// query in one call on its connection's thread, which is the round trip that counts
    /// there (module doc). The model's upsert and the update run only after a guard that
    /// held (`changes() > 0`); the inserts run in any case. It runs inside the caller's
    /// transaction, which commits only when every guard answered ([`Outcome::Written`]).
    fn script(self) -> Statement {
        let mut update = self
            .update
            .expect("a step's statement updates its deployment");
        let mut sql = String::new();
        let mut values = Vec::new();
        let mut push = |(statement, bound): (String, sea_orm::sea_query::Values)| {
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            sql.push_str(&statement);
            values.extend(bound.0);
        };
        match self.guard {
            Guard::Claim(claim) => {
                let mut acked = claim.guard_delete().into_query();
                acked.returning(tag("held"));
                push(acked.build(SqliteQueryBuilder));
            }
            Guard::Inbox(message_id) => {
                let row = processed_messages::ActiveModel {
                    message_id: Set(message_id),
                    processed_at: Set(Utc::now()),
                };
                let mut inbox = Row::of(&row).insert();
                inbox
                    .on_conflict(
                        OnConflict::column(processed_messages::Column::MessageId)
                            .do_nothing()
                            .to_owned(),
                    )
                    .returning(tag("held"));
                push(inbox.build(SqliteQueryBuilder));
            }
        }
        // The lock and the update run only if the statement before them changed a row
        // (`changes()`: the rows of the last completed write), so both hang on the guard as
        // in the transaction, which stops at a guard that fails: a lost claim is `Lost`, not
        // an error of an update that should not have run.
        if let Some(model) = self.model {
            let mut lock = model_upsert(model, after_a_change());
            lock.returning(tag("locked"));
            push(lock.build(SqliteQueryBuilder));
        }
        update.and_where(after_a_change()).returning(tag("changed"));
        push(update.build(SqliteQueryBuilder));
        for row in self.inserts {
            push(row.insert().build(SqliteQueryBuilder));
        }
        Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
    }

    /// Runs the statement on `conn` (PostgreSQL, outside a transaction: it is one). SQLite's
    /// script needs a transaction: [`OneStatement::run_in`].
    pub async fn run<C: ConnectionTrait>(self, conn: &C) -> Result<Outcome, DbErr> {
        if conn.get_database_backend() == DbBackend::Sqlite {
            return Err(DbErr::Custom(
                "a step's SQLite script runs in a transaction (OneStatement::run_in)".to_owned(),
            ));
        }
        self.run_statement(conn).await
    }

    /// Runs the writes in `txn`, which the caller commits only when the outcome is
    /// [`Outcome::Written`] and rolls back on any other: on SQLite the script (whose
    /// statements run whatever the guards said), on PostgreSQL the statement.
    pub async fn run_in(self, txn: &DatabaseTransaction) -> Result<Outcome, DbErr> {
        if txn.get_database_backend() == DbBackend::Sqlite {
            return self.run_script(txn).await;
        }
        self.run_statement(txn).await
    }

    async fn run_statement<C: ConnectionTrait>(self, conn: &C) -> Result<Outcome, DbErr> {
        let guard = self.guard;
        let row = conn
            .query_one_raw(self.statement())
            .await?
            .ok_or_else(|| DbErr::Custom("a step's statement returned no row".to_owned()))?;
        let held: i64 = row.try_get("", "held")?;
        let locked: i64 = row.try_get("", "locked")?;
        let changed: i64 = row.try_get("", "changed")?;
        Ok(match (held, locked, changed) {
            (0, _, _) if matches!(guard, Guard::Claim(_)) => Outcome::Lost,
            (0, _, _) => Outcome::Handled,
            (_, 0, _) => Outcome::Unlocked,
            (_, _, 0) => Outcome::Stale,
            _ => Outcome::Written,
        })
    }

    async fn run_script(self, txn: &DatabaseTransaction) -> Result<Outcome, DbErr> {
        let guard = self.guard;
        let model = self.model.is_some();
        let mut answered = (false, false, false);
        // `query_all`: every statement's rows (`query_one` would stop at the first).
        for row in txn.query_all_raw(self.script()).await? {
            match row.try_get_by_index::<String>(0)?.as_str() {
                "held" => answered.0 = true,
                "locked" => answered.1 = true,
                "changed" => answered.2 = true,
                other => {
                    return Err(DbErr::Custom(format!(
                        "a step's script answered an unknown row {other:?}"
                    )));
                }
            }
        }
        Ok(match answered {
            (false, _, _) if matches!(guard, Guard::Claim(_)) => Outcome::Lost,
            (false, _, _) => Outcome::Handled,
            // The upsert answers whenever it runs; kept for symmetry with PostgreSQL.
            (_, false, _) if model => Outcome::Unlocked,
            (_, _, false) => Outcome::Stale,
            _ => Outcome::Written,
        })
    }
}

/// The model's operation row created (version 1) or its version bumped, if `condition`:
/// `db::model_ops::lock` without an expected version.
fn model_upsert(model: String, condition: SimpleExpr) -> InsertStatement {
    let mut upsert = Query::insert();
    upsert
        .into_table(Alias::new("model_operations"))
        .columns([
            Alias::new("model_id"),
            Alias::new("version"),
            Alias::new("updated_at"),
        ])
        .select_from(
            Query::select()
                .exprs([Expr::val(model), Expr::val(1i64), Expr::val(Utc::now())])
                .and_where(condition)
                .to_owned(),
        )
        .expect("three values for three columns")
        .on_conflict(
            OnConflict::column(Alias::new("model_id"))
                .value(
                    Alias::new("version"),
                    Expr::col((Alias::new("model_operations"), Alias::new("version"))).add(1),
                )
                .update_column(Alias::new("updated_at"))
                .to_owned(),
        );
    upsert
}

/// `changes() > 0`: the SQLite script's previous write changed a row.
fn after_a_change() -> SimpleExpr {
    Expr::cust("changes() > 0")
}

/// `RETURNING 'name'`: the row a guard of the SQLite script answers with.
fn tag(name: &str) -> ReturningClause {
    Query::returning().expr(Expr::cust(format!("'{name}'")))
}

/// A row to insert: its table, the columns set and their values.
#[derive(Debug)]
struct Row {
    table: TableRef,
    columns: Vec<DynIden>,
    values: Vec<SimpleExpr>,
}

impl Row {
    /// The set columns of `row`.
    fn of<A: ActiveModelTrait>(row: &A) -> Self {
        let mut columns = Vec::new();
        let mut values = Vec::new();
        for column in <A::Entity as EntityTrait>::Column::iter() {
            if let ActiveValue::Set(value) | ActiveValue::Unchanged(value) = row.get(column) {
                columns.push(column.into_iden());
                values.push(Expr::val(value));
            }
        }
        Row {
            table: A::Entity::default().into_table_ref(),
            columns,
            values,
        }
    }

    /// `INSERT INTO table (columns) VALUES (values)`.
    fn insert(self) -> InsertStatement {
        let mut insert = Query::insert();
        insert
            .into_table(self.table)
            .columns(self.columns)
            .values_panic(self.values);
        insert
    }

    /// `INSERT INTO table (columns) SELECT values WHERE condition`.
    fn insert_if(self, condition: SimpleExpr) -> InsertStatement {
        let mut insert = Query::insert();
        insert
            .into_table(self.table)
            .columns(self.columns)
            .select_from(
                Query::select()
                    .exprs(self.values)
                    .and_where(condition)
                    .to_owned(),
            )
            .expect("as many values as columns");
        insert
    }
}
