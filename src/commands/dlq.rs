//! `hokusai-serve dlq list|show|replay|purge`: dead letters on whichever queue backend is
//! configured. Wrong arguments exit 2; an unknown id or a broker failure exits 1.

use worker::dlq::{DlqCommand, DlqError};

use super::{Failure, load_verb_settings};

/// Runs one dead-letter operation and prints its result.
pub async fn run(command: DlqCommand, verbose: bool) -> Result<(), Failure> {
    let settings = load_verb_settings(verbose)?;
    let mut out = Vec::new();
    let result = worker::dlq::execute(&settings, command, &mut out).await;
    super::print(&String::from_utf8_lossy(&out));
    match result {
        Ok(()) => Ok(()),
        Err(error) => match error.downcast_ref::<DlqError>() {
            Some(DlqError::Usage(reason)) => Err(Failure::Config(reason.clone())),
            _ => Err(Failure::Runtime(error)),
        },
    }
}
