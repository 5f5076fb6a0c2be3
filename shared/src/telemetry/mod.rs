//! Telemetry of every role: logging set-up (one subscriber for the process writing to
//! stderr, pretty in development and JSON lines elsewhere, filtered by `RUST_LOG`, coloured
//! only when stderr is a terminal), the Prometheus [`metrics`] registry and the
//! [`cloudwatch`] metrics.

pub mod cloudwatch;
pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber, the Prometheus recorder and (when enabled) the
/// CloudWatch sink. Call once, at start-up; later calls are ignored (tests may start
/// several applications in one process).
pub fn init(settings: &TelemetrySettings) {
    metrics::install();
    cloudwatch::install(settings);
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes only for a terminal: a file or a pipe (`dev 2> log`, a log shipper)
        // gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
