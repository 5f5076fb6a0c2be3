//! Moving a canary rollout on (docs/design/rollouts.md). The reconciler calls [`evaluate`]
//! for every open rollout on each pass; everything it decides is committed as a [`Plan`] under
//! the model's operation lock, the rollout row beside the deployments it changes:
//!
//! - the canary no longer `deployed` (its endpoint was lost, an operator undeployed it) or the
//!   stable version no longer serving (undeployed, rolled back), or a newer deploy of the
//!   model on its way ⇒ the rollout is aborted (the canary rolled back when it still serves);
//! - an operator's `abort` ⇒ aborted; `promote` ⇒ promoted at once;
//! - a step whose bake period is over is judged on the canary's measurements of that step:
//!   over a limit ⇒ **aborted** (`rollout_aborted`, quoting the figures and the limit);
//!   within ⇒ the next step, or promotion at 100 %; too few requests ⇒ the step goes on,
//!   and after `DEPLOY_TIMEOUT_SECONDS` the rollout pauses (`rollout_starved`) until an
//!   operator promotes or aborts it.
//!
//! Aborting takes the existing compensation path: the canary goes `rolling_back` (never
//! active, so never healed) and its endpoint is deleted, ending it `failed`. Promoting makes
//! the canary active and retires the stable version after `RETIRE_AFTER_SECONDS`, as a
//! blue/green activation does.

use chrono::Utc;
use serde_json::{Value, json};
use shared::db::DbError;
use shared::db::deployments::{self, Changes, Deployment, Filter, Transition};
use shared::db::rollouts::{self, Request, Rollout, state};
use shared::domain::rollout::{Figures, Verdict};
use shared::domain::{DeploymentId, DeploymentStatus, ModelId, RolloutSpec};
use shared::queue::{Envelope, MessageKind};

use super::plan::RolloutWrite;
use super::{Context, Plan};

/// What [`evaluate`] decided, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do yet.
    Wait,
    /// The next step began.
    Advanced,
    /// The canary took all traffic.
    Promoted,
    /// Rolled back.
    Aborted,
    /// Paused for too little traffic.
    Starved,
}

impl Decision {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Advanced => "advanced",
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
            Self::Starved => "starved",
        }
    }
}

/// Decides what happens to the open `rollout` now; `None` when nothing is to be written.
pub async fn evaluate(
    ctx: &Context,
    rollout: Rollout,
) -> Result<Option<(Decision, Plan)>, DbError> {
    let spec = rollout.spec()?;
    let Some(canary) = deployments::get(&ctx.db, DeploymentId(rollout.canary_id)).await? else {
        // No row to attach an event to: the rollout alone ends.
        let outcome = "aborted: the canary deployment is gone";
        rollouts::end(&ctx.db, &rollout, state::ABORTED, outcome).await?;
        return Ok(None);
    };
    if canary.status != DeploymentStatus::Deployed {
        let why = format!("the canary deployment is {}", canary.status);
        return Ok(Some(ended_elsewhere(rollout, canary, &why)));
    }
    let stable = deployments::get(&ctx.db, DeploymentId(rollout.stable_id)).await?;
    if !stable
        .as_ref()
        .is_some_and(|s| s.status == DeploymentStatus::Deployed && s.is_active)
    {
        let why = format!(
            "the stable deployment {} no longer serves (undeployed or rolled back)",
            rollout.stable_id
        );
        return Ok(Some(abort(rollout, canary, &why, None)));
    }
    if let Some(newer) = newer_deploy(ctx, &rollout).await? {
        let why = format!("superseded by the newer deployment {newer}");
        return Ok(Some(abort(rollout, canary, &why, None)));
    }
    let step = rollout.step;
    let figures = rollouts::figures(&ctx.db, rollout.id, canary.id, step).await?;
    match rollout.pending_request() {
        Some(Request::Abort) => {
            let why = "aborted by an operator".to_owned();
            return Ok(Some(abort(rollout, canary, &why, Some(&figures))));
        }
        Some(Request::Promote) => {
            let stable = stable.expect("checked above");
            let retire_after = ctx.settings.retire_after;
            let why = "promoted by an operator";
            return Ok(Some(promote(
                rollout,
                canary,
                stable,
                why,
                &figures,
                retire_after,
            )));
        }
        None => {}
    }
    if rollout.state == state::PAUSED {
        return Ok(None);
    }
    let now = Utc::now();
    let in_step = (now - rollout.step_started_at).to_std().unwrap_or_default();
    if in_step < std::time::Duration::from_secs(spec.bake_seconds) {
        return Ok(None);
    }
    Ok(match spec.judge(&figures) {
        Verdict::TooFewRequests if in_step >= ctx.settings.deploy_timeout => {
            Some(starve(rollout, canary, &spec, &figures, in_step))
        }
        Verdict::TooFewRequests => None,
        Verdict::Breached(why) => Some(abort(rollout, canary, &why, Some(&figures))),
        Verdict::Healthy => {
            let next = usize::try_from(step).unwrap_or(0) + 1;
            match spec.steps.get(next) {
                Some(&weight) if weight < 100 => {
                    Some(advance(rollout, canary, next, weight, &figures))
                }
                _ => {
                    let stable = stable.expect("checked above");
                    let retire_after = ctx.settings.retire_after;
                    let why = "every step within its limits";
                    Some(promote(
                        rollout,
                        canary,
                        stable,
                        why,
                        &figures,
                        retire_after,
                    ))
                }
            }
        }
    })
}

