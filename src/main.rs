//! `hokusai-serve`: the one binary. This file only parses the command line and dispatches
//! to the roles in [`commands`]; exit codes are 0 ok, 1 runtime failure, 2 usage or
//! configuration error, each with a one-line reason.

mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, with its background thread turned on in [`main`]: after a burst of connections
/// the pages it freed go back to the kernel within its decay time (10 s) instead of staying
/// in the process (docs/design/runtime.md, "Memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns models registered in MLflow into live, authenticated prediction endpoints.
#[derive(Debug, Parser)]
#[command(name = "hokusai-serve", version, about)]
struct Cli {
    /// Log the progress of one-off verbs (migrate, dlq, mlflow) to stderr; without it they
    /// print only their result, warnings and errors. The serving roles always log.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process on SQLite with the embedded queue (development).
    Dev {
        /// API port.
        #[arg(long, default_value_t = 8001)]
        port: u16,
        /// Folder for the SQLite database and other local state.
        #[arg(long, default_value = ".hokusai")]
        data_dir: PathBuf,
    },
    /// The HTTP API role.
    Api,
    /// The worker role.
    Worker,
    /// Database migrations against DATABASE_URL.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Dead-lettered commands: list, show, replay, purge (every queue backend).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// A standalone HuggingFace Inference Endpoints emulator (never the real service).
    HfEmulator {
        /// Port to listen on.
        #[arg(long, default_value_t = 8780)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Provisioning and cold-start times of seconds, like the real service, instead of
        /// the fast defaults.
        #[arg(long)]
        realistic: bool,
    },
    /// Prints the effective configuration, secrets redacted; exits 2 when it is invalid.
    CheckConfig,
    /// MLflow integration chores.
    Mlflow {
        #[command(subcommand)]
        action: MlflowAction,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum MlflowAction {
    /// Creates (or updates) the webhook delivering model-version events to the listener,
    /// signed with MLFLOW_WEBHOOK_SECRET, on the server of MLFLOW_TRACKING_URI.
    RegisterWebhook {
        /// The listener's URL (default: http://API_HOST:API_PORT/api/v1/webhooks/mlflow).
        #[arg(long)]
        url: Option<String>,
        /// The webhook's name; a webhook of that name is updated.
        #[arg(long, default_value = commands::mlflow::DEFAULT_NAME)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum MigrateAction {
    /// Applies pending migrations (the default).
    Up,
    /// Reverts the most recent migrations.
    Down {
        /// How many to revert.
        #[arg(short = 'n', long, default_value_t = 1)]
        steps: u32,
    },
    /// Lists migrations and whether each is applied.
    Status,
    /// Drops every table and re-applies all migrations (development only).
    Fresh,
}

#[derive(Debug, Clone, Subcommand)]
enum DlqAction {
    /// Lists dead letters: id, kind, deployment, attempts, last error, when.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter with its payload.
    Show {
        /// The dead letter's id.
        id: String,
    },
    /// Puts dead letters back on the queue with their attempts reset.
    Replay {
        /// Dead-letter ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        /// Only print what would be replayed.
        #[arg(long)]
        dry_run: bool,
        /// Who replays (recorded in the message).
        #[arg(long, env = "USER", default_value = "operator")]
        by: String,
    },
    /// Deletes dead letters for good.
    Purge {
        /// Dead-letter ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Purging on a thread of its own: without it jemalloc purges only when an allocating
    // thread passes by, so an idle process after a load would keep what it freed.
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!(
            "jemalloc's background purging is unavailable ({error}); freed memory returns more slowly"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return commands::fail(commands::Failure::Runtime(error.into())),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Dev { port, data_dir } => commands::dev::run(port, data_dir).await,
            Command::Api => commands::roles::api().await,
            Command::Worker => commands::roles::worker().await,
            Command::Migrate { action } => {
                let action = match action.unwrap_or(MigrateAction::Up) {
                    MigrateAction::Up => commands::migrate::Action::Up,
                    MigrateAction::Down { steps } => commands::migrate::Action::Down(steps),
                    MigrateAction::Status => commands::migrate::Action::Status,
                    MigrateAction::Fresh => commands::migrate::Action::Fresh,
                };
                commands::migrate::run(action, cli.verbose).await
            }
            Command::Dlq { action } => commands::dlq::run(dlq_command(action), cli.verbose).await,
            Command::HfEmulator {
                port,
                host,
                realistic,
            } => commands::hf_emulator::run(&host, port, realistic).await,
            Command::CheckConfig => commands::check_config::run(),
            Command::Mlflow {
                action: MlflowAction::RegisterWebhook { url, name },
            } => commands::mlflow::register_webhook(url, name, cli.verbose).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => commands::fail(failure),
    }
}

fn dlq_command(action: DlqAction) -> worker::dlq::DlqCommand {
    use worker::dlq::DlqCommand;
    match action {
        DlqAction::List { limit, json } => DlqCommand::List { limit, json },
        DlqAction::Show { id } => DlqCommand::Show { id },
        DlqAction::Replay {
            ids,
            all,
            dry_run,
            by,
        } => DlqCommand::Replay {
            ids,
            all,
            dry_run,
            by,
        },
        DlqAction::Purge { ids, all } => DlqCommand::Purge { ids, all },
    }
}
