//! The consumer: takes one command from the queue, runs its saga step, and settles the
//! delivery only after the step's transaction committed (docs/design/queue.md).
//! [`Consumer::try_process_one`] is callable alone, so tests drive the saga step by step;
//! the worker's loop around it is trivial.

use std::sync::Arc;
use std::time::Duration;

use shared::db::inbox;
use shared::db::outbox::Route;
use shared::queue::{Delivery, Queue, QueueError};
use shared::runtime::Shutdown;
use tracing::Instrument;

use crate::saga::{self, Applied, Context, Once, Step};
use shared::db::DbError;

/// What one call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A message was taken and settled.
    Processed,
    /// No message arrived within the wait.
    Empty,
}

/// A consumer of deployment commands.
#[derive(Clone)]
pub struct Consumer {
    queue: Arc<dyn Queue>,
    ctx: Arc<Context>,
    wait: Duration,
}

impl Consumer {
    /// A consumer of `queue` running steps in `ctx`.
    pub fn new(queue: Arc<dyn Queue>, ctx: Arc<Context>) -> Self {
        Self {
            queue,
            ctx,
            wait: Duration::from_millis(500),
        }
    }

    /// How long [`Consumer::try_process_one`] waits for a message.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The database its steps write to.
    pub fn db(&self) -> &sea_orm::DatabaseConnection {
        &self.ctx.db
    }

    /// How often a healthy handler loop beats: one wait for a message plus one step (its
    /// timeout) plus settling it.
    pub fn period(&self) -> Duration {
        self.wait + self.ctx.settings.step_timeout + Duration::from_secs(30)
    }

    /// Takes at most one message and handles it.
    pub async fn try_process_one(&self) -> Result<Outcome, QueueError> {
        self.try_process_one_until(&Shutdown::never()).await
    }

    /// Like [`Consumer::try_process_one`], but waiting for a message ends at `shutdown`
    /// ([`Outcome::Empty`]); a message already received is handled to the end.
    pub async fn try_process_one_until(&self, shutdown: &Shutdown) -> Result<Outcome, QueueError> {
        let received = tokio::select! {
            received = self.queue.receive(self.wait) => received?,
            () = shutdown.wait() => None,
        };
        let Some(delivery) = received else {
            return Ok(Outcome::Empty);
        };
        let envelope = delivery.envelope().clone();
        let span = tracing::info_span!(
            "step",
            kind = envelope.kind.as_str(),
            deployment_id = %envelope.deployment_id,
            message_id = %envelope.message_id,
            attempt = envelope.attempt,
        );
        let mut phases = Phases::start(envelope.kind.as_str());
        let handled = self.handle(delivery, &mut phases).instrument(span).await;
        phases.mark("settle");
        handled?;
        Ok(Outcome::Processed)
    }

    async fn handle(&self, delivery: Delivery, phases: &mut Phases) -> Result<(), QueueError> {
        let envelope = delivery.envelope().clone();
        // On a broker a redelivered message may have been handled already: skip it without
        // asking the provider again. A first delivery is checked by its step's commit
        // instead (the inbox claim); only a relay's double publish could make it a
        // duplicate, and its step then decides from the state the first copy left. On the
        // embedded queue a message whose step committed is gone with it: a redelivery was
        // never handled, and there is no inbox to read (docs/design/queue.md).
        let has_inbox = self.ctx.route == Route::Relay;
        if has_inbox && delivery.deliveries() > 1 {
            let seen = inbox::handled(&self.ctx.db, envelope.message_id).await;
            phases.mark("inbox");
            match seen {
                Ok(true) => {
                    tracing::debug!("duplicate delivery of a handled message; acking");
                    return delivery.ack().await;
                }
                Ok(false) => {}
                Err(error) => return retry_infrastructure(delivery, &error.to_string()).await,
            }
        }
        let step_timeout = self.ctx.settings.step_timeout;
        let decided = tokio::time::timeout(step_timeout, saga::decide(&self.ctx, &envelope)).await;
        phases.mark("decide");
        let step = match decided {
            Ok(Ok(step)) => step,
            Ok(Err(error)) => return retry_db_error(delivery, &error).await,
            Err(_) => {
                let error = format!(
                    "the step took longer than {} s (STEP_TIMEOUT_SECONDS)",
                    step_timeout.as_secs()
                );
                return retry_infrastructure(delivery, &error).await;
            }
        };
        match step {
            Step::Commit(plan) => match phases
                .timed("commit", plan.commit(&self.ctx, Once::Step(&delivery)))
                .await
            {
                Ok(Applied::Committed { acked: true }) => {
                    tracing::info!("step committed with its message's removal");
                    delivery.acked_within();
                    Ok(())
                }
                Ok(Applied::Committed { acked: false }) => {
                    tracing::info!("step committed");
                    delivery.ack().await
                }
                Ok(Applied::Duplicate) => delivery.ack().await,
                Ok(Applied::Lost) => {
                    tracing::info!(
                        "the message's lease passed to another consumer before the step committed; leaving it to that one"
                    );
                    Ok(())
                }
                Ok(Applied::Conflict(error)) => {
                    tracing::info!(%error, "deployment changed concurrently; deciding again shortly");
                    decide_again(delivery, &error.to_string()).await
                }
                Err(error) => retry_db_error(delivery, &error).await,
            },
            Step::Ignore(reason) => {
                tracing::info!(reason, "nothing to do");
                delivery.ack().await
            }
            Step::DeadLetter { plan, reason } => {
                // A copy of a message already handled is acked, not dead-lettered twice.
                if has_inbox {
                    match inbox::handled(&self.ctx.db, envelope.message_id).await {
                        Ok(true) => return delivery.ack().await,
                        Ok(false) => {}
                        Err(error) => {
                            return retry_infrastructure(delivery, &error.to_string()).await;
                        }
                    }
                }
                if let Some(plan) = plan {
                    match plan.commit(&self.ctx, Once::Unguarded).await {
                        Ok(Applied::Committed { .. } | Applied::Duplicate | Applied::Lost) => {}
                        Ok(Applied::Conflict(error)) => {
                            return decide_again(delivery, &error.to_string()).await;
                        }
                        Err(error) => return retry_db_error(delivery, &error).await,
                    }
                }
                tracing::warn!(reason, "dead-lettering the command for an operator");
                delivery.dead_letter(&reason).await
            }
        }
    }
}

