//! A [`Plan`]: the writes one step makes, committed in one transaction with what makes its
//! message count as handled — on the embedded queue the deletion of the message itself, on a
//! broker the message's inbox row — so a step is applied exactly once however often its
//! message is delivered, and a follow-up command exists if and only if the change that
//! needs it does (docs/design/queue.md, "Exactly-once steps").

use std::time::Duration;

use chrono::Utc;
use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
use serde_json::Value;
use shared::db::deployments::{self, Changes, Deployment, NewDeployment, Transition};
use shared::db::model_ops::{self, Operation};
use shared::db::one_statement::{self, OneStatement};
use shared::db::outbox::Route;
use shared::db::rollouts::{self, Rollout};
use shared::db::{DbError, inbox, operations, outbox, transitions, writer};
use shared::domain::{DeploymentId, DeploymentStatus, RolloutSpec};
use shared::queue::{DEPLOYMENTS_QUEUE, Delivery, Envelope};
use shared::telemetry::cloudwatch::{self, Metric};
use shared::telemetry::metrics::names;
use uuid::Uuid;

use super::Context;

/// The change a plan makes to its deployment.
#[derive(Debug, Clone)]
enum Change {
    None,
    Transition(Transition),
    Observe(Changes, Option<Value>),
}

/// Writes to commit together.
#[derive(Debug)]
pub struct Plan {
    deployment: Deployment,
    change: Change,
    deactivate: Option<Deployment>,
    events: Vec<(String, String, Option<Value>)>,
    follow_ups: Vec<(Envelope, Option<Duration>)>,
    replacement: Option<Replacement>,
    rollout: Option<RolloutWrite>,
}

/// What a plan writes to the model's rollout (docs/design/rollouts.md).
#[derive(Debug)]
pub enum RolloutWrite {
    /// Starts a rollout of the plan's deployment (the canary) against `stable`.
    Start {
        /// The serving deployment.
        stable: Uuid,
        /// The validated spec.
        spec: RolloutSpec,
    },
    /// Moves the rollout to the step `step`.
    Advance(Rollout, i32),
    /// Ends the rollout (`promoted` or `aborted`), saying why.
    End(Rollout, &'static str, String),
    /// Pauses the rollout until an operator acts, saying why.
    Pause(Rollout, String),
}

/// A new deployment created by the plan (a heal redeploy), with its deploy command.
#[derive(Debug)]
struct Replacement {
    new: NewDeployment,
    command: Envelope,
    message: String,
}

/// The message whose step a plan is, if any: what makes its commit happen once.
#[derive(Debug, Clone, Copy)]
pub enum Once<'a> {
    /// Not a message's step (the reconciler; a dead letter's last state).
    Unguarded,
    /// The step of this delivery.
    Step(&'a Delivery),
}

/// What committing did.
#[derive(Debug)]
pub enum Applied {
    /// Written. `acked`: the same transaction removed the message from the embedded queue
    /// (settle it with `Delivery::acked_within`); otherwise ack it now.
    Committed {
        /// Whether the commit also removed the message.
        acked: bool,
    },
    /// The message was already handled (the inbox had it): nothing written.
    Duplicate,
    /// The delivery's claim on the embedded queue was lost before the commit (its lease
    /// expired and another consumer holds the message): nothing written; that consumer
    /// handles it.
    Lost,
    /// Someone changed the deployment meanwhile (stale lock, a status the machine refuses
    /// now, another active version): nothing written; decide again later.
    Conflict(DbError),
}

impl Plan {
    fn new(deployment: Deployment, change: Change) -> Self {
        Self {
            deployment,
            change,
            deactivate: None,
            events: Vec::new(),
            follow_ups: Vec::new(),
            replacement: None,
            rollout: None,
        }
    }

    /// A status transition.
    pub fn transition(deployment: Deployment, transition: Transition) -> Self {
        Self::new(deployment, Change::Transition(transition))
    }

    /// A provider observation without a status change.
    pub fn observe(deployment: Deployment, changes: Changes, details: Option<Value>) -> Self {
        Self::new(deployment, Change::Observe(changes, details))
    }

    /// No change to the row; events and follow-ups only.
    pub fn events_only(deployment: Deployment) -> Self {
        Self::new(deployment, Change::None)
    }

    /// Also clears `previous`'s active flag (first, so the one-active rule holds).
    pub fn deactivating(mut self, previous: Deployment) -> Self {
        self.deactivate = Some(previous);
        self
    }

