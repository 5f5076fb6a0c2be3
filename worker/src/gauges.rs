//! The gauges read from the database and the queue (docs/design/observability.md), refreshed by the
//! worker every [`EVERY`]: deployments by status, outbox backlog, queue and dead-letter
//! depth, and per model the accrued cost, hourly burn and idle flag. Each refresh also
//! sends CloudWatch `ProviderCostUSD`: the cost accrued since the previous refresh, so the
//! figures sum over any period.
//!
//! Only the leader refreshes them (`Tasks::every` with the reconciler's leadership), so N
//! workers send `ProviderCostUSD` once, not N times; Prometheus queries still take `max`
//! over instances (a former leader's last values linger until its restart). Deployments are
//! read in pages of [`PAGE`] rows, never the whole table at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
};
use shared::cost;
use shared::db::entities::{deployed_models, outbox};
use shared::domain::DeploymentStatus;
use shared::queue::Queue;
use shared::telemetry::cloudwatch::{self, Metric};
use shared::telemetry::metrics::names;

/// Accrued cost (USD) per (model, provider).
type Accrued = HashMap<(String, String), f64>;

/// Deployments read per query.
const PAGE: u64 = 1_000;

/// How often the gauges are refreshed.
pub const EVERY: Duration = Duration::from_secs(15);

/// Refreshes the gauges; remembers the accrued cost it last saw per model and provider.
pub struct Gauges {
    db: DatabaseConnection,
    queue: Arc<dyn Queue>,
    idle_after: Duration,
    /// The accrued cost per (model, provider) at the last refresh, and when.
    accrued: Mutex<Option<(Instant, Accrued)>>,
}

impl Gauges {
    /// Gauges over `db` and `queue`; a deployment is idle after `idle_after` without a
    /// prediction (`COST_IDLE_HOURS`).
    pub fn new(db: DatabaseConnection, queue: Arc<dyn Queue>, idle_after: Duration) -> Self {
        Self {
            db,
            queue,
            idle_after,
            accrued: Mutex::new(None),
        }
    }

    /// Refreshes every gauge once.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let mut by_status: BTreeMap<&str, u64> = DeploymentStatus::ALL
            .iter()
            .map(|s| (s.as_str(), 0))
            .collect();
        let mut accrued: Accrued = HashMap::new();
        let mut hourly: BTreeMap<String, f64> = BTreeMap::new();
        let mut idle: BTreeMap<String, bool> = BTreeMap::new();
        let mut pages = deployed_models::Entity::find()
            .order_by_asc(deployed_models::Column::Id)
            .paginate(&self.db, PAGE);
        while let Some(rows) = pages.fetch_and_next().await? {
            for row in &rows {
                *by_status.entry(row.status.as_str()).or_default() += 1;
                *accrued
                    .entry((row.model_id.clone(), row.provider.clone()))
                    .or_default() += cost::accrued_until(row, now);
                *hourly.entry(row.model_id.clone()).or_default() += cost::current_hourly(row);
                *idle.entry(row.model_id.clone()).or_default() |=
                    cost::is_idle(row, None, now, self.idle_after);
            }
        }
        for (status, n) in by_status {
            metrics::gauge!(names::DEPLOYMENTS, "status" => status).set(n as f64);
        }
        for ((model, provider), usd) in &accrued {
            metrics::gauge!(names::DEPLOYMENT_COST, "model_id" => model.clone(), "provider" => provider.clone())
                .set(*usd);
        }
        for (model, usd) in hourly {
            metrics::gauge!(names::DEPLOYMENT_HOURLY_COST, "model_id" => model).set(usd);
        }
        for (model, is_idle) in idle {
            metrics::gauge!(names::DEPLOYMENT_IDLE, "model_id" => model).set(if is_idle {
                1.0
            } else {
                0.0
            });
        }
        self.send_cost_increase(accrued);

        let pending = outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .count(&self.db)
            .await?;
        metrics::gauge!(names::OUTBOX_PENDING).set(pending as f64);
        cloudwatch::record(Metric::OutboxPending, &[], pending as f64);
        let depth = self.queue.depth().await?;
        let name = self.queue.name().to_owned();
        metrics::gauge!(names::QUEUE_DEPTH, "queue" => name.clone()).set(depth.pending as f64);
        metrics::gauge!(names::QUEUE_DEPTH, "queue" => format!("{name}.dlq"))
            .set(depth.dead as f64);
        Ok(())
    }

    /// CloudWatch `ProviderCostUSD`: what accrued since the previous refresh (nothing on
    /// the first, which only sets the baseline). A baseline older than two periods is
    /// dropped: this worker stopped leading in between and another one sent that cost.
    fn send_cost_increase(&self, accrued: Accrued) {
        let mut previous = self.accrued.lock().expect("gauges lock");
        let fresh = previous
            .as_ref()
            .filter(|(taken, _)| taken.elapsed() <= EVERY * 2)
            .map(|(_, before)| before);
        if let Some(before) = fresh {
            for ((model, provider), usd) in &accrued {
                let increase = usd
                    - before
                        .get(&(model.clone(), provider.clone()))
                        .unwrap_or(&0.0);
                if increase > 0.0 {
                    cloudwatch::record(
                        Metric::ProviderCostUsd,
                        &[("ModelId", model), ("Provider", provider)],
                        increase,
                    );
                }
            }
        }
        *previous = Some((Instant::now(), accrued));
    }
}
