//! The routing cache of the predict path: which deployment serves a model, kept in memory
//! for a short TTL so a warm prediction makes no database query. A miss (or an expired
//! entry) reads the active deployment once; "no active deployment" is cached too, so
//! unknown models cannot turn traffic into database load. A deploy, rollback or undeploy
//! is visible within the TTL.
//!
//! A route in use is refreshed ahead of its expiry: the first request past half the TTL
//! starts one background read (at most one per entry at a time) and is answered from the
//! entry, which stays valid until its TTL. A model that sees a request at least every half
//! TTL therefore never makes a prediction wait for the database, however light its traffic.
//!
//! While a canary rollout is open the active route carries the canary and its weight
//! ([`RolloutRoute`]); [`ActiveRoute::pick`] chooses per request. A step, a promotion or an
//! abort is visible within the TTL like any other change.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use shared::db::DbError;
use shared::db::deployments::{self, Deployment, NotServing};
use shared::db::rollouts;
use shared::domain::{DeploymentId, DeploymentStatus, ModelId};
use shared::provider::EndpointHandle;
use shared::telemetry::metrics::names;
use uuid::Uuid;

/// Where predictions for a model go.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRoute {
    /// The model.
    pub model_id: ModelId,
    /// The serving deployment.
    pub deployment_id: Uuid,
    /// Its MLflow version.
    pub model_version: Option<String>,
    /// Its provider's registry name.
    pub provider: String,
    /// How the provider finds the endpoint.
    pub handle: EndpointHandle,
    /// The model's task (shapes some request bodies).
    pub task: Option<String>,
    /// The model's predict series, registered once per route rather than looked up by
    /// label on every prediction.
    pub series: PredictSeries,
    /// On the stable route while a canary rollout is open: the canary and its share.
    pub rollout: Option<RolloutRoute>,
}

/// The canary side of an open rollout (docs/design/rollouts.md).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRoute {
    /// The rollout.
    pub rollout_id: Uuid,
    /// Its current step (measurements are kept per step).
    pub step: i32,
    /// The canary's share of requests, in percent.
    pub weight: u8,
    /// A shadow rollout: the share is a copy of requests ([`ActiveRoute::mirror`]).
    pub shadow: bool,
    /// Where the canary's share goes.
    pub canary: Arc<ActiveRoute>,
}

/// How [`ActiveRoute::pick`] chooses the side of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    /// A draw per request.
    Random,
    /// By a hash of the caller's key id (`ROLLOUT_STICKY=true`).
    Sticky(&'a str),
    /// The caller asked for a track (`X-Hokusai-Track`): the canary when `true`.
    Forced(bool),
}

/// 0..100 from the key id and the rollout: stable for a key within a rollout, uniform across
/// keys (the first bytes of a SHA-256 digest).
fn sticky_draw(key: &str, rollout: Uuid) -> u8 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(rollout.as_bytes())
        .chain_update(key.as_bytes())
        .finalize();
    let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    (n % 100) as u8
}

/// Which side of a rollout served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    /// The rollout.
    pub rollout_id: Uuid,
    /// Its step when the request was routed.
    pub step: i32,
    /// Which side.
    pub side: Side,
}

/// The side of a rollout a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The serving version.
    Stable,
    /// The new version, answering the caller.
    Canary,
    /// The new version, answering a copy nobody waits for.
    Shadow,
}

impl Track {
    /// The metric label: `stable`, `canary` or `shadow`.
    pub fn label(self) -> &'static str {
        match self.side {
            Side::Stable => "stable",
            Side::Canary => "canary",
            Side::Shadow => "shadow",
        }
    }
}

impl ActiveRoute {
    /// The route for one request: during a rollout the canary for its share of requests,
    /// else this one; with the track to measure. `how` says how the share is drawn.
    pub fn pick(self: &Arc<Self>, how: Pick<'_>) -> (Arc<ActiveRoute>, Option<Track>) {
        let Some(rollout) = &self.rollout else {
            return (self.clone(), None);
        };
        let canary = match how {
            Pick::Forced(canary) => canary,
            // In a shadow rollout the caller is always answered by the stable version.
            _ if rollout.shadow => false,
            // The same key, the same version, for the whole step (and for later steps while
            // its draw stays under the weight).
            Pick::Sticky(key) => sticky_draw(key, rollout.rollout_id) < rollout.weight,
            // A uniform draw from 0..100 (the UUID's 122 random bits).
            Pick::Random => ((Uuid::new_v4().as_u128() % 100) as u8) < rollout.weight,
        };
        let track = Track {
            rollout_id: rollout.rollout_id,
            step: rollout.step,
            side: if canary { Side::Canary } else { Side::Stable },
        };
        let route = if canary {
            rollout.canary.clone()
        } else {
            self.clone()
        };
        (route, Some(track))
    }

