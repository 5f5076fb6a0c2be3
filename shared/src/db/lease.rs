//! A leader lease in the database: at most one holder per name at a time, judged by the
//! **database's** clock, so workers with skewed clocks agree (docs/architecture.md, "The
//! reconciler").
//!
//! [`try_hold`] takes a free or expired lease, or renews one the caller already holds; it
//! answers with the lease's fencing token (it grows at every change of holder) or `None`
//! when another holder's lease is still running. A holder that stops renewing loses the
//! lease `ttl` after its last renewal; [`release`] gives it up at once on a clean stop.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, Statement, Value};

/// Seconds since the epoch by the database's clock, in each dialect.
fn now_sql(backend: DatabaseBackend) -> &'static str {
    match backend {
        DatabaseBackend::Postgres => "extract(epoch from clock_timestamp())::float8",
        _ => "((julianday('now') - 2440587.5) * 86400.0)",
    }
}

/// Placeholders `$1…` on PostgreSQL, `?` elsewhere.
fn sql(backend: DatabaseBackend, template: &str) -> String {
    let now = now_sql(backend);
    let mut out = template.replace("{now}", now);
    if backend != DatabaseBackend::Postgres {
        for n in 1..=4 {
            out = out.replace(&format!("${n}"), "?");
        }
    }
    out
}

/// Takes or renews the lease `name` for `holder` for `ttl`. `Some(token)` when `holder`
/// holds it now; `None` while someone else's lease runs.
pub async fn try_hold<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<i64>, DbErr> {
    let backend = conn.get_database_backend();
    let statement = sql(
        backend,
        "INSERT INTO leader_leases (name, holder, token, expires_at) \
         VALUES ($1, $2, 1, {now} + $3) \
         ON CONFLICT (name) DO UPDATE SET \
           token = CASE WHEN leader_leases.holder = excluded.holder \
                   THEN leader_leases.token ELSE leader_leases.token + 1 END, \
           holder = excluded.holder, \
           expires_at = excluded.expires_at \
         WHERE leader_leases.holder = excluded.holder OR leader_leases.expires_at < {now} \
         RETURNING token",
    );
    let values: Vec<Value> = vec![name.into(), holder.into(), ttl.as_secs_f64().into()];
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(backend, statement, values))
        .await?;
    row.map(|r| r.try_get_by_index::<i64>(0)).transpose()
}

/// Gives the lease up when `holder` has it (a clean stop: the next holder need not wait).
pub async fn release<C: ConnectionTrait>(conn: &C, name: &str, holder: &str) -> Result<(), DbErr> {
    let backend = conn.get_database_backend();
    let statement = sql(
        backend,
        "UPDATE leader_leases SET expires_at = {now} - 1 WHERE name = $1 AND holder = $2",
    );
    conn.execute_raw(Statement::from_sql_and_values(
        backend,
        statement,
        vec![name.into(), holder.into()],
    ))
    .await?;
    Ok(())
}

/// Who holds `name` now, if anyone's lease is running.
pub async fn holder<C: ConnectionTrait>(conn: &C, name: &str) -> Result<Option<String>, DbErr> {
    let backend = conn.get_database_backend();
    let statement = sql(
        backend,
        "SELECT holder FROM leader_leases WHERE name = $1 AND expires_at >= {now}",
    );
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            statement,
            vec![name.into()],
        ))
        .await?;
    row.map(|r| r.try_get_by_index::<String>(0)).transpose()
}

/// Whether this process leads now, by its own clock: the holder of a lease records, after
/// each renewal, the instant until which its lease surely runs; other loops of the process
/// (leader-only periodic jobs) ask [`Leadership::is_leader`] before each tick.
#[derive(Debug, Clone, Default)]
pub struct Leadership(std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl Leadership {
    /// Records how long the lease surely runs (`None`: not leading).
    pub fn hold_until(&self, until: Option<tokio::time::Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }

    /// Until when the lease surely runs, by this process's clock (`None`: not leading).
    pub fn until(&self) -> Option<tokio::time::Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease is held and has not run out by this process's clock.
    pub fn is_leader(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| tokio::time::Instant::now() < until)
    }

    /// Whether the lease is held and surely runs for at least `margin` more: a holder that
    /// renews only when this is false spares the renewal's commit while its lease is young.
    pub fn runs_for(&self, margin: std::time::Duration) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| tokio::time::Instant::now() + margin < until)
    }

    /// [`Leadership::is_leader`] as the predicate [`crate::runtime::Tasks::every`] takes.
    pub fn predicate(&self) -> std::sync::Arc<dyn Fn() -> bool + Send + Sync> {
        let leadership = self.clone();
        std::sync::Arc::new(move || leadership.is_leader())
    }
}
