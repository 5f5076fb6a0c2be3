//! Building and running the API server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::serve::ListenerExt;
use sea_orm::DatabaseConnection;
use shared::config::{AuthBackend, Secret, Settings};
use shared::db::outbox::Route;
use shared::provider::ProviderRegistry;
use shared::queue::{self, QueueOptions};
use shared::runtime::{ShutdownTrigger, Tasks};
use tokio::net::TcpListener;

use crate::activity::{self, PredictionClock};
use crate::auth::Authenticator;
use crate::auth::counters::AuthCounters;
use crate::auth::hokusai::{self, HokusaiAuthenticator};
use crate::auth::static_keys::{self, StaticKeys};
use crate::auth::usage::{self, UsageReporter};
use crate::bounds::{self, Bounds};
use crate::limits::Limits;
use crate::observe::{ObserveConfig, observe};
use crate::rollout_meter::{self, RolloutMeter};
use crate::routes;
use crate::routing::RoutingCache;
use crate::state::{AppState, Services};

/// A bound, ready-to-serve API.
pub struct Application {
    listener: TcpListener,
    router: Router,
    dev_api_key: Option<Secret>,
    db: DatabaseConnection,
    activity: Arc<PredictionClock>,
    rollouts: Arc<RolloutMeter>,
    /// Fired when [`Application::run_until_stopped`]'s shutdown future resolves.
    trigger: ShutdownTrigger,
    /// The supervisor of the API's own loops (reported on `/ready`).
    tasks: Tasks,
}

impl Application {
    /// Connects to the database, builds the providers from configuration and binds
    /// `API_HOST:API_PORT` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = shared::db::connect(settings.database_url.expose())
            .await
            .context("connecting to the database")?;
        let providers = ProviderRegistry::start(&settings)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Self::build_with_db(settings, db, providers).await
    }

    /// Like [`Application::build`] with an existing pool (`dev` shares one with the worker).
    /// The authenticator is chosen by `AUTH_BACKEND`, once.
    pub async fn build_with_db(
        settings: Settings,
        db: DatabaseConnection,
        providers: Arc<ProviderRegistry>,
    ) -> anyhow::Result<Self> {
        let backend = AuthWiring::from_settings(&settings)?;
        let mut app = Self::assemble(
            settings,
            db,
            providers,
            backend.authenticator,
            backend.usage,
        )
        .await?;
        app.dev_api_key = backend.dev_api_key;
        Ok(app)
    }

    /// Builds with an explicit authenticator (tests choose their keys and scopes). No usage
    /// is reported.
    pub async fn build_with(
        settings: Settings,
        db: DatabaseConnection,
        providers: Arc<ProviderRegistry>,
        authenticator: Arc<dyn Authenticator>,
    ) -> anyhow::Result<Self> {
        Self::assemble(settings, db, providers, authenticator, None).await
    }

    async fn assemble(
        settings: Settings,
        db: DatabaseConnection,
        providers: Arc<ProviderRegistry>,
        authenticator: Arc<dyn Authenticator>,
        usage: Option<Arc<UsageReporter>>,
    ) -> anyhow::Result<Self> {
        shared::telemetry::metrics::install();
        let address = format!("{}:{}", settings.api.host, settings.api.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding the API listener on {address}"))?;
        let route = Route::for_backend(settings.queue.backend);
        let options = QueueOptions::from_settings(&settings.queue);
        let queue = queue::connect(&settings.queue, Some(&db), options)
            .await
            .context("connecting to the queue")?;
        let routing = Arc::new(RoutingCache::new(settings.api.routing_ttl, 100_000));
        let activity = Arc::new(PredictionClock::default());
        let rollouts = Arc::new(RolloutMeter::default());
        let trigger = ShutdownTrigger::new();
        let tasks = Tasks::new(trigger.subscribe());
        shared::telemetry::supervise(&tasks);
        tasks.every("activity_flush", activity::FLUSH_EVERY, None, {
            let (db, clock) = (db.clone(), activity.clone());
            move || {
                let (db, clock) = (db.clone(), clock.clone());
                async move {
                    clock.flush(&db).await;
                    Ok(())
                }
            }
        });
        tasks.every("rollout_flush", rollout_meter::FLUSH_EVERY, None, {
            let (db, meter) = (db.clone(), rollouts.clone());
            move || {
                let (db, meter) = (db.clone(), meter.clone());
                async move {
                    meter.flush(&db).await;
                    Ok(())
                }
            }
        });
        let limits = Arc::new(
            Limits::new(
                settings.api.redis_url.as_ref().map(Secret::expose),
                settings.api.failed_auth_per_ip_per_minute,
            )
            .context("configuring the rate limits (REDIS_URL)")?,
        );
        let state = AppState::new(Services {
            limits,
            db: db.clone(),
            settings: Arc::new(settings),
            authenticator,
            providers,
            route,
            queue,
            routing,
            activity: activity.clone(),
            rollouts: rollouts.clone(),
            tasks: tasks.clone(),
        });
        let router = app(state, usage);
        Ok(Self {
            listener,
            router,
            dev_api_key: None,
            db,
            activity,
            rollouts,
            trigger,
            tasks,
        })
    }

    /// The supervisor of the API's loops (`dev` adds the worker's to its `/ready`).
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The key a `static` authenticator built from configuration accepts
    /// (`HOKUSAI_DEV_API_KEY`, or generated), for `dev` to print.
    pub fn dev_api_key(&self) -> Option<&Secret> {
        self.dev_api_key.as_ref()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Small answers go out at once, not after the peer's delayed ACK (Nagle).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(%err, "could not set TCP_NODELAY on a connection");
            }
        });
        axum::serve(
            listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
        self.trigger.trigger();
        self.tasks.join().await;
        self.activity.flush(&self.db).await;
        self.rollouts.flush(&self.db).await;
        shared::telemetry::cloudwatch::flush();
        Ok(())
    }
}

