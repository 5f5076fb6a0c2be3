//! The worker's HTTP side: `GET /metrics` (Prometheus) and `GET /health` on
//! `WORKER_METRICS_PORT`, for the scraper and the container health check. `dev` does not
//! start it: there the API serves the same registry.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// A bound metrics listener.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `host:port` (port 0 picks a free one) and installs the recorder.
    pub async fn bind(host: &str, port: u16) -> anyhow::Result<Self> {
        shared::telemetry::metrics::install();
        let address = format!("{host}:{port}");
        let listener = TcpListener::bind(&address).await.with_context(|| {
            format!("binding the worker metrics listener on {address} (WORKER_METRICS_PORT)")
        })?;
        Ok(Self { listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(|| async { "ok" }));
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the worker metrics")
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            shared::telemetry::metrics::CONTENT_TYPE,
        )],
        shared::telemetry::metrics::render(),
    )
}
