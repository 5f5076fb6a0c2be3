//! Retention: the leader prunes rows that only matter for a while — published outbox rows,
//! `processed_messages` (the inbox that makes redeliveries harmless), `mlflow_deliveries`
//! (webhook de-duplication), processed `mlflow_events` and the `rollout_measurements` of
//! rollouts that ended (docs/design/rollouts.md) — once older than `RETENTION_DAYS`, in
//! batches, so no table grows without bound. `deployment_events` (the deployments' history)
//! and the `rollouts` themselves (with their outcome) are kept. A duplicate delivered after the retention period would be
//! handled again; brokers redeliver within minutes and MLflow retries within seconds.

use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbErr};
use shared::telemetry::metrics::names;

/// How often the leader prunes.
pub const PERIOD: Duration = Duration::from_secs(600);
/// Rows deleted per statement.
const BATCH: u64 = 1_000;
/// Statements per table and pass (at most `BATCH × MAX_BATCHES` rows per table per pass; the
/// rest waits for the next pass).
const MAX_BATCHES: usize = 100;

/// The tables pruned: (table, key column, age column — a null age is never pruned).
const TABLES: [(&str, &str, &str); 4] = [
    ("outbox", "id", "published_at"),
    ("processed_messages", "message_id", "processed_at"),
    ("mlflow_deliveries", "delivery_id", "received_at"),
    ("mlflow_events", "id", "processed_at"),
];

/// Rows deleted by one pass, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned(pub Vec<(&'static str, u64)>);

impl Pruned {
    /// Rows deleted from `table`.
    pub fn of(&self, table: &str) -> u64 {
        self.0
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// Deletes every row older than `retention` from the pruned tables, in batches.
pub async fn prune_once<C: ConnectionTrait>(
    conn: &C,
    retention: Duration,
) -> Result<Pruned, DbErr> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let mut pruned = Pruned::default();
    for (table, key, age) in TABLES {
        let old = Expr::col(age).is_not_null().and(Expr::col(age).lt(cutoff));
        pruned.0.push((table, prune(conn, table, key, old).await?));
    }
    // A rollout's measurements age with the rollout: kept while it runs, however long.
    let ended = Query::select()
        .column("id")
        .from("rollouts")
        .and_where(Expr::col("ended_at").lt(cutoff))
        .to_owned();
    let old = Expr::col("rollout_id").in_subquery(ended);
    let table = "rollout_measurements";
    pruned.0.push((table, prune(conn, table, "id", old).await?));
    Ok(pruned)
}

/// Deletes the rows of `table` matching `old`, at most `BATCH` per statement and
/// `MAX_BATCHES` statements; returns how many.
async fn prune<C: ConnectionTrait>(
    conn: &C,
    table: &'static str,
    key: &'static str,
    old: Expr,
) -> Result<u64, DbErr> {
    let backend = conn.get_database_backend();
    let mut deleted = 0;
    for _ in 0..MAX_BATCHES {
        let batch = Query::select()
            .column(key)
            .from(table)
            .and_where(old.clone())
            .limit(BATCH)
            .to_owned();
        let delete = Query::delete()
            .from_table(table)
            .and_where(Expr::col(key).in_subquery(batch))
            .to_owned();
        let n = conn
            .execute_raw(backend.build(&delete))
            .await?
            .rows_affected();
        deleted += n;
        if n < BATCH {
            break;
        }
    }
    if deleted > 0 {
        metrics::counter!(names::RETENTION_DELETED, "table" => table).increment(deleted);
        tracing::info!(table, deleted, "retention pruned old rows");
    }
    Ok(deleted)
}