/// The authenticator `AUTH_BACKEND` selects, with what comes along with it.
struct AuthWiring {
    authenticator: Arc<dyn Authenticator>,
    /// The `static` backend's key, for `dev` to print.
    dev_api_key: Option<Secret>,
    /// The usage reporter (`hokusai` backend with `AUTH_USAGE_REPORTING=true`).
    usage: Option<Arc<UsageReporter>>,
}

impl AuthWiring {
    /// The one explicit choice of backend. Usage is reported only for keys auth.hokus.ai
    /// issued, so `AUTH_USAGE_REPORTING` has no effect with static keys.
    fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        match auth.backend {
            AuthBackend::Static => {
                let key = auth
                    .dev_api_key
                    .clone()
                    .unwrap_or_else(|| Secret::new(static_keys::generate_dev_key()));
                let keys =
                    StaticKeys::new().with_key(key.expose(), "dev", &static_keys::ALL_SCOPES);
                Ok(Self {
                    authenticator: Arc::new(keys),
                    dev_api_key: Some(key),
                    usage: None,
                })
            }
            AuthBackend::Hokusai => {
                let http = hokusai::http_client(auth)?;
                let counters = Arc::new(AuthCounters::default());
                let usage = auth.usage_reporting.then(|| {
                    UsageReporter::start(
                        &auth.service_url,
                        &auth.service_id,
                        http.clone(),
                        counters.clone(),
                    )
                });
                Ok(Self {
                    authenticator: Arc::new(HokusaiAuthenticator::new(auth, http, counters)),
                    dev_api_key: None,
                    usage,
                })
            }
        }
    }
}

/// The router with its middleware, outermost last: the body limit, the bounds (load
/// shedding past `MAX_CONCURRENT_REQUESTS`, `REQUEST_TIMEOUT_SECONDS`), usage reporting
/// when enabled, and observation (request ids taken from the request or generated and echoed on
/// every response, error bodies, metrics, the request log line and span).
pub fn app(state: AppState, usage: Option<Arc<UsageReporter>>) -> Router {
    let body_limit = state.settings.api.max_body_bytes;
    let telemetry = &state.settings.telemetry;
    let observe_config = Arc::new(ObserveConfig {
        log_payloads: telemetry.log_payloads,
        max_payload_bytes: telemetry.log_payload_max_bytes,
        redact_fields: telemetry.log_redact_fields.clone().into(),
        max_body_bytes: body_limit,
    });
    let bounds = Arc::new(Bounds::new(&state.settings.api));
    let mut router = routes::router()
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(bounds, bounds::bound));
    if let Some(reporter) = usage {
        router = router.layer(axum::middleware::from_fn_with_state(reporter, usage::track));
    }
    router.layer(axum::middleware::from_fn_with_state(
        observe_config,
        observe,
    ))
}
