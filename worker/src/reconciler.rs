//! The reconciler: the level-triggered half of the control plane (docs/architecture.md,
//! "The reconciler").
//!
//! The saga acts when a message arrives; a message can be lost, dead-lettered or held up,
//! and an endpoint can change behind our back. The reconciler periodically compares what
//! the database says should be with what is, and repairs the difference. One worker runs
//! it at a time, holding the leader lease `reconciler` in the database (`LEADER_LEASE_SECONDS`,
//! judged by the database's clock, renewed while a pass runs; a pass is abandoned the
//! moment the lease is lost). Each pass, every `DEPLOYMENT_RECONCILE_INTERVAL_SECONDS`:
//!
//! - every `deployed` deployment is observed at its provider ([`saga::serving::observe`]);
//!   a lost, failed, paused or wrongly scaled-to-zero endpoint is taken out of service and
//!   compensated, and replaced under `ON_ENDPOINT_LOST=redeploy`;
//! - every `pending` or `deploying` deployment with no state transition for
//!   `DEPLOY_TIMEOUT_SECONDS` gets a `timed_out` event and goes to `rolling_back`;
//! - every `undeploying` or `rolling_back` deployment past that deadline has its endpoint
//!   deleted by the pass itself (retried on every pass while the provider fails), then ends
//!   `stopped` or `failed`;
//! - every unfinished deployment without activity for `COMMAND_STALL_SECONDS` and with no
//!   command the database knows of (and, on a broker, while the broker holds none) has its
//!   command reissued (`command_reissued`, at most
//!   [`MAX_REISSUES`] times; then the deadline decides);
//! - every open canary rollout is moved on ([`saga::rollout`]): its baked step judged, the
//!   next step taken, the canary promoted or rolled back, an operator's request carried out;
//! - endpoints at the provider whose names carry our prefix and that belong to no
//!   unfinished deployment are deleted once older than `ORPHAN_GRACE_SECONDS`
//!   (`ORPHAN_SWEEP=report`: only logged and counted).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::json;
use shared::config::OrphanSweep;
use shared::db::deployments::{self, Changes, Deployment, Transition};
use shared::db::{DbError, lease, outbox, rollouts};
use shared::domain::{DeploymentId, DeploymentStatus};
use shared::provider::{EndpointHandle, Provider, ProviderError};
use shared::queue::{Envelope, MessageKind, Queue};
use shared::runtime::{Heartbeat, Shutdown};
use shared::telemetry::metrics::names;
use tokio::sync::Mutex;
use tokio::time::Instant;
use uuid::Uuid;

use crate::saga::serving::{self, Observation};
use crate::saga::{self, Applied, Context, Once, Plan};

/// The lease's name in `leader_leases`.
pub const LEASE: &str = "reconciler";
/// The prefix of every endpoint name hokusai-serve gives (`hk-{model}-{short id}`).
pub const ENDPOINT_PREFIX: &str = "hk-";
/// Commands reissued per deployment before only its deadline can move it on.
pub const MAX_REISSUES: u64 = 3;
/// Provider observations one pass runs at once.
const OBSERVE_CONCURRENCY: usize = 8;
/// Unfinished deployments one pass looks at (oldest first).
const WORKING_SET: u64 = 10_000;

/// The reconciler of one worker process; it acts only while it holds the lease.
pub struct Reconciler {
    ctx: Arc<Context>,
    /// The command queue (its depth tells whether a broker still holds commands).
    queue: Arc<dyn Queue>,
    holder: String,
    /// Whether this process holds the lease (asked by the other leader-only loops).
    leadership: lease::Leadership,
    /// When the sweep first saw an endpoint the provider gives no creation time for.
    first_seen: Mutex<HashMap<String, Instant>>,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// `deployed` deployments observed.
    pub observed: usize,
    /// Deployments whose endpoint was found lost (and taken out of service).
    pub lost: usize,
    /// Deployments that timed out.
    pub timed_out: usize,
    /// Rollout decisions committed (a step, a promotion, an abort, a pause).
    pub rollout_decisions: usize,
    /// Deletes of timed-out `undeploying` / `rolling_back` deployments that completed.
    pub finished: usize,
    /// Commands reissued.
    pub reissued: usize,
    /// Orphaned endpoints found / deleted.
    pub orphans_found: usize,
    /// Orphaned endpoints deleted.
    pub orphans_deleted: usize,
}

