//! Telemetry of every role: logging set-up (one subscriber for the process writing to
//! stderr, pretty in development and JSON lines elsewhere, filtered by `RUST_LOG`, coloured
//! only when stderr is a terminal), the Prometheus [`metrics`] registry and the
//! [`cloudwatch`] metrics.

pub mod cloudwatch;
pub mod metrics;

use std::io::IsTerminal;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, TelemetrySettings};
use crate::runtime::Tasks;

/// Installs the global subscriber, the Prometheus recorder and (when enabled) the
/// CloudWatch sink. Call once, at start-up; later calls are ignored (tests may start
/// several applications in one process).
pub fn init(settings: &TelemetrySettings) {
    metrics::install();
    cloudwatch::install(settings);
    // Escape codes only for a terminal: a file or a pipe (`dev 2> log`, a log shipper)
    // gets plain text.
    let ansi = std::io::stderr().is_terminal();
    let _ = log_subscriber(settings, std::io::stderr, ansi).try_init();
}

/// Runs the telemetry upkeep under `tasks`: the Prometheus recorder's upkeep and, when
/// CloudWatch metrics are on, their flush (background loops of every process, supervised like
/// the others; docs/design/runtime.md).
pub fn supervise(tasks: &Tasks) {
    tasks.every("metrics_upkeep", metrics::UPKEEP_PERIOD, None, || async {
        metrics::upkeep();
        Ok(())
    });
    if let Some(every) = cloudwatch::flush_period() {
        tasks.every("cloudwatch_flush", every, None, || async {
            cloudwatch::flush();
            Ok(())
        });
    }
}

/// The log subscriber [`init`] installs, writing to `writer`: JSON lines (every field at the
/// top level, with the current span) or compact text, filtered by `RUST_LOG`. Tests install
/// it with their own writer to read the very lines production writes (the CloudWatch log
/// metric filters of infra/terraform match them).
pub fn log_subscriber<W>(
    settings: &TelemetrySettings,
    writer: W,
    ansi: bool,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match settings.log_format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
        LogFormat::Pretty => Box::new(builder.compact().finish()),
    }
}
