//! Cost observed so far. No provider reports money spent: cost is billable time × price,
//! where the provider state last recorded on the row is taken to have lasted until now
//! (HF bills `initializing`, `running` and `updating`; paused and scaled-to-zero are free).

use chrono::{DateTime, Utc};

use crate::db::deployments::Deployment;
use crate::provider::ProviderState;

/// Whether the deployment's last observed provider state is billed.
pub fn is_billable(row: &Deployment) -> bool {
    row.provider_status
        .as_deref()
        .map(ProviderState::parse)
        .is_some_and(|s| s.is_billable())
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