impl Reconciler {
    /// A reconciler over the saga's context, identified by a fresh holder id.
    pub fn new(ctx: Arc<Context>, queue: Arc<dyn Queue>) -> Self {
        let holder = format!("worker-{}-{}", std::process::id(), Uuid::new_v4().simple());
        Self {
            ctx,
            queue,
            holder,
            leadership: lease::Leadership::default(),
            first_seen: Mutex::new(HashMap::new()),
        }
    }

    /// This process's holder id in `leader_leases`.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this process leads (the MLflow status sync, the cost gauges and retention run
    /// only where this is true).
    pub fn leadership(&self) -> &lease::Leadership {
        &self.leadership
    }

    /// Takes or renews the lease; whether this process leads now.
    pub async fn hold_lease(&self) -> bool {
        self.hold_lease_until().await.is_some()
    }

    /// Takes or renews the lease; while this process leads, the instant its lease surely
    /// still runs until by its own clock: the TTL counted from *before* the statement was
    /// sent, less a tenth for clock rate differences.
    async fn hold_lease_until(&self) -> Option<Instant> {
        let ttl = self.ctx.settings.reconcile.leader_lease;
        let sent = Instant::now();
        let until = match lease::try_hold(&self.ctx.db, LEASE, &self.holder, ttl).await {
            Ok(token) => token.map(|_| sent + ttl - ttl / 10),
            Err(error) => {
                tracing::warn!(%error, "cannot reach the leader lease; not leading");
                None
            }
        };
        self.leadership.hold_until(until);
        until
    }

    /// How often [`Reconciler::run`] beats: each lease renewal.
    pub fn period(&self) -> Duration {
        let settings = &self.ctx.settings.reconcile;
        settings
            .interval
            .min((settings.leader_lease / 3).max(Duration::from_millis(200)))
    }

    /// Leads when it can, running a pass every interval, until `shutdown`; then gives the
    /// lease up. Beats `heartbeat` at every lease renewal.
    pub async fn run(self: Arc<Self>, heartbeat: Heartbeat, shutdown: Shutdown) {
        let settings = self.ctx.settings.reconcile.clone();
        let renew_every = (settings.leader_lease / 3).max(Duration::from_millis(200));
        let tick = settings.interval.min(renew_every);
        let leader_gauge = metrics::gauge!(names::LEADER);
        let mut leading = false;
        let mut last_pass: Option<Instant> = None;
        while !shutdown.is_triggered() {
            heartbeat.beat();
            let now_leading = self.hold_lease().await;
            if now_leading != leading {
                if now_leading {
                    tracing::info!(holder = %self.holder, "reconciler: leading");
                } else {
                    tracing::warn!(holder = %self.holder, "reconciler: lease lost or held by another worker");
                }
                leading = now_leading;
            }
            leader_gauge.set(if leading { 1.0 } else { 0.0 });
            if leading && last_pass.is_none_or(|at| at.elapsed() >= settings.interval) {
                last_pass = Some(Instant::now());
                match self.pass_while_leading(renew_every, &heartbeat).await {
                    Some(Ok(report)) => {
                        metrics::counter!(names::RECONCILE_PASSES, "outcome" => "ok").increment(1);
                        tracing::debug!(?report, "reconcile pass done");
                    }
                    Some(Err(error)) => {
                        metrics::counter!(names::RECONCILE_PASSES, "outcome" => "failed")
                            .increment(1);
                        tracing::warn!(%error, "reconcile pass failed; the next one retries");
                    }
                    None => {
                        leading = false;
                        self.leadership.hold_until(None);
                        leader_gauge.set(0.0);
                        tracing::warn!("reconcile pass abandoned: the lease was lost");
                    }
                }
            }
            shutdown.sleep(tick).await;
        }
        self.leadership.hold_until(None);
        if leading && let Err(error) = lease::release(&self.ctx.db, LEASE, &self.holder).await {
            tracing::warn!(%error, "could not release the leader lease; it expires by itself");
        }
        leader_gauge.set(0.0);
    }

