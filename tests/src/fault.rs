//! The fault suite's counts lines (issue 11): `fault <name>: requested N / terminal N /
//! orphaned N / lost N (…)`. Printed, and appended to the file `HOKUSAI_FAULT_REPORT` names
//! when set, so `scripts/test` can show them although the test harness captures the output
//! of passing tests. [`orphaned_endpoints`] computes the `orphaned` count of a deployment
//! test from what the provider and the database hold.

use std::collections::BTreeSet;
use std::io::Write;

use shared::db::entities::deployed_models;
use shared::domain::DeploymentStatus;

/// Prints `line` and appends it to `$HOKUSAI_FAULT_REPORT`.
pub fn report(line: &str) {
    println!("{line}");
    let Some(path) = std::env::var_os("HOKUSAI_FAULT_REPORT") else {
        return;
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{line}");
    }
}

/// Endpoints the provider holds (`held`, by name) that no `deployed` row of `rows` names:
/// endpoints that cost money and that nothing will ever serve from or delete.
pub fn orphaned_endpoints(
    held: impl IntoIterator<Item = String>,
    rows: &[deployed_models::Model],
) -> BTreeSet<String> {
    let deployed: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.status == DeploymentStatus::Deployed)
        .filter_map(|r| r.provider_model_id.as_deref())
        .collect();
    held.into_iter()
        .filter(|name| !deployed.contains(name.as_str()))
        .collect()
}
