//! The per-model operation lock and version (docs/design/domain.md, "Concurrent operations on
//! one model").
//!
//! [`lock`] is the **first write** of every transaction that accepts an operation on a model
//! (deploy, rollback, undeploy) or changes which deployment serves it (an activation, a
//! replacement): a write of the model's row in `model_operations` (one upsert that bumps the
//! version and reads it back), which holds the row
//! lock (PostgreSQL) or the write lock (SQLite) until the transaction ends. Everything the
//! transaction reads afterwards is what the last committed operation left, and no other
//! operation on the model can interleave: operations on one model are linearizable across API
//! processes and workers. Taking it first everywhere also keeps one lock order
//! (`model_operations` → `deployed_models`), so two such transactions cannot deadlock.
//!
//! A saga step on PostgreSQL that is one statement (`db::one_statement`) holds the same row
//! lock from its start (`SELECT … FOR UPDATE`) and bumps the version at its end, only if it
//! wrote; the row must exist (else the step takes a transaction and this lock). On SQLite a
//! step's script runs the same upsert as [`lock`] without an expected version.
//!
//! The row's `version` grows by one per committed operation: it is the model's `ETag`. With an
//! expected version (`If-Match`), the lock is taken only if the version is still that one;
//! otherwise [`DbError::PreconditionFailed`] names the current one. A transaction that then
//! refuses the operation rolls back, and the version does not move.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};
use uuid::Uuid;

use super::DbError;

/// An operation recorded on a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A deploy request (API or MLflow).
    Deploy,
    /// An operator rollback.
    Rollback,
    /// An operator undeploy.
    Undeploy,
    /// The worker made a deployment serve (or stop serving).
    Activation,
    /// The reconciler replaced a lost deployment.
    Heal,
}

impl Operation {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deploy => "deploy",
            Self::Rollback => "rollback",
            Self::Undeploy => "undeploy",
            Self::Activation => "activation",
            Self::Heal => "heal",
        }
    }
}

/// The model's row after [`lock`]: its new version and the operation accepted before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    /// The version this transaction writes (the `ETag` once it commits).
    pub version: i64,
    /// The version before this transaction (what an `If-Match` had to name).
    pub previous: i64,
    /// The last undeploy or rollback accepted on the model, and its deployment.
    pub last: Option<(String, Option<Uuid>)>,
}

fn statement(backend: DatabaseBackend, template: &str, values: Vec<Value>) -> Statement {
    let mut sql = template.to_owned();
    if backend != DatabaseBackend::Postgres {
        // SQLite's numbered parameters keep `$n`'s meaning whatever the order of use.
        for n in 1..=4 {
            sql = sql.replace(&format!("${n}"), &format!("?{n}"));
        }
    }
    Statement::from_sql_and_values(backend, sql, values)
}

/// Takes `model`'s operation lock for the rest of `txn` and bumps its version. With
/// `expected`, only while the version is still `expected`: else
/// [`DbError::PreconditionFailed`] with the current version (nothing written).
pub async fn lock<C: ConnectionTrait>(
    txn: &C,
    model: &str,
    expected: Option<i64>,
) -> Result<Locked, DbError> {
    let backend = txn.get_database_backend();
    let now = Utc::now();
    let Some(version) = expected else {
        // One statement: create the row on first use (version 1) or bump it, and read it
        // back. A concurrent writer's upsert waits for the other's commit, as an UPDATE does.
        let row = txn
            .query_one_raw(statement(
                backend,
                "INSERT INTO model_operations (model_id, version, updated_at) VALUES ($1, 1, $2) \
                 ON CONFLICT (model_id) DO UPDATE \
                 SET version = model_operations.version + 1, updated_at = excluded.updated_at \
                 RETURNING version, operation, deployment_id",
                vec![model.into(), now.into()],
            ))
            .await?
            .ok_or_else(|| sea_orm::DbErr::RecordNotFound(format!("model_operations {model}")))?;
        return locked(&row);
    };
    // Create the row on first use; a concurrent creator waits for the other's commit.
    txn.execute_raw(statement(
        backend,
        "INSERT INTO model_operations (model_id, version, updated_at) VALUES ($1, 0, $2) \
         ON CONFLICT (model_id) DO NOTHING",
        vec![model.into(), now.into()],
    ))
    .await?;
    let bumped = txn
        .execute_raw(statement(
            backend,
            "UPDATE model_operations SET version = version + 1, updated_at = $2 \
             WHERE model_id = $1 AND version = $3",
            vec![model.into(), now.into(), version.into()],
        ))
        .await?;
    let row = txn
        .query_one_raw(statement(
            backend,
            "SELECT version, operation, deployment_id FROM model_operations WHERE model_id = $1",
            vec![model.into()],
        ))
        .await?
        .ok_or_else(|| sea_orm::DbErr::RecordNotFound(format!("model_operations {model}")))?;
    if bumped.rows_affected() == 0 {
        return Err(DbError::PreconditionFailed {
            current: row.try_get_by_index(0)?,
        });
    }
    locked(&row)
}

/// [`Locked`] from a `(version, operation, deployment_id)` row read after the bump.
fn locked(row: &sea_orm::QueryResult) -> Result<Locked, DbError> {
    let version: i64 = row.try_get_by_index(0)?;
    let operation: Option<String> = row.try_get_by_index(1)?;
    let deployment: Option<Uuid> = row.try_get_by_index(2)?;
    Ok(Locked {
        version,
        previous: version - 1,
        last: operation.map(|op| (op, deployment)),
    })
}

/// Records an undeploy or a rollback of `deployment` as the model's last one (under
/// [`lock`]): what a later rollback or undeploy asks "is it still in flight?". Deploys are not
/// recorded here (their in-flight state is the deployments' own status), so a deploy in
/// between does not hide an undeploy in flight.
pub async fn record<C: ConnectionTrait>(
    txn: &C,
    model: &str,
    operation: Operation,
    deployment: Uuid,
) -> Result<(), DbError> {
    let backend = txn.get_database_backend();
    txn.execute_raw(statement(
        backend,
        "UPDATE model_operations SET operation = $2, deployment_id = $3 WHERE model_id = $1",
        vec![model.into(), operation.as_str().into(), deployment.into()],
    ))
    .await?;
    Ok(())
}

/// The model's current version (0 before its first operation).
pub async fn version<C: ConnectionTrait>(conn: &C, model: &str) -> Result<i64, DbError> {
    let backend = conn.get_database_backend();
    let row = conn
        .query_one_raw(statement(
            backend,
            "SELECT version FROM model_operations WHERE model_id = $1",
            vec![model.into()],
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    })
}
