//! The worker's HTTP side on `WORKER_METRICS_PORT`: `GET /metrics` (Prometheus), `GET
//! /health` (liveness: the process answers; the container health check) and `GET /ready`
//! (every loop of the worker running and beating: 200, else 503 naming the loops that are
//! not; docs/design/runtime.md). `dev` does not start it: there the API serves the same
//! registry and reports the worker's loops on its own `/ready`.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::runtime::Tasks;
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

    /// Serves until `shutdown` resolves, reporting `tasks` on `/ready`.
    pub async fn run_until_stopped(
        self,
        tasks: Tasks,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(|| async { "ok" }))
            .route("/ready", get(move || ready(tasks.clone())));
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving the worker metrics")
    }
}

/// `/ready`: 200 while every loop runs and beats, else 503; the body names each loop with
/// the seconds since its last heartbeat.
pub async fn ready(tasks: Tasks) -> (StatusCode, Json<Value>) {
    let readiness = tasks.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if readiness.ready { "ready" } else { "unavailable" },
        "failing": readiness.failing(),
        "tasks": readiness.tasks,
    });
    (status, Json(body))
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
