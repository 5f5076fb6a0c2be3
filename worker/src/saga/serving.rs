//! Observing a serving (`deployed`) deployment at its provider, and what follows when its
//! endpoint is gone, failed, paused or scaled to zero behind our back.
//!
//! The reconciler calls [`observe`] for every `deployed` deployment on each pass (and a
//! `check_status` command on a `deployed` deployment does the same). A lost endpoint moves
//! the deployment to `rolling_back` (not active: predictions stop; not billed: its provider
//! state is recorded) with an event naming what was seen (`endpoint_lost`,
//! `endpoint_failed`, `endpoint_paused`, `endpoint_scaled_to_zero`); the compensation then
//! deletes what is left and ends it `failed`. Under `ON_ENDPOINT_LOST=redeploy` an active
//! deployment is replaced in the same transaction by a new deployment of the same spec
//! (at most `HEAL_ATTEMPTS_PER_HOUR` per model), which takes the traffic when it is ready.
//! A provider **error** (5xx, timeout) is not a lost endpoint: nothing changes.

use chrono::Utc;
use serde_json::json;
use shared::config::OnEndpointLost;
use shared::db::DbError;
use shared::db::deployments::{self, Changes, Deployment, Filter, Transition};
use shared::db::operations;
use shared::domain::{DeploymentId, DeploymentStatus, ModelId};
use shared::provider::{Provider, ProviderError, ProviderState};
use shared::queue::{Envelope, MessageKind};

use super::spec::{endpoint_of, spec_of};
use super::{Context, Plan};

/// What an observation found.
#[derive(Debug)]
pub enum Observation {
    /// The endpoint serves; the plan records a changed provider state, if any.
    Serving(Option<Plan>),
    /// The endpoint is lost (`kind` names how); the plan takes the deployment out of
    /// service, compensates it, and may create its replacement.
    Lost {
        /// `endpoint_lost`, `endpoint_failed`, `endpoint_paused` or
        /// `endpoint_scaled_to_zero`.
        kind: &'static str,
        /// The writes.
        plan: Plan,
    },
    /// The provider did not answer (an error, a timeout): nothing is known, nothing changes.
    Unobserved(String),
}

/// Observes `deployment` (which is `deployed`) at `provider`, waiting at most `timeout`
/// for its answer.
pub async fn observe(
    ctx: &Context,
    deployment: Deployment,
    provider: &dyn Provider,
    timeout: std::time::Duration,
) -> Result<Observation, DbError> {
    let handle = match endpoint_of(&deployment, provider, &ctx.default_instance) {
        Ok(Some(handle)) => handle,
        // An endpoint someone else runs (http provider): nothing of ours to observe.
        Ok(None) => return Ok(Observation::Serving(None)),
        Err(reason) => return Ok(Observation::Unobserved(reason)),
    };
    let min_replica = spec_of(&deployment, &ctx.default_instance)
        .map(|spec| spec.scaling.min_replica)
        .unwrap_or(1);
    let answer = tokio::time::timeout(timeout, provider.get_status(&handle));
    let (kind, state, reason) = match answer.await {
        Err(_) => return Ok(Observation::Unobserved("status call timed out".into())),
        Ok(Err(ProviderError::NotFound { message })) => (
            "endpoint_lost",
            "missing".to_owned(),
            format!("the endpoint is gone at the provider ({message})"),
        ),
        Ok(Err(error)) => return Ok(Observation::Unobserved(error.to_string())),
        Ok(Ok(status)) => {
            let state = status.state.as_str().to_owned();
            let said = status.message.clone().unwrap_or_default();
            match &status.state {
                s if s.is_failed() => (
                    "endpoint_failed",
                    state.clone(),
                    format!("the provider reports the endpoint {state}: {said}"),
                ),
                ProviderState::Paused => (
                    "endpoint_paused",
                    state,
                    "the endpoint was paused at the provider".to_owned(),
                ),
                ProviderState::ScaledToZero if min_replica > 0 => (
                    "endpoint_scaled_to_zero",
                    state,
                    format!(
                        "the endpoint was scaled to zero although min_replica is {min_replica}"
                    ),
                ),
                _ if deployment.provider_status.as_deref() == Some(state.as_str()) => {
                    return Ok(Observation::Serving(None));
                }
                _ => {
                    let changes = Changes {
                        provider_status: Some(state.clone()),
                        ..Changes::default()
                    };
                    let details = json!({"provider_state": state, "message": status.message});
                    let plan = Plan::observe(deployment, changes, Some(details));
                    return Ok(Observation::Serving(Some(plan)));
                }
            }
        }
    };
    let plan = lost(ctx, deployment, kind, &state, &reason).await?;
    Ok(Observation::Lost { kind, plan })
}

