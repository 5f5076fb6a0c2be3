//! Cost observed so far. No provider reports money spent: cost is billable time × price,
//! where the provider state last recorded on the row is taken to have lasted until now
//! (HF bills `initializing`, `running` and `updating`; paused and scaled-to-zero are free).
//!
//! Every write of a deployment row folds the billable time since its previous write into
//! `accrued_cost_usd` (see `db::transitions`), so the row's accrued cost always covers the
//! time up to `updated_at`. The month-to-date figure subtracts what had accrued when the
//! month began (`month_start_accrued_usd`, kept with `cost_month`).

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::db::deployments::Deployment;
use crate::domain::DeploymentStatus;
use crate::provider::ProviderState;

/// Whether the deployment's last observed provider state is billed.
pub fn is_billable(row: &Deployment) -> bool {
    row.provider_status
        .as_deref()
        .map(ProviderState::parse)
        .is_some_and(|s| s.is_billable())
}

/// What the deployment burns per hour now (0 unless billable).
pub fn current_hourly(row: &Deployment) -> f64 {
    if is_billable(row) {
        row.hourly_cost_usd.unwrap_or(0.0)
    } else {
        0.0
    }
}

/// Accrued cost including the billable time since the row last changed.
pub fn accrued_until(row: &Deployment, now: DateTime<Utc>) -> f64 {
    match (row.hourly_cost_usd, is_billable(row)) {
        (Some(hourly), true) => {
            let hours = (now - row.updated_at).num_milliseconds().max(0) as f64 / 3_600_000.0;
            row.accrued_cost_usd + hourly * hours
        }
        _ => row.accrued_cost_usd,
    }
}

/// The month of `at` as `YYYY-MM` (UTC), the key of `cost_month`.
pub fn month_key(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// The first instant of the month of `at` (UTC).
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .expect("the first of a month at midnight UTC exists")
}

/// What had accrued when the month of `now` began, as known from the row: its own figure
/// when it was written this month, else the accrual up to the month's first instant (the
/// row's state held from `updated_at` until then).
pub fn accrued_at_month_start(row: &Deployment, now: DateTime<Utc>) -> f64 {
    if row.cost_month.as_deref() == Some(month_key(now).as_str()) {
        row.month_start_accrued_usd
    } else {
        accrued_until(row, month_start(now))
    }
}

/// Cost accrued since the month of `now` began.
pub fn month_to_date(row: &Deployment, now: DateTime<Utc>) -> f64 {
    (accrued_until(row, now) - accrued_at_month_start(row, now)).max(0.0)
}

/// Whether the deployment is idle: deployed, billing, and no prediction answered for
/// `idle_after` (counting from when it was deployed if it never answered one). `seen` is
/// a more recent prediction time known in memory, if any.
pub fn is_idle(
    row: &Deployment,
    seen: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    idle_after: Duration,
) -> bool {
    if row.status != DeploymentStatus::Deployed || current_hourly(row) <= 0.0 {
        return false;
    }
    let last = [row.last_prediction_at, seen, row.deployed_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(row.created_at);
    (now - last).to_std().is_ok_and(|quiet| quiet >= idle_after)
}

#[cfg(test)]
mod tests {
    use chrono::Duration as Span;
    use uuid::Uuid;

    use super::*;

    fn row(provider_status: &str, updated_at: DateTime<Utc>) -> Deployment {
        Deployment {
            id: Uuid::new_v4(),
            model_id: "m".into(),
            model_version: Some("1".into()),
            provider: "huggingface".into(),
            provider_model_id: None,
            endpoint_url: None,
            status: DeploymentStatus::Deployed,
            provider_status: Some(provider_status.into()),
            instance_type: "intel-spr".into(),
            instance_size: Some("x2".into()),
            vendor: None,
            region: None,
            task: None,
            framework: None,
            repository: None,
            revision: None,
            error_message: None,
            metadata: None,
            is_active: true,
            hourly_cost_usd: Some(2.0),
            accrued_cost_usd: 10.0,
            idempotency_key: None,
            lock_version: 0,
            created_at: updated_at,
            updated_at,
            deployed_at: Some(updated_at),
            stopped_at: None,
            last_prediction_at: None,
            cost_month: Some(month_key(updated_at)),
            month_start_accrued_usd: 4.0,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn accrual_counts_billable_hours_only() {
        let t = at("2026-11-10T00:00:00Z");
        assert_eq!(accrued_until(&row("running", t), t + Span::hours(3)), 16.0);
        assert_eq!(accrued_until(&row("paused", t), t + Span::hours(3)), 10.0);
        assert_eq!(current_hourly(&row("scaledToZero", t)), 0.0);
    }

    #[test]
    fn month_to_date_within_the_written_month_subtracts_the_month_start_figure() {
        let t = at("2026-11-10T00:00:00Z");
        // 10 accrued at t, of which 4 before November; 2 more hours at 2/h.
        assert_eq!(month_to_date(&row("running", t), t + Span::hours(2)), 10.0);
    }

    #[test]
    fn month_to_date_across_a_month_boundary_counts_from_the_first() {
        // Last written on Oct 31 at 22:00, running ever since: 2 h in October, 5 h in November.
        let t = at("2026-10-31T22:00:00Z");
        let now = at("2026-11-01T05:00:00Z");
        assert_eq!(accrued_at_month_start(&row("running", t), now), 14.0);
        assert_eq!(month_to_date(&row("running", t), now), 10.0);
        // Paused since: nothing this month.
        assert_eq!(month_to_date(&row("paused", t), now), 0.0);
        assert_eq!(month_start(now), at("2026-11-01T00:00:00Z"));
        assert_eq!(month_key(now), "2026-11");
    }

    #[test]
    fn idle_means_deployed_billing_and_quiet_for_the_threshold() {
        let t = at("2026-11-10T00:00:00Z");
        let day = Duration::from_secs(24 * 3600);
        let running = row("running", t);
        assert!(!is_idle(&running, None, t + Span::hours(23), day));
        assert!(is_idle(&running, None, t + Span::hours(25), day));
        let recent = Some(t + Span::hours(20));
        assert!(
            !is_idle(&running, recent, t + Span::hours(25), day),
            "a recent prediction"
        );
        let mut predicted = running.clone();
        predicted.last_prediction_at = recent;
        assert!(!is_idle(&predicted, None, t + Span::hours(25), day));
        assert!(
            !is_idle(&row("scaledToZero", t), None, t + Span::hours(48), day),
            "not billing"
        );
        let mut failed = running;
        failed.status = DeploymentStatus::Failed;
        assert!(!is_idle(&failed, None, t + Span::hours(48), day));
    }
}