    /// Also appends an event.
    pub fn with_event(mut self, kind: &str, message: &str, details: Option<Value>) -> Self {
        self.events
            .push((kind.to_owned(), message.to_owned(), details));
        self
    }

    /// Also publishes `envelope` after `delay` (through the outbox or the embedded queue).
    pub fn then(mut self, envelope: Envelope, delay: Option<Duration>) -> Self {
        self.follow_ups.push((envelope, delay));
        self
    }

    /// Also creates `new` (a `pending` deployment, its `created` event and `command`) in the
    /// same transaction, with a `replaces` event on it saying `message`.
    pub fn creating(mut self, new: NewDeployment, command: Envelope, message: &str) -> Self {
        self.replacement = Some(Replacement {
            new,
            command,
            message: message.to_owned(),
        });
        self
    }

    /// Also writes the model's rollout.
    pub fn with_rollout(mut self, write: RolloutWrite) -> Self {
        self.rollout = Some(write);
        self
    }

    /// Commits everything, as the step of `once`'s message when given: on the embedded
    /// queue (whose table is in this database) the transaction deletes the message under
    /// its claim — no inbox row, no ack after — and elsewhere it inserts the message id into
    /// the inbox.
    pub async fn commit(self, ctx: &Context, once: Once<'_>) -> Result<Applied, DbError> {
        if let Once::Step(delivery) = once
            && self.fits_one_statement(ctx)
        {
            let statement = match ctx.route {
                Route::Direct => delivery.claim_for_commit().map(OneStatement::new),
                Route::Relay => Some(OneStatement::for_message(delivery.envelope().message_id)),
            };
            if let Some(statement) = statement
                && let Some(applied) = self
                    .commit_in_one_statement(ctx, delivery, statement)
                    .await?
            {
                return Ok(applied);
            }
        }
        // SQLite: wait for the process's turn here rather than in SQLite's busy sleeps.
        let _turn = writer::turn(&ctx.db).await;
        let txn = ctx.db.begin().await?;
        let mut acked = false;
        if let Once::Step(delivery) = once {
            let within = match ctx.route {
                Route::Direct => delivery.ack_within(&txn).await?,
                Route::Relay => None,
            };
            match within {
                Some(true) => acked = true,
                Some(false) => return Ok(Applied::Lost),
                None => {
                    if !inbox::claim(&txn, delivery.envelope().message_id).await? {
                        return Ok(Applied::Duplicate);
                    }
                }
            }
        }
        let outcome = match &self.change {
            Change::Transition(t) => Some((t.to, self.deployment.clone())),
            _ => None,
        };
        match self.write(&txn, ctx).await {
            Ok(()) => {}
            Err(error @ (DbError::StaleTransition { .. } | DbError::IllegalTransition { .. })) => {
                return Ok(Applied::Conflict(error));
            }
            Err(error @ (DbError::ActiveConflict(_) | DbError::StaleRollout(_))) => {
                return Ok(Applied::Conflict(error));
            }
            Err(error) => return Err(error),
        }
        txn.commit().await?;
        outbox::committed(ctx.route);
        if let Some((to, deployment)) = outcome {
            record_outcome(to, &deployment);
        }
        Ok(Applied::Committed { acked })
    }

    /// Whether the plan can be committed as one statement (`db::one_statement`: on
    /// PostgreSQL one statement, on SQLite one script in a transaction): a message's step
    /// whose writes are its deployment's change, events and follow-up commands, under the
    /// model's operation lock when it is a model operation — the common steps. Plans that
    /// also deactivate another deployment (two guarded updates: one PostgreSQL statement
    /// cannot undo the first when the second is stale), rollouts, replacements and plans
    /// that change nothing take the transaction.
    fn fits_one_statement(&self, ctx: &Context) -> bool {
        matches!(
            ctx.db.get_database_backend(),
            sea_orm::DatabaseBackend::Postgres | sea_orm::DatabaseBackend::Sqlite
        ) && !matches!(self.change, Change::None)
            && self.deactivate.is_none()
            && self.rollout.is_none()
            && self.replacement.is_none()
    }