    /// One pass, renewing the lease every `renew_every` while it runs; `None` when the
    /// lease was lost meanwhile (the pass is dropped where it stood: every write is a
    /// guarded transaction, so nothing is half-done).
    async fn pass_while_leading(
        &self,
        renew_every: Duration,
        heartbeat: &Heartbeat,
    ) -> Option<Result<PassReport, DbError>> {
        let mut valid_until = self.hold_lease_until().await?;
        let pass = self.pass();
        tokio::pin!(pass);
        loop {
            tokio::select! {
                result = &mut pass => return Some(result),
                _ = tokio::time::sleep(renew_every) => {
                    valid_until = self.hold_lease_until().await?;
                    heartbeat.beat();
                }
                // A renewal that did not come back in time (a stalled process, a slow
                // database): stop before another worker may take over.
                _ = tokio::time::sleep_until(valid_until) => return None,
            }
        }
    }

    /// One reconciliation pass over every unfinished deployment and every provider.
    pub async fn pass(&self) -> Result<PassReport, DbError> {
        let ctx = &self.ctx;
        let mut report = PassReport::default();
        let live = deployments::list_live(&ctx.db, WORKING_SET).await?;
        let ids: Vec<Uuid> = live.iter().map(|d| d.id).collect();
        let transitions = deployments::last_event_at(&ctx.db, &ids, Some("transition")).await?;
        let activity = deployments::last_event_at(&ctx.db, &ids, None).await?;
        let commands = outbox::deployments_with_commands(&ctx.db, ctx.route, 100_000).await?;
        let now = Utc::now();
        let deadline = ctx.settings.deploy_timeout;
        let stall = ctx.settings.reconcile.command_stall;
        // First what the database alone decides (deadlines, lost commands), so a provider
        // that answers slowly or not at all cannot hold it up; then the observations and
        // the sweep, each provider call bounded by `probe_timeout`.
        let mut serving = Vec::new();
        let mut overdue_deletes = Vec::new();
        // On a broker, a command already handed over is invisible here: while the broker
        // holds messages, a quiet deployment may simply be waiting its turn.
        let broker_busy = ctx.route == outbox::Route::Relay
            && self
                .queue
                .depth()
                .await
                .map(|d| d.pending > 0)
                .unwrap_or(true);
        for deployment in &live {
            let since = |at: Option<&chrono::DateTime<Utc>>| {
                let at = at.copied().unwrap_or(deployment.created_at);
                (now - at).to_std().unwrap_or_default()
            };
            let progress = since(transitions.get(&deployment.id));
            let last_activity = activity
                .get(&deployment.id)
                .copied()
                .unwrap_or(deployment.created_at)
                .max(deployment.updated_at);
            let idle = since(Some(&last_activity));
            let outcome = match deployment.status {
                DeploymentStatus::Deployed => {
                    serving.push(deployment.clone());
                    Ok(())
                }
                DeploymentStatus::Pending | DeploymentStatus::Deploying if progress >= deadline => {
                    self.time_out(deployment.clone(), progress, &mut report)
                        .await
                }
                DeploymentStatus::Undeploying | DeploymentStatus::RollingBack
                    if progress >= deadline =>
                {
                    overdue_deletes.push(deployment.clone());
                    Ok(())
                }
                _ if idle >= stall && !commands.contains(&deployment.id) && !broker_busy => {
                    self.reissue(deployment.clone(), idle, &mut report).await
                }
                _ => Ok(()),
            };
            check(deployment, outcome)?;
        }
        self.rollouts(&mut report).await?;
        // Observations run a few at a time, beside the sweep: a provider that hangs costs
        // one probe timeout per pass, not one per deployment.
        let probes = serving
            .into_iter()
            .map(|d| (true, d))
            .chain(overdue_deletes.into_iter().map(|d| (false, d)));
        let observations = futures_util::stream::iter(probes)
            .map(|(serving, deployment)| async move {
                let mut found = PassReport::default();
                let outcome = if serving {
                    found.observed += 1;
                    self.observe(deployment.clone(), &mut found).await
                } else {
                    self.finish_delete(deployment.clone(), &mut found).await
                };
                check(&deployment, outcome).map(|()| found)
            })
            .buffer_unordered(OBSERVE_CONCURRENCY)
            .collect::<Vec<_>>();
        let mut swept = PassReport::default();
        let (observed, sweep) = tokio::join!(observations, self.sweep_orphans(&mut swept));
        for found in observed {
            let found = found?;
            report.observed += found.observed;
            report.lost += found.lost;
            report.finished += found.finished;
        }
        sweep?;
        report.orphans_found = swept.orphans_found;
        report.orphans_deleted = swept.orphans_deleted;
        Ok(report)
    }

