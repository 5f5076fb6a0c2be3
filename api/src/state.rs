//! State shared by every handler.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use shared::config::Settings;
use shared::db::outbox::Route;
use shared::provider::ProviderRegistry;

use shared::queue::Queue;

use crate::activity::PredictionClock;
use crate::auth::Authenticator;
use crate::routing::RoutingCache;

/// What every handler shares, behind one reference count: extractors and the router clone
/// the state several times per request.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The state holding `services`.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services of [`AppState`].
pub struct Services {
    /// The database pool.
    pub db: DatabaseConnection,
    /// The configuration the application was built with.
    pub settings: Arc<Settings>,
    /// Validates API keys (chosen once at start-up by `AUTH_BACKEND`).
    pub authenticator: Arc<dyn Authenticator>,
    /// Providers: predictions are forwarded through them, deploy requests validated by them.
    pub providers: Arc<ProviderRegistry>,
    /// Where commands are written (outbox, or the embedded queue itself).
    pub route: Route,
    /// The command queue (dead-letter operations).
    pub queue: Arc<dyn Queue>,
    /// Model → active deployment, for the predict path.
    pub routing: Arc<RoutingCache>,
    /// When each deployment last answered a prediction.
    pub activity: Arc<PredictionClock>,
    /// What predictions during open rollouts measured, per track.
    pub rollouts: Arc<crate::rollout_meter::RolloutMeter>,
    /// Per-key rate limits, monthly quotas and failed authentications per IP.
    pub limits: Arc<crate::limits::Limits>,
    /// The supervisor of the API's loops (and, in `dev`, the worker's), for `/ready`.
    pub tasks: shared::runtime::Tasks,
}
