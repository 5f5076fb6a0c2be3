//! The routing cache of the predict path: which deployment serves a model, kept in memory
//! for a short TTL so a warm prediction makes no database query. A miss (or an expired
//! entry) reads the active deployment once; "no active deployment" is cached too, so
//! unknown models cannot turn traffic into database load. A deploy, rollback or undeploy
//! is visible within the TTL.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sea_orm::DatabaseConnection;
use shared::db::DbError;
use shared::db::deployments::{self, NotServing};
use shared::domain::ModelId;
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
}

/// Model id → active route, with a TTL and a bounded size.
#[derive(Debug)]
pub struct RoutingCache {
    ttl: Duration,
    capacity: usize,
    entries: RwLock<HashMap<ModelId, Entry>>,
}

impl RoutingCache {
    /// A cache whose entries live `ttl`, holding at most `capacity` models.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The route of `model`, from memory when fresh, else from the database.
    pub async fn resolve(
        &self,
        db: &DatabaseConnection,
        model: &ModelId,
    ) -> Result<Routed, DbError> {
        if let Some(route) = self.fresh(model) {
            return Ok(route);
        }
        let active = deployments::find_active(db, model).await?.and_then(|d| {
            let handle = EndpointHandle::new(d.provider_model_id?, d.endpoint_url);
            Some(Arc::new(ActiveRoute {
                model_id: model.clone(),
                series: PredictSeries::new(model),
                deployment_id: d.id,
                model_version: d.model_version,
                provider: d.provider,
                handle,
                task: d.task,
            }))
        });
        let route = match active {
            Some(route) => Routed::Active(route),
            None => match deployments::why_not_serving(db, model).await? {
                NotServing::Replacing(id) => Routed::Replacing(id),
                NotServing::Lost(id) => Routed::Lost(id),
                NotServing::NotDeployed => Routed::Nowhere,
            },
        };
        self.store(model, route.clone());
        Ok(route)
    }

    fn fresh(&self, model: &ModelId) -> Option<Routed> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(model)
            .filter(|e| e.fetched.elapsed() < self.ttl)
            .map(|e| e.route.clone())
    }

    fn store(&self, model: &ModelId, route: Routed) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(model) {
            let ttl = self.ttl;
            entries.retain(|_, e| e.fetched.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            model.clone(),
            Entry {
                route,
                fetched: Instant::now(),
            },
        );
    }
}