/// Where a handler's time goes, per command kind: `hokusai_worker_step_duration_seconds`
/// `{kind, phase}` with phase `inbox` (the duplicate check of a redelivered message), `decide` (reads and provider
/// calls), `commit` (the step's transaction) and `settle` (the queue's ack, retry or dead
/// letter). `scripts/bench pipeline` prints the breakdown from it.
struct Phases {
    kind: &'static str,
    since: std::time::Instant,
}

impl Phases {
    fn start(kind: &'static str) -> Self {
        Self {
            kind,
            since: std::time::Instant::now(),
        }
    }

    /// Records the time since the previous mark as `phase`.
    fn mark(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!(shared::telemetry::metrics::names::WORKER_STEP,
            "kind" => self.kind, "phase" => phase)
        .record(now.duration_since(self.since).as_secs_f64());
        self.since = now;
    }

    /// Runs `work` as `phase` (the time before it is left to the next mark).
    async fn timed<T>(&mut self, phase: &'static str, work: impl Future<Output = T>) -> T {
        self.since = std::time::Instant::now();
        let out = work.await;
        self.mark(phase);
        out
    }
}

/// Someone changed the deployment while the step decided: nothing was written; the same
/// command decides again from the new state after a short backoff. Not the command's
/// fault, so it spends no attempt (the new decision is usually "nothing to do").
async fn decide_again(delivery: Delivery, error: &str) -> Result<(), QueueError> {
    let delay = saga::RETRY.delay(delivery.envelope().postponed) / 4;
    delivery.postpone(delay, error).await
}

/// A database error under the step: an unreachable database is infrastructure (postponed,
/// spending no attempt); any other error (a refused statement) spends one, so a command
/// that keeps failing the same way ends in the dead letters instead of looping.
async fn retry_db_error(delivery: Delivery, error: &DbError) -> Result<(), QueueError> {
    if error.is_unavailable() {
        return retry_infrastructure(delivery, &error.to_string()).await;
    }
    let delay = saga::RETRY.delay(delivery.envelope().attempt);
    tracing::warn!(%error, retry_in = ?delay, "step failed on a database error; retrying");
    delivery
        .retry_later(delay, &error.to_string())
        .await
        .map(drop)
}

/// The database failed under the step, or the step outran `STEP_TIMEOUT_SECONDS`: nothing
/// was written, so the same command runs again after a backoff. Infrastructure spends no
/// attempt: a PostgreSQL failover of minutes must not dead-letter commands; the
/// deployment's deadline (the reconciler) ends work that can never finish.
async fn retry_infrastructure(delivery: Delivery, error: &str) -> Result<(), QueueError> {
    let delay = saga::RETRY.delay(delivery.envelope().postponed);
    tracing::warn!(error, retry_in = ?delay, "step failed on infrastructure; retrying");
    delivery.postpone(delay, error).await
}
