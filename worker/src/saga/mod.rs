//! The deployment saga: one module per command kind, each deciding from the deployment's
//! current status and the provider's answer what happens next (docs/design/domain.md, queue.md,
//! providers.md).
//!
//! A step makes at most one provider call and returns a [`Step`]: a [`Plan`] to commit
//! (status transition, activation switch, events, follow-up commands — one transaction,
//! together with the message's deletion or inbox row, `plan.rs`), nothing (a duplicate or
//! out-of-order message), or a dead letter for an operator. Retry or not is read from the
//! [`ProviderError`] variant, never from strings. Long waits are follow-up `check_status`
//! commands published with a delay; no step holds a message for long.
//!
//! - [`deploy`]: `pending → deploying`, provider create (idempotent).
//! - [`check_status`]: provisioning → `deployed` and active (blue/green switch), or rollback;
//!   also drives the compensation (`rolling_back → failed | rollback_failed`).
//! - [`undeploy`]: `→ undeploying → stopped`, provider delete.
//! - [`retire`]: undeploys a replaced version after `RETIRE_AFTER_SECONDS`.

mod check_status;
mod deploy;
mod finish;
mod plan;
mod retire;
pub mod rollout;
pub mod serving;
mod spec;
mod undeploy;

pub use finish::delete_and_finish;
pub use spec::endpoint_of;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::DatabaseConnection;
use shared::config::WorkerSettings;
use shared::db::DbError;
use shared::db::deployments::{self, Deployment};
use shared::db::outbox::Route;
use shared::provider::{InstanceSpec, Provider, ProviderError, ProviderRegistry};
use shared::queue::{Envelope, MessageKind};
use shared::runtime::Backoff;

pub use plan::{Applied, Once, Plan, RolloutWrite};

/// What a step needs: the database, the providers and the timing rules.
pub struct Context {
    /// The application database.
    pub db: DatabaseConnection,
    /// Configured providers.
    pub providers: Arc<ProviderRegistry>,
    /// Where follow-up commands are written (outbox or the embedded queue).
    pub route: Route,
    /// Timeouts and poll intervals.
    pub settings: WorkerSettings,
    /// `QUEUE_MAX_ATTEMPTS`: also bounds retries that no deadline ends (the clean-up of an
    /// endpoint created after its deployment finished).
    pub max_attempts: u32,
    /// Hardware used when a deployment row leaves it out.
    pub default_instance: InstanceSpec,
}

/// What a step decided.
#[derive(Debug)]
pub enum Step {
    /// Commit the plan together with what marks the message handled (its deletion from the
    /// embedded queue, or its inbox row on a broker, then an ack).
    Commit(Plan),
    /// Nothing to do (a duplicate, stale or out-of-order message): ack.
    Ignore(String),
    /// Give up on the message: commit `plan` if any, then dead-letter it with `reason`.
    DeadLetter {
        /// State to record first (e.g. `rollback_failed`).
        plan: Option<Plan>,
        /// Why, for the operator.
        reason: String,
    },
}

/// Decides what `envelope` means for its deployment now.
pub async fn decide(ctx: &Context, envelope: &Envelope) -> Result<Step, DbError> {
    // One read: the deployment and its model's serving deployment (what activation replaces).
    let Some((deployment, active)) =
        deployments::get_with_active(&ctx.db, envelope.deployment_id).await?
    else {
        return Ok(Step::DeadLetter {
            plan: None,
            reason: format!("deployment {} does not exist", envelope.deployment_id),
        });
    };
    let provider = match ctx.providers.get(&deployment.provider) {
        Ok(provider) => provider,
        Err(error) => {
            return Ok(Step::DeadLetter {
                plan: None,
                reason: format!("{error}"),
            });
        }
    };
    let step = StepInput {
        ctx,
        envelope,
        deployment,
        active,
        provider,
    };
    Ok(match envelope.kind {
        MessageKind::Deploy => deploy::decide(step).await,
        MessageKind::CheckStatus => check_status::decide(step).await,
        MessageKind::Undeploy => undeploy::decide(step).await,
        MessageKind::Retire => retire::decide(step).await,
    })
}

/// Everything a step looks at.
pub(crate) struct StepInput<'a> {
    pub ctx: &'a Context,
    pub envelope: &'a Envelope,
    pub deployment: Deployment,
    /// The deployment serving the model when the step began (possibly `deployment`).
    pub active: Option<Deployment>,
    pub provider: Arc<dyn Provider>,
}

impl StepInput<'_> {
    /// The same command again later, recording the provider error in the event log.
    ///
    /// A retryable provider error (429, 5xx, timeout) is infrastructure, not the command's
    /// fault: it spends no attempt of `QUEUE_MAX_ATTEMPTS` and is retried with backoff for
    /// as long as it lasts. The deployment's deadline ends the work: past it, the
    /// reconciler moves the deployment on and this command finds it changed.
    pub fn retry(self, error: &ProviderError) -> Step {
        let delay = RETRY.delay_after(self.envelope.postponed, error.retry_after());
        let details = serde_json::json!({
            "error": error.message(), "error_kind": error.kind(),
            "postponed": self.envelope.postponed + 1, "retry_in_seconds": delay.as_secs_f64(),
        });
        let message = format!("{} failed, retrying: {error}", self.envelope.kind.as_str());
        Step::Commit(
            Plan::events_only(self.deployment)
                .with_event("provider_error", &message, Some(details))
                .then(self.envelope.postpone(), Some(delay)),
        )
    }
}

/// The worker's retries of a command failing on infrastructure: 1 s doubling up to 30 s, with
/// equal jitter so that many commands failing at once do not come back at once; a
/// provider's own `Retry-After` wins ([`Backoff::delay_after`]).
pub const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
