//! `hokusai-serve dlq …` (README.md, "Commands"): list, show, replay and purge dead-lettered
//! commands on whichever queue backend is configured. The CLI parses arguments into a
//! [`DlqCommand`] and calls [`execute`]; output goes to the writer it passes, a readable
//! table by default and the JSON of docs/design/http-api.md with `--json`.

use std::io::Write;

use shared::config::{QueueBackend, Settings};
use shared::queue::{self, DeadLetter, Queue, QueueOptions, Selection};

/// One `dlq` subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DlqCommand {
    /// `dlq list [--limit N] [--json]`.
    List {
        /// At most this many.
        limit: usize,
        /// Print JSON instead of a table.
        json: bool,
    },
    /// `dlq show ID`.
    Show {
        /// The dead letter.
        id: String,
    },
    /// `dlq replay ID…|--all [--dry-run]`.
    Replay {
        /// These dead letters…
        ids: Vec<String>,
        /// …or all of them.
        all: bool,
        /// Only say what would be replayed.
        dry_run: bool,
        /// Who replays (recorded in the message), e.g. the operator's login.
        by: String,
    },
    /// `dlq purge ID…|--all`.
    Purge {
        /// These dead letters…
        ids: Vec<String>,
        /// …or all of them.
        all: bool,
    },
}

/// Why a `dlq` command failed in a way the CLI reports specially.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Wrong arguments (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Some ids are not dead letters (exit code 1).
    #[error("no dead letter with id {0}")]
    NotFound(String),
}

/// Connects to the configured queue and runs `cmd`, writing to `out`.
pub async fn execute(
    settings: &Settings,
    cmd: DlqCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let db = match settings.queue.backend {
        QueueBackend::Db => Some(shared::db::connect(settings.database_url.expose()).await?),
        QueueBackend::RabbitMq | QueueBackend::Sqs => None,
    };
    let options = QueueOptions::from_settings(&settings.queue);
    let queue = queue::connect(&settings.queue, db.as_ref(), options).await?;
    run(queue.as_ref(), cmd, out).await
}

/// Runs `cmd` against `queue` (what [`execute`] does once connected).
pub async fn run(queue: &dyn Queue, cmd: DlqCommand, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::List { limit, json } => {
            let letters = queue.list(limit).await?;
            if json {
                serde_json::to_writer(&mut *out, &letters)?;
                writeln!(out)?;
            } else {
                write_table(queue.name(), &letters, out)?;
            }
        }
        DlqCommand::Show { id } => {
            let letter = queue.show(&id).await?.ok_or(DlqError::NotFound(id))?;
            write_details(&letter, out)?;
        }
        DlqCommand::Replay {
            ids,
            all,
            dry_run,
            by,
        } => {
            let selection = selection(ids, all)?;
            if dry_run {
                let letters = queue.list(usize::MAX).await?;
                let chosen: Vec<String> = letters
                    .into_iter()
                    .map(|l| l.id)
                    .filter(|id| selection.contains(id))
                    .collect();
                report(out, "would replay", &chosen)?;
                return missing(&selection, &chosen);
            }
            let replayed = queue.replay(&selection, &by).await?;
            report(out, "replayed", &replayed)?;
            missing(&selection, &replayed)?;
        }
        DlqCommand::Purge { ids, all } => {
            let selection = selection(ids, all)?;
            let purged = queue.purge(&selection).await?;
            report(out, "purged", &purged)?;
            missing(&selection, &purged)?;
        }
    }
    Ok(())
}

fn selection(ids: Vec<String>, all: bool) -> Result<Selection, DlqError> {
    match (ids.is_empty(), all) {
        (true, true) => Ok(Selection::All),
        (false, false) => Ok(Selection::Ids(ids)),
        (true, false) => Err(DlqError::Usage("give dead-letter ids or --all".into())),
        (false, true) => Err(DlqError::Usage(
            "give dead-letter ids or --all, not both".into(),
        )),
    }
}

/// Fails with the selected ids that were not acted upon.
fn missing(selection: &Selection, done: &[String]) -> anyhow::Result<()> {
    let Selection::Ids(ids) = selection else {
        return Ok(());
    };
    let missing: Vec<&str> = ids
        .iter()
        .filter(|id| !done.contains(id))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(DlqError::NotFound(missing.join(", ")).into())
}

fn report(out: &mut impl Write, verb: &str, ids: &[String]) -> std::io::Result<()> {
    writeln!(out, "{verb} {} dead letter(s)", ids.len())?;
    for id in ids {
        writeln!(out, "  {id}")?;
    }
    Ok(())
}

fn write_table(queue: &str, letters: &[DeadLetter], out: &mut impl Write) -> std::io::Result<()> {
    if letters.is_empty() {
        return writeln!(out, "no dead letters on {queue}");
    }
    writeln!(
        out,
        "{:<36}  {:<12}  {:<36}  {:>8}  {:<25}  LAST ERROR",
        "ID", "KIND", "DEPLOYMENT", "ATTEMPTS", "DEAD-LETTERED AT"
    )?;
    for l in letters {
        let error: String = l
            .last_error
            .as_deref()
            .unwrap_or("-")
            .chars()
            .take(80)
            .collect();
        writeln!(
            out,
            "{:<36}  {:<12}  {:<36}  {:>8}  {:<25}  {}",
            l.id,
            l.kind.as_deref().unwrap_or("-"),
            l.deployment_id
                .map_or_else(|| "-".into(), |d| d.to_string()),
            l.attempts,
            l.dead_lettered_at
                .map_or_else(|| "-".into(), |t| t.to_rfc3339()),
            error.replace('\n', " "),
        )?;
    }
    Ok(())
}

fn write_details(l: &DeadLetter, out: &mut impl Write) -> std::io::Result<()> {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    writeln!(out, "id:               {}", l.id)?;
    writeln!(out, "queue:            {}", l.queue)?;
    writeln!(out, "kind:             {}", or_dash(l.kind.clone()))?;
    writeln!(
        out,
        "deployment:       {}",
        or_dash(l.deployment_id.map(|d| d.to_string()))
    )?;
    writeln!(out, "attempts:         {}", l.attempts)?;
    writeln!(
        out,
        "dead-lettered at: {}",
        or_dash(l.dead_lettered_at.map(|t| t.to_rfc3339()))
    )?;
    writeln!(out, "last error:       {}", or_dash(l.last_error.clone()))?;
    writeln!(out, "payload:")?;
    match serde_json::from_slice::<serde_json::Value>(&l.body) {
        Ok(json) => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        ),
        Err(_) => writeln!(out, "{}", String::from_utf8_lossy(&l.body)),
    }
}
