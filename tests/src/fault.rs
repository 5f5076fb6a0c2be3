//! The fault suite's counts lines (issue 11): `fault <name>: requested N / terminal N /
//! orphaned N / lost N (…)`. Printed, and appended to the file `HOKUSAI_FAULT_REPORT` names
//! when set, so `scripts/test` can show them although the test harness captures the output
//! of passing tests.

use std::io::Write;

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