    /// [`Plan::commit`] as one statement: the same writes in the same order, with what
    /// makes them the message's step (`statement`: its deletion from the embedded queue, or
    /// its inbox row). `None`: nothing written, commit in a transaction (the model has no
    /// operation row to lock yet).
    async fn commit_in_one_statement(
        &self,
        ctx: &Context,
        delivery: &Delivery,
        statement: OneStatement,
    ) -> Result<Option<Applied>, DbError> {
        let current = &self.deployment;
        let written = |error| DbError::from_write(error, &current.model_id);
        let ran = match ctx.db.get_database_backend() {
            // The script runs in a transaction, committed only when everything was written
            // and rolled back otherwise, in the process's writer turn. `BEGIN IMMEDIATE`
            // takes the file's write lock first, so the rows are stamped once the step
            // writes, as the transaction's are (the MLflow sync's cursor reads the events'
            // times: `db::mlflow::events_after`).
            sea_orm::DatabaseBackend::Sqlite => {
                let _turn = writer::turn(&ctx.db).await;
                let options = TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..TransactionOptions::default()
                };
                let txn = ctx.db.begin_with_options(options).await?;
                let ran = match self.one_statement(ctx, statement) {
                    Ok(statement) => statement.run_in(&txn).await.map_err(written),
                    Err(error) => Err(error),
                };
                match ran {
                    Ok(one_statement::Outcome::Written) => txn
                        .commit()
                        .await
                        .map(|()| one_statement::Outcome::Written)
                        .map_err(written),
                    // Rolled back while the turn is held, so the next writer finds the file
                    // free rather than in SQLite's busy sleeps.
                    ran => {
                        if let Err(error) = txn.rollback().await {
                            tracing::debug!(%error, "rolling back a step's script");
                        }
                        ran
                    }
                }
            }
            _ => match self.one_statement(ctx, statement) {
                Ok(statement) => statement.run(&ctx.db).await.map_err(written),
                Err(error) => Err(error),
            },
        };
        let outcome = match ran {
            Ok(outcome) => outcome,
            Err(error @ (DbError::ActiveConflict(_) | DbError::IllegalTransition { .. })) => {
                return Ok(Some(Applied::Conflict(error)));
            }
            Err(error) => return Err(error),
        };
        match outcome {
            one_statement::Outcome::Written => {}
            one_statement::Outcome::Unlocked => return Ok(None),
            one_statement::Outcome::Lost => return Ok(Some(Applied::Lost)),
            one_statement::Outcome::Handled => return Ok(Some(Applied::Duplicate)),
            // A copy of a broker's message handled at the same moment as this one loses the
            // race on the deployment's row; the inbox then says so (as the transaction's
            // inbox insert, which waits for the other copy, would have).
            one_statement::Outcome::Stale
                if ctx.route == Route::Relay
                    && inbox::handled(&ctx.db, delivery.envelope().message_id).await? =>
            {
                return Ok(Some(Applied::Duplicate));
            }
            one_statement::Outcome::Stale => {
                return Ok(Some(Applied::Conflict(DbError::StaleTransition {
                    id: DeploymentId(current.id),
                    expected: current.lock_version,
                })));
            }
        }
        if ctx.route == Route::Direct {
            for _ in &self.follow_ups {
                outbox::published(DEPLOYMENTS_QUEUE);
            }
        }
        outbox::committed(ctx.route);
        if let Change::Transition(t) = &self.change {
            record_outcome(t.to, current);
        }
        Ok(Some(Applied::Committed {
            acked: ctx.route == Route::Direct,
        }))
    }

    /// The plan's writes as `statement`, stamped now (the change, its event, the plan's
    /// events and follow-up commands, in that order). `IllegalTransition`: the machine
    /// refuses the change from the deployment as read.
    fn one_statement(
        &self,
        ctx: &Context,
        mut statement: OneStatement,
    ) -> Result<OneStatement, DbError> {
        let now = Utc::now();
        let backend = ctx.db.get_database_backend();
        let current = &self.deployment;
        let planned = match self.change.clone() {
            Change::Transition(t) => transitions::plan_transition(current, t, now)?,
            Change::Observe(changes, details) => {
                transitions::plan_observe(current, changes, details, now)
            }
            Change::None => unreachable!("fits_one_statement refuses plans without a change"),
        };
        if self.is_model_operation() {
            statement = statement.locking_model(&current.model_id);
        }
        statement = statement.update(planned.update);
        if let Some(e) = planned.event {
            let row = deployments::event_row(
                backend, current.id, planned.to, e.kind, e.from, &e.message, e.details,
            );
            statement = statement.insert(row);
        }
        for (kind, message, details) in &self.events {
            let row = deployments::event_row(
                backend,
                current.id,
                planned.to,
                kind,
                None,
                message,
                details.clone(),
            );
            statement = statement.insert(row);
        }
        for (envelope, delay) in &self.follow_ups {
            let (queue, delay) = (DEPLOYMENTS_QUEUE, *delay);
            statement = match ctx.route {
                Route::Direct => statement.insert(outbox::direct_row(queue, envelope, delay, now)),
                Route::Relay => statement.insert(outbox::relay_row(queue, envelope, delay, now)),
            };
        }
        Ok(statement)
    }