    /// Moves every open rollout on ([`saga::rollout::evaluate`]); a decision that meets a
    /// concurrent change is taken again on the next pass.
    async fn rollouts(&self, report: &mut PassReport) -> Result<(), DbError> {
        for rollout in rollouts::open(&self.ctx.db, WORKING_SET).await? {
            let id = rollout.id;
            let decided = match saga::rollout::evaluate(&self.ctx, rollout).await {
                Ok(Some((decision, plan))) => {
                    self.commit(plan).await.map(|done| done.then_some(decision))
                }
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            };
            match decided {
                Ok(Some(decision)) => {
                    report.rollout_decisions += 1;
                    metrics::counter!(names::ROLLOUT_DECISIONS, "decision" => decision.as_str())
                        .increment(1);
                    tracing::info!(rollout_id = %id, decision = decision.as_str(), "rollout decision");
                }
                Ok(None) => {}
                Err(error) if error.is_unavailable() => return Err(error),
                Err(error) => {
                    tracing::warn!(rollout_id = %id, %error, "reconcile: rollout not moved on; next pass retries");
                }
            }
        }
        Ok(())
    }

    /// How long one provider call of a pass may take: `STEP_TIMEOUT_SECONDS`, but no more
    /// than the interval (at least 10 s), so that a provider that hangs or keeps failing
    /// (its client retries 5xx for tens of seconds) delays the next pass's deadlines by
    /// little.
    fn probe_timeout(&self) -> Duration {
        let settings = &self.ctx.settings;
        settings
            .step_timeout
            .min(settings.reconcile.interval.max(Duration::from_secs(10)))
    }

    fn provider(&self, deployment: &Deployment) -> Option<Arc<dyn Provider>> {
        self.ctx.providers.get(&deployment.provider).ok()
    }

    async fn commit(&self, plan: Plan) -> Result<bool, DbError> {
        Ok(matches!(
            plan.commit(&self.ctx, Once::Unguarded).await?,
            Applied::Committed { .. }
        ))
    }

    async fn observe(
        &self,
        deployment: Deployment,
        report: &mut PassReport,
    ) -> Result<(), DbError> {
        let Some(provider) = self.provider(&deployment) else {
            return Ok(());
        };
        let id = deployment.id;
        match serving::observe(
            &self.ctx,
            deployment,
            provider.as_ref(),
            self.probe_timeout(),
        )
        .await?
        {
            Observation::Serving(None) => {}
            Observation::Serving(Some(plan)) => {
                self.commit(plan).await?;
            }
            Observation::Lost { kind, plan } => {
                if self.commit(plan).await? {
                    report.lost += 1;
                    action(kind);
                    tracing::warn!(deployment_id = %id, event = kind, "reconcile: endpoint lost; taken out of service");
                }
            }
            Observation::Unobserved(why) => {
                action("observe_failed");
                tracing::info!(deployment_id = %id, why, "reconcile: provider did not answer; nothing changed");
            }
        }
        Ok(())
    }