/// A deployment of the model requested after the rollout began, still on its way.
async fn newer_deploy(ctx: &Context, rollout: &Rollout) -> Result<Option<uuid::Uuid>, DbError> {
    let Ok(model) = ModelId::parse(&rollout.model_id) else {
        return Ok(None);
    };
    let filter = Filter {
        model_id: Some(model),
        limit: Some(20),
        ..Filter::default()
    };
    let recent = deployments::list(&ctx.db, &filter).await?;
    Ok(recent
        .into_iter()
        .find(|d| {
            d.id != rollout.canary_id
                && d.created_at > rollout.started_at
                && matches!(
                    d.status,
                    DeploymentStatus::Pending | DeploymentStatus::Deploying
                )
        })
        .map(|d| d.id))
}

/// The measured figures as event details.
fn quoted(figures: &Figures, spec_limits: Value) -> Value {
    json!({
        "requests": figures.requests,
        "errors": figures.errors,
        "error_rate": figures.error_rate(),
        "latency_p95_ms_bucket": figures.p95_ms(),
        "limits": spec_limits,
    })
}

fn limits(rollout: &Rollout) -> Value {
    rollout.spec().map_or(Value::Null, |s| {
        json!({"max_error_rate": s.max_error_rate, "max_latency_p95_ms": s.max_latency_p95_ms,
               "min_requests": s.min_requests})
    })
}

/// The canary stopped serving on its own (lost, undeployed): the rollout records the abort
/// beside whatever took it away; the canary's own path ends it.
fn ended_elsewhere(rollout: Rollout, canary: Deployment, why: &str) -> (Decision, Plan) {
    let outcome = format!("rollout aborted: {why}");
    let details = json!({"rollout_id": rollout.id, "reason": why});
    let plan = Plan::events_only(canary)
        .with_event("rollout_aborted", &outcome, Some(details))
        .with_rollout(RolloutWrite::End(rollout, state::ABORTED, outcome));
    (Decision::Aborted, plan)
}

/// All traffic back to stable at once: the canary `rolling_back` with the reason, its
/// endpoint deleted by the compensation.
fn abort(
    rollout: Rollout,
    canary: Deployment,
    why: &str,
    figures: Option<&Figures>,
) -> (Decision, Plan) {
    let reason = format!("rollout aborted: {why}");
    let details = figures.map_or_else(
        || json!({"reason": why}),
        |f| {
            let mut d = quoted(f, limits(&rollout));
            d["reason"] = json!(why);
            d
        },
    );
    let transition = Transition {
        to: DeploymentStatus::RollingBack,
        message: format!(
            "{reason}; all traffic back to deployment {}",
            rollout.stable_id
        ),
        details: Some(json!({"event": "rollout_aborted"})),
        changes: Changes {
            is_active: Some(false),
            error_message: Some(Some(reason.clone())),
            ..Changes::default()
        },
    };
    let compensate = Envelope::new(MessageKind::CheckStatus, DeploymentId(canary.id), json!({}));
    let plan = Plan::transition(canary, transition)
        .then(compensate, None)
        .with_event("rollout_aborted", &reason, Some(details))
        .with_rollout(RolloutWrite::End(rollout, state::ABORTED, reason));
    (Decision::Aborted, plan)
}

/// The canary takes all traffic; the stable version is retired later.
fn promote(
    rollout: Rollout,
    canary: Deployment,
    stable: Deployment,
    why: &str,
    figures: &Figures,
    retire_after: std::time::Duration,
) -> (Decision, Plan) {
    let message = format!("rollout promoted ({why}): now serving all traffic");
    let changes = Changes {
        is_active: Some(true),
        ..Changes::default()
    };
    let retire = Envelope::new(MessageKind::Retire, DeploymentId(stable.id), json!({}));
    let details = quoted(figures, limits(&rollout));
    let plan = Plan::observe(canary, changes, None)
        .deactivating(stable)
        .then(retire, Some(retire_after))
        .with_event("rollout_promoted", &message, Some(details))
        .with_rollout(RolloutWrite::End(rollout, state::PROMOTED, message));
    (Decision::Promoted, plan)
}

fn advance(
    rollout: Rollout,
    canary: Deployment,
    next: usize,
    weight: u8,
    figures: &Figures,
) -> (Decision, Plan) {
    let shadow = rollout.spec().is_ok_and(|s| s.is_shadow());
    let share = if shadow { "a copy of" } else { "" };
    let message = format!(
        "step {} within its limits; the new version now takes {share} {weight}% of the traffic",
        rollout.step + 1
    )
    .replace("  ", " ");
    let details = quoted(figures, limits(&rollout));
    let step = i32::try_from(next).unwrap_or(i32::MAX);
    let plan = Plan::events_only(canary)
        .with_event("rollout_step", &message, Some(details))
        .with_rollout(RolloutWrite::Advance(rollout, step));
    (Decision::Advanced, plan)
}

fn starve(
    rollout: Rollout,
    canary: Deployment,
    spec: &RolloutSpec,
    figures: &Figures,
    waited: std::time::Duration,
) -> (Decision, Plan) {
    let why = format!(
        "{} requests in {} s of this step, fewer than min_requests {} (DEPLOY_TIMEOUT_SECONDS): \
         paused until an operator promotes or aborts it",
        figures.requests,
        waited.as_secs(),
        spec.min_requests
    );
    let details = quoted(figures, limits(&rollout));
    let plan = Plan::events_only(canary)
        .with_event("rollout_starved", &why, Some(details))
        .with_rollout(RolloutWrite::Pause(rollout, why));
    (Decision::Starved, plan)
}