    /// Whether the plan changes which deployment serves the model (or creates one): such a
    /// plan takes the model's operation lock first (`db::model_ops`).
    fn is_model_operation(&self) -> bool {
        let changes_active = match &self.change {
            Change::Transition(t) => t.changes.is_active.is_some(),
            Change::Observe(c, _) => c.is_active.is_some(),
            Change::None => false,
        };
        changes_active
            || self.deactivate.is_some()
            || self.replacement.is_some()
            || self.rollout.is_some()
    }

    async fn write(self, txn: &sea_orm::DatabaseTransaction, ctx: &Context) -> Result<(), DbError> {
        if self.is_model_operation() {
            model_ops::lock(txn, &self.deployment.model_id, None).await?;
        }
        if let Some(previous) = &self.deactivate {
            let message = format!("replaced by deployment {}", self.deployment.id);
            deployments::set_active(txn, previous, false, &message).await?;
        }
        let row = match self.change {
            // Events and commands decided from a row someone changed since are stale too.
            Change::None => deployments::unchanged(txn, &self.deployment).await?,
            Change::Transition(t) => deployments::transition(txn, &self.deployment, t).await?,
            Change::Observe(changes, details) => {
                deployments::observe(txn, &self.deployment, changes, details).await?
            }
        };
        for (kind, message, details) in self.events {
            deployments::record_event(txn, &row, &kind, None, &message, details).await?;
        }
        for (envelope, delay) in &self.follow_ups {
            outbox::enqueue(txn, ctx.route, DEPLOYMENTS_QUEUE, envelope, *delay).await?;
        }
        match self.rollout {
            None => {}
            Some(RolloutWrite::Start { stable, spec }) => {
                rollouts::create(txn, &row.model_id, stable, row.id, &spec).await?;
            }
            Some(RolloutWrite::Advance(rollout, step)) => {
                rollouts::advance(txn, &rollout, step).await?;
            }
            Some(RolloutWrite::End(rollout, to, outcome)) => {
                rollouts::end(txn, &rollout, to, &outcome).await?;
            }
            Some(RolloutWrite::Pause(rollout, why)) => {
                rollouts::pause(txn, &rollout, &why).await?;
            }
        }
        if let Some(r) = self.replacement {
            // A heal is a newer operation: deploys still provisioning give way to it.
            let model = r.new.model_id.clone();
            let id = r.new.id.0;
            operations::supersede_provisioning(txn, ctx.route, &model, Operation::Heal, id).await?;
            let created = deployments::create(txn, ctx.route, r.new, &r.command).await?;
            let details = serde_json::json!({"replaces": row.id});
            deployments::record_event(txn, &created, "replaces", None, &r.message, Some(details))
                .await?;
        }
        Ok(())
    }
}

/// Metrics of a committed transition that ends a deployment's way to serving:
/// `hokusai_deployment_duration_seconds{outcome}` from the request, and the CloudWatch
/// `DeploymentFailures`.
fn record_outcome(to: DeploymentStatus, deployment: &Deployment) {
    let outcome = match to {
        DeploymentStatus::Deployed => "deployed",
        DeploymentStatus::Failed | DeploymentStatus::RollbackFailed => "failed",
        _ => return,
    };
    // A deployment that served and then lost its endpoint ends `failed` too: a failure, but
    // its lifetime is no deploy duration.
    if deployment.deployed_at.is_none() || to == DeploymentStatus::Deployed {
        let took = (Utc::now() - deployment.created_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!(names::DEPLOYMENT_DURATION, "outcome" => outcome)
            .record(took.as_secs_f64());
    }
    if outcome == "failed" {
        cloudwatch::record(
            Metric::DeploymentFailures,
            &[
                ("ModelId", deployment.model_id.as_str()),
                ("Provider", deployment.provider.as_str()),
            ],
            1.0,
        );
    }
}
