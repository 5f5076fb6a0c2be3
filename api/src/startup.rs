//! Building and running the API server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderName;
use sea_orm::DatabaseConnection;
use shared::config::Settings;
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::REQUEST_ID_HEADER;
use crate::routes;
use crate::state::AppState;

/// A bound, ready-to-serve API.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    /// Connects to the database and binds `API_HOST:API_PORT` (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = shared::db::connect(settings.database_url.expose())
            .await
            .context("connecting to the database")?;
        Self::build_with_db(settings, db).await
    }

    /// Like [`Application::build`] with an existing pool (`dev` shares one with the worker).
    pub async fn build_with_db(settings: Settings, db: DatabaseConnection) -> anyhow::Result<Self> {
        let address = format!("{}:{}", settings.api.host, settings.api.port);
        let listener = TcpListener::bind(&address)
            .await
            .with_context(|| format!("binding the API listener on {address}"))?;
        let state = AppState {
            db,
            settings: Arc::new(settings),
        };
        Ok(Self {
            listener,
            router: app(state),
        })
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
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")
    }
}

/// The router with its middleware: request ids (taken from the request or generated, and
/// echoed on every response) and request tracing.
pub fn app(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    routes::router()
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}