    /// `pending | deploying → rolling_back` with a `timed_out` event.
    async fn time_out(
        &self,
        deployment: Deployment,
        progress: Duration,
        report: &mut PassReport,
    ) -> Result<(), DbError> {
        let secs = progress.as_secs();
        let reason = format!(
            "timed out: no progress for {secs} s in {} (DEPLOY_TIMEOUT_SECONDS is {})",
            deployment.status,
            self.ctx.settings.deploy_timeout.as_secs()
        );
        let id = deployment.id;
        let transition = Transition {
            to: DeploymentStatus::RollingBack,
            message: format!("{reason}; compensating"),
            details: Some(json!({"error": reason})),
            changes: Changes {
                error_message: Some(Some(reason.clone())),
                is_active: Some(false),
                ..Changes::default()
            },
        };
        let compensate = Envelope::new(MessageKind::CheckStatus, DeploymentId(id), json!({}));
        let plan = Plan::transition(deployment, transition)
            .with_event(
                "timed_out",
                &reason,
                Some(json!({"seconds_without_progress": secs})),
            )
            .then(compensate, None);
        if self.commit(plan).await? {
            report.timed_out += 1;
            action("timed_out");
            tracing::warn!(deployment_id = %id, reason, "reconcile: deployment timed out");
        }
        Ok(())
    }

    /// Deletes the endpoint of an `undeploying` / `rolling_back` deployment past its
    /// deadline, then ends it `stopped` / `failed`; a provider failure leaves it for the
    /// next pass.
    async fn finish_delete(
        &self,
        deployment: Deployment,
        report: &mut PassReport,
    ) -> Result<(), DbError> {
        let Some(provider) = self.provider(&deployment) else {
            return Ok(());
        };
        let id = deployment.id;
        let instance = &self.ctx.default_instance;
        let delete = saga::delete_and_finish(deployment, provider.as_ref(), instance);
        let plan = match tokio::time::timeout(self.probe_timeout(), delete).await {
            Ok(Ok(plan)) => plan,
            Ok(Err(error)) => {
                action("delete_failed");
                tracing::warn!(deployment_id = %id, %error, "reconcile: endpoint delete failed; next pass retries");
                return Ok(());
            }
            Err(_) => {
                action("delete_failed");
                return Ok(());
            }
        };
        if self.commit(plan).await? {
            report.finished += 1;
            action("delete_finished");
        }
        Ok(())
    }

    /// Reissues the command that moves `deployment` on, when it has had none for too long.
    async fn reissue(
        &self,
        deployment: Deployment,
        idle: Duration,
        report: &mut PassReport,
    ) -> Result<(), DbError> {
        let id = DeploymentId(deployment.id);
        let reissued = deployments::count_events(&self.ctx.db, id, "command_reissued").await?;
        if reissued >= MAX_REISSUES {
            return Ok(());
        }
        let kind = match deployment.status {
            DeploymentStatus::Pending => MessageKind::Deploy,
            DeploymentStatus::Undeploying => MessageKind::Undeploy,
            DeploymentStatus::Deploying | DeploymentStatus::RollingBack => MessageKind::CheckStatus,
            _ => return Ok(()),
        };
        let command = Envelope::new(kind, id, json!({}));
        let message = format!(
            "no activity for {} s and no {} command queued; reissued ({} of {MAX_REISSUES})",
            idle.as_secs(),
            kind.as_str(),
            reissued + 1
        );
        let details = json!({"kind": kind.as_str(), "message_id": command.message_id, "reissue": reissued + 1});
        let plan = Plan::events_only(deployment)
            .with_event("command_reissued", &message, Some(details))
            .then(command, None);
        if self.commit(plan).await? {
            report.reissued += 1;
            action("command_reissued");
            tracing::warn!(deployment_id = %id, message, "reconcile: command reissued");
        }
        Ok(())
    }