/// `deployed → rolling_back` (not active, not billed), the `kind` event, the compensation
/// command, and the replacement when the policy allows one.
async fn lost(
    ctx: &Context,
    deployment: Deployment,
    kind: &str,
    state: &str,
    reason: &str,
) -> Result<Plan, DbError> {
    let transition = Transition {
        to: DeploymentStatus::RollingBack,
        message: format!("{reason}; taking it out of service and deleting what is left"),
        details: Some(json!({"event": kind, "provider_state": state})),
        changes: Changes {
            provider_status: Some(state.to_owned()),
            is_active: Some(false),
            error_message: Some(Some(reason.to_owned())),
            ..Changes::default()
        },
    };
    let compensate = Envelope::new(
        MessageKind::CheckStatus,
        DeploymentId(deployment.id),
        json!({}),
    );
    let plan = Plan::transition(deployment.clone(), transition).then(compensate, None);
    let details = |extra: serde_json::Value| {
        let mut d = json!({"provider_state": state, "was_active": deployment.is_active});
        if let (Some(map), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            map.extend(extra.clone());
        }
        Some(d)
    };
    Ok(match heal(ctx, &deployment).await? {
        Heal::Replace => {
            let new = operations::copy_of(&deployment, "replaces")?;
            let new_id = new.id;
            let command = Envelope::new(MessageKind::Deploy, new_id, json!({}));
            let why = format!("replaces deployment {} ({kind}: {reason})", deployment.id);
            plan.with_event(
                kind,
                &format!("{reason}; replaced by the new deployment {new_id}"),
                details(json!({"replaced_by": new_id})),
            )
            .creating(new, command, &why)
        }
        Heal::Not(why) => plan.with_event(
            kind,
            &format!("{reason}; not replaced: {why}"),
            details(json!({"not_replaced": why})),
        ),
    })
}

enum Heal {
    Replace,
    Not(String),
}

/// Whether a lost deployment gets a replacement (`ON_ENDPOINT_LOST`, the hourly budget).
async fn heal(ctx: &Context, lost: &Deployment) -> Result<Heal, DbError> {
    let settings = &ctx.settings.reconcile;
    if settings.on_endpoint_lost == OnEndpointLost::Fail {
        return Ok(Heal::Not("ON_ENDPOINT_LOST=fail".into()));
    }
    if !lost.is_active {
        return Ok(Heal::Not("it was not serving the model".into()));
    }
    let Ok(model) = ModelId::parse(&lost.model_id) else {
        return Ok(Heal::Not("its model id is not valid".into()));
    };
    let filter = Filter {
        model_id: Some(model),
        limit: Some(1_000),
        ..Filter::default()
    };
    let history = deployments::list(&ctx.db, &filter).await?;
    if let Some(on_its_way) = history.iter().find(|d| {
        d.id != lost.id
            && matches!(
                d.status,
                DeploymentStatus::Pending | DeploymentStatus::Deploying
            )
    }) {
        return Ok(Heal::Not(format!(
            "deployment {} of the model is already on its way",
            on_its_way.id
        )));
    }
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    let heals = history
        .iter()
        .filter(|d| d.created_at > hour_ago)
        .filter(|d| {
            d.metadata
                .as_ref()
                .is_some_and(|m| m.get("replaces").is_some())
        })
        .count();
    let budget = settings.heal_attempts_per_hour as usize;
    if heals >= budget {
        return Ok(Heal::Not(format!(
            "HEAL_ATTEMPTS_PER_HOUR ({budget}) replacements of the model in the last hour"
        )));
    }
    Ok(Heal::Replace)
}