    /// In a shadow rollout, whether this request is also copied to the new version (drawn by
    /// the step's weight), and where.
    pub fn mirror(&self) -> Option<(Arc<ActiveRoute>, Track)> {
        let rollout = self.rollout.as_ref().filter(|r| r.shadow)?;
        let draw = (Uuid::new_v4().as_u128() % 100) as u8;
        (draw < rollout.weight).then(|| {
            let track = Track {
                rollout_id: rollout.rollout_id,
                step: rollout.step,
                side: Side::Shadow,
            };
            (rollout.canary.clone(), track)
        })
    }
}

/// Handles of the `model_id`-labelled predict series of one model.
#[derive(Clone)]
pub struct PredictSeries {
    /// `hokusai_predict_requests_total{outcome="ok"}`.
    pub ok: metrics::Counter,
    /// `hokusai_predict_upstream_duration_seconds`.
    pub upstream: metrics::Histogram,
    /// `hokusai_predict_overhead_seconds`.
    pub overhead: metrics::Histogram,
}

impl PredictSeries {
    /// The handles for `model`.
    pub fn new(model: &ModelId) -> Self {
        let label = model.as_str().to_owned();
        Self {
            ok: metrics::counter!(names::PREDICT_REQUESTS, "model_id" => label.clone(), "outcome" => "ok"),
            upstream: metrics::histogram!(names::PREDICT_UPSTREAM, "model_id" => label.clone()),
            overhead: metrics::histogram!(names::PREDICT_OVERHEAD, "model_id" => label),
        }
    }
}

impl std::fmt::Debug for PredictSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PredictSeries")
    }
}

/// Handles are not part of a route's identity.
impl PartialEq for PredictSeries {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Where a model's predictions go now.
#[derive(Debug, Clone)]
pub enum Routed {
    /// To this deployment.
    Active(Arc<ActiveRoute>),
    /// Nowhere yet: the serving deployment's endpoint was lost and its replacement is on its
    /// way (the reconciler's heal redeploy); clients should retry (503 `MODEL_NOT_READY`).
    Replacing(Uuid),
    /// Nowhere: the serving deployment's endpoint was lost and nothing replaces it
    /// (`ON_ENDPOINT_LOST=fail`, or the heal budget is spent): 503 `MODEL_NOT_READY`.
    Lost(Uuid),
    /// Nowhere: the model has no active deployment (404 `MODEL_NOT_DEPLOYED`).
    Nowhere,
}

#[derive(Debug)]
struct Entry {
    route: Routed,
    fetched: Instant,
    /// A background refresh of this entry is running.
    refreshing: Arc<AtomicBool>,
}

type Entries = Arc<RwLock<HashMap<ModelId, Entry>>>;

/// Model id → active route, with a TTL and a bounded size.
#[derive(Debug)]
pub struct RoutingCache {
    ttl: Duration,
    capacity: usize,
    entries: Entries,
}

impl RoutingCache {
    /// A cache whose entries live `ttl`, holding at most `capacity` models.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The route of `model`, from memory when fresh, else from the database.
    pub async fn resolve(
        &self,
        db: &DatabaseConnection,
        model: &ModelId,
    ) -> Result<Routed, DbError> {
        if let Some((route, refresh)) = self.fresh(model) {
            if let Some(flag) = refresh {
                self.refresh_ahead(db, model, flag);
            }
            return Ok(route);
        }
        let asked = Instant::now();
        let route = load(db, model).await?;
        store(
            &self.entries,
            self.capacity,
            self.ttl,
            model,
            route.clone(),
            asked,
        );
        Ok(route)
    }