    /// Deletes (or reports) provider endpoints with our prefix that no unfinished deployment
    /// owns, once older than `ORPHAN_GRACE_SECONDS`.
    async fn sweep_orphans(&self, report: &mut PassReport) -> Result<(), DbError> {
        let settings = &self.ctx.settings.reconcile;
        let mut seen_now = HashSet::new();
        for name in self.ctx.providers.names() {
            let Ok(provider) = self.ctx.providers.get(name) else {
                continue;
            };
            // The listing first, the owners after: every endpoint listed was requested by a
            // deployment whose row committed before, so it is among the owners read now
            // unless it is finished (and then the endpoint is indeed an orphan).
            let listed = match tokio::time::timeout(self.probe_timeout(), provider.list_endpoints())
                .await
            {
                Ok(Ok(listed)) => listed,
                Ok(Err(error)) => {
                    action("list_failed");
                    tracing::info!(provider = name, %error, "reconcile: cannot list endpoints; sweep skipped");
                    continue;
                }
                Err(_) => {
                    action("list_failed");
                    continue;
                }
            };
            let live = deployments::list_live(&self.ctx.db, WORKING_SET).await?;
            if live.len() as u64 >= WORKING_SET {
                tracing::warn!(
                    limit = WORKING_SET,
                    "reconcile: too many unfinished deployments to know every owner; sweep skipped"
                );
                return Ok(());
            }
            let owned: HashSet<String> = live
                .iter()
                .filter(|d| d.provider == name)
                .filter_map(|d| {
                    saga::endpoint_of(d, provider.as_ref(), &self.ctx.default_instance)
                        .ok()
                        .flatten()
                })
                .map(|h| h.provider_model_id)
                .collect();
            for endpoint in listed {
                if !endpoint.name.starts_with(ENDPOINT_PREFIX) || owned.contains(&endpoint.name) {
                    continue;
                }
                seen_now.insert(endpoint.name.clone());
                let age = match endpoint.created_at {
                    Some(at) => (Utc::now() - at).to_std().unwrap_or_default(),
                    None => {
                        let mut first = self.first_seen.lock().await;
                        first
                            .entry(endpoint.name.clone())
                            .or_insert_with(Instant::now)
                            .elapsed()
                    }
                };
                if age < settings.orphan_grace {
                    continue;
                }
                report.orphans_found += 1;
                metrics::counter!(names::ORPHANS_FOUND).increment(1);
                let owner =
                    deployments::find_by_endpoint(&self.ctx.db, name, &endpoint.name).await?;
                if settings.orphan_sweep == OrphanSweep::Report {
                    tracing::warn!(endpoint = endpoint.name, provider = name, age_s = age.as_secs(), owner = ?owner.as_ref().map(|d| d.id), "reconcile: orphaned endpoint (ORPHAN_SWEEP=report: not deleted)");
                    continue;
                }
                let handle = EndpointHandle::new(&endpoint.name, None);
                match tokio::time::timeout(self.probe_timeout(), provider.undeploy(&handle)).await {
                    Ok(Ok(()) | Err(ProviderError::NotFound { .. })) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(endpoint = endpoint.name, %error, "reconcile: orphan delete failed; next pass retries");
                        continue;
                    }
                    Err(_) => continue,
                }
                report.orphans_deleted += 1;
                metrics::counter!(names::ORPHANS_DELETED).increment(1);
                tracing::warn!(endpoint = endpoint.name, provider = name, age_s = age.as_secs(), state = endpoint.state.as_str(), owner = ?owner.as_ref().map(|d| d.id), "reconcile: orphaned endpoint deleted");
                if let Some(owner) = owner {
                    let message = format!(
                        "orphaned endpoint {} deleted ({} s old, deployment {})",
                        endpoint.name,
                        age.as_secs(),
                        owner.status
                    );
                    let details = json!({"endpoint": endpoint.name, "provider_state": endpoint.state.as_str()});
                    deployments::record_event(
                        &self.ctx.db,
                        &owner,
                        "orphan_deleted",
                        Some(owner.status),
                        &message,
                        Some(details),
                    )
                    .await?;
                }
            }
        }
        self.first_seen
            .lock()
            .await
            .retain(|name, _| seen_now.contains(name));
        Ok(())
    }
}

/// A repair that failed is retried by the next pass; an unreachable database ends this one.
fn check(deployment: &Deployment, outcome: Result<(), DbError>) -> Result<(), DbError> {
    match outcome {
        Err(error) if error.is_unavailable() => Err(error),
        Err(error) => {
            tracing::warn!(deployment_id = %deployment.id, %error, "reconcile: could not repair; next pass retries");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

fn action(kind: &'static str) {
    metrics::counter!(names::RECONCILE_ACTIONS, "action" => kind).increment(1);
}
