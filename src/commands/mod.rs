//! The roles and verbs of the CLI. Each verb loads the configuration, builds the library
//! types of `api`, `worker` or `migrations`, and runs them; nothing here holds business
//! logic.

pub mod check_config;
pub mod dev;
pub mod dlq;
pub mod hf_emulator;
pub mod migrate;
pub mod mlflow;
pub mod roles;

use std::process::ExitCode;

use shared::config::sources::Origin;
use shared::config::{ConfigError, Settings};

/// Why a verb failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Usage or configuration error: exit 2.
    Config(String),
    /// Runtime failure: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self::Runtime(error)
    }
}

impl From<ConfigError> for Failure {
    fn from(error: ConfigError) -> Self {
        Self::Config(error.to_string())
    }
}

/// Prints the one-line reason and returns the exit code.
pub fn fail(failure: Failure) -> ExitCode {
    match failure {
        Failure::Config(reason) => {
            eprintln!("error: invalid configuration: {reason}");
            ExitCode::from(2)
        }
        Failure::Runtime(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Loads the configuration and installs logging as configured (`LOG_FORMAT`, `RUST_LOG`).
pub fn load_settings() -> Result<Settings, Failure> {
    let (settings, _) = Settings::load()?;
    shared::telemetry::init(&settings.telemetry);
    Ok(settings)
}

/// Loads the configuration of a one-off verb (`migrate`, `dlq`, `mlflow`): its result goes
/// to stdout, so its logs stay quiet (warnings and errors only) unless `verbose` (`-v`), and
/// `dlq list --json 2>err` leaves `err` empty.
pub fn load_verb_settings(verbose: bool) -> Result<Settings, Failure> {
    let (mut settings, _) = Settings::load()?;
    if !verbose {
        settings.telemetry.log_filter = QUIET_LOG_FILTER.to_owned();
    }
    shared::telemetry::init(&settings.telemetry);
    Ok(settings)
}

/// The log filter of a verb run without `-v`.
const QUIET_LOG_FILTER: &str = "warn";

/// Loads the configuration of a serving role (`api`, `worker`, `dev`): also refuses what
/// production must never run with.
pub fn load_serving_settings() -> Result<Settings, Failure> {
    let settings = load_settings()?;
    settings.check_serving_policy()?;
    Ok(settings)
}

/// Loads the configuration of a production role (`api`, `worker`): like
/// [`load_serving_settings`], and `ENVIRONMENT` must be given explicitly — without it a
/// role would silently run as development (static all-scope key). `dev` needs none.
pub fn load_role_settings(role: &str) -> Result<Settings, Failure> {
    let (settings, sources) = Settings::load()?;
    if matches!(sources.origin("ENVIRONMENT"), None | Some(Origin::Default)) {
        return Err(Failure::Config(format!(
            "ENVIRONMENT: required by `{role}` (development, staging or production); \
             `hokusai-serve dev` is the zero-configuration command"
        )));
    }
    shared::telemetry::init(&settings.telemetry);
    settings.check_serving_policy()?;
    Ok(settings)
}

/// Resolves on Ctrl-C or SIGTERM (what ECS sends to stop a task).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// Writes command output to stdout; a closed pipe (`… | head`) is not an error.
pub fn print(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