    /// The fresh route of `model`, with the flag to refresh it by when it is past half its
    /// TTL and no refresh runs yet (the flag is then set).
    fn fresh(&self, model: &ModelId) -> Option<(Routed, Option<Arc<AtomicBool>>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(model)?;
        let age = entry.fetched.elapsed();
        if age >= self.ttl {
            return None;
        }
        let refresh = (age >= self.ttl / 2 && !entry.refreshing.swap(true, Ordering::AcqRel))
            .then(|| entry.refreshing.clone());
        Some((entry.route.clone(), refresh))
    }

    /// Reads `model`'s route again in the background; a failed read clears `flag`, so a
    /// later request tries again (and an expired entry is read in line, as on a miss).
    fn refresh_ahead(&self, db: &DatabaseConnection, model: &ModelId, flag: Arc<AtomicBool>) {
        let (db, model, entries) = (db.clone(), model.clone(), self.entries.clone());
        let (capacity, ttl) = (self.capacity, self.ttl);
        tokio::spawn(async move {
            let asked = Instant::now();
            match load(&db, &model).await {
                Ok(route) => store(&entries, capacity, ttl, &model, route, asked),
                Err(error) => {
                    tracing::debug!(%error, model_id = %model.as_str(), "routing refresh failed");
                    flag.store(false, Ordering::Release);
                }
            }
        });
    }
}

fn route_of(model: &ModelId, d: Deployment) -> Option<ActiveRoute> {
    let handle = EndpointHandle::new(d.provider_model_id?, d.endpoint_url);
    Some(ActiveRoute {
        model_id: model.clone(),
        series: PredictSeries::new(model),
        deployment_id: d.id,
        model_version: d.model_version,
        provider: d.provider,
        handle,
        task: d.task,
        rollout: None,
    })
}

/// The canary side of `model`'s open rollout beside the active deployment `stable`, if any.
async fn rollout_of(
    db: &DatabaseConnection,
    model: &ModelId,
    stable: Uuid,
) -> Result<Option<RolloutRoute>, DbError> {
    let Some(rollout) = rollouts::open_for(db, model.as_str()).await? else {
        return Ok(None);
    };
    if rollout.stable_id != stable {
        return Ok(None);
    }
    let canary = deployments::get(db, DeploymentId(rollout.canary_id)).await?;
    let canary = canary
        .filter(|c| c.status == DeploymentStatus::Deployed)
        .and_then(|c| route_of(model, c));
    let shadow = rollout.spec().is_ok_and(|s| s.is_shadow());
    Ok(canary.map(|canary| RolloutRoute {
        rollout_id: rollout.id,
        step: rollout.step,
        weight: rollout.weight(),
        shadow,
        canary: Arc::new(canary),
    }))
}

/// `model`'s route as the database has it now.
async fn load(db: &DatabaseConnection, model: &ModelId) -> Result<Routed, DbError> {
    let active = match deployments::find_active(db, model).await? {
        Some(d) => {
            let id = d.id;
            match route_of(model, d) {
                Some(mut route) => {
                    route.rollout = rollout_of(db, model, id).await?;
                    Some(Arc::new(route))
                }
                None => None,
            }
        }
        None => None,
    };
    Ok(match active {
        Some(route) => Routed::Active(route),
        None => match deployments::why_not_serving(db, model).await? {
            NotServing::Replacing(id) => Routed::Replacing(id),
            NotServing::Lost(id) => Routed::Lost(id),
            NotServing::NotDeployed => Routed::Nowhere,
        },
    })
}

/// Stores `route` as `model`'s, read from the database at `asked` (its age counts from
/// before the read, so a change is visible within the TTL however long the read took);
/// makes room when `capacity` is reached (expired entries first, else everything).
fn store(
    entries: &Entries,
    capacity: usize,
    ttl: Duration,
    model: &ModelId,
    route: Routed,
    asked: Instant,
) {
    let mut entries = entries.write().unwrap_or_else(|e| e.into_inner());
    if entries.len() >= capacity && !entries.contains_key(model) {
        entries.retain(|_, e| e.fetched.elapsed() < ttl);
        if entries.len() >= capacity {
            entries.clear();
        }
    }
    entries.insert(
        model.clone(),
        Entry {
            route,
            fetched: asked,
            refreshing: Arc::new(AtomicBool::new(false)),
        },
    );
}
