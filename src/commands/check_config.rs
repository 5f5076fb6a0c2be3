//! `hokusai-serve check-config`: the effective configuration, one `NAME=value  # origin`
//! line per variable, secrets redacted.

use shared::config::Settings;

use super::Failure;

/// Prints the configuration, or fails with exit 2 naming the variable at fault.
pub fn run() -> Result<(), Failure> {
    let (settings, sources) = Settings::load()?;
    settings.check_serving_policy()?;
    let mut report = format!("# hokusai-serve configuration ({})\n", settings.environment);
    for (name, value, origin) in sources.redacted() {
        report.push_str(&format!("{name}={value}  # {origin}\n"));
    }
    super::print(&report);
    Ok(())
}
