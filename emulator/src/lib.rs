//! An emulator of the HuggingFace Inference Endpoints v2 API (docs/design/providers.md), used by
//! `hokusai-serve dev`, `hokusai-serve hf-emulator` and the tests.
//!
//! It implements the management routes (`/v2/endpoint/{namespace}[/{name}[/pause|resume|
//! scale-to-zero]]`, `/v2/provider`), and for each endpoint a `status.url` on the emulator
//! itself (`{base}/endpoints/{namespace}/{name}`) serving the health route, predictions and
//! the OpenAI-compatible routes of the TGI and TEI containers (`/v1/...`).
//! It is faithful enough for the official `huggingface_hub` client, and never pretends to
//! be HF: every answer carries `X-Hokusai-Emulator: 1`.
//!
//! Layout:
//! - [`config`]: [`EmulatorConfig`] (timings, token) and [`ChaosConfig`].
//! - `endpoint`: one endpoint's state machine; `store`: all endpoints behind one mutex.
//! - `management`, `inference`, `catalogue`, `predictions`: the routes and their data.
//! - `openai`: `/v1/chat/completions`, `/v1/completions` (streamed or not) and
//!   `/v1/embeddings` under each endpoint.
//! - `auth`: Bearer tokens; `chaos`: injected failures (global, and per endpoint on its
//!   inference routes) and the `/_emulator` control routes.

mod auth;
mod catalogue;
mod chaos;
pub mod config;
mod endpoint;
mod inference;
mod management;
mod openai;
mod predictions;
mod store;

use std::future::Future;

use axum::Router;
use axum::http::HeaderValue;
use axum::middleware;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{ChaosConfig, DEFAULT_TOKEN, EmulatorConfig};
pub use store::EndpointInfo;
use store::Store;

/// The header marking every emulator answer.
pub const EMULATOR_HEADER: &str = "x-hokusai-emulator";

/// The whole app over `store`.
fn app(store: Store) -> Router {
    let protected = management::protected().route_layer(middleware::from_fn_with_state(
        store.clone(),
        auth::require_token,
    ));
    let v2 = protected
        .merge(management::public())
        .layer(middleware::from_fn_with_state(
            store.clone(),
            chaos::inject_failures,
        ));
    v2.merge(inference::router())
        .merge(openai::router())
        .merge(chaos::control())
        .layer(middleware::from_fn_with_state(
            store.clone(),
            chaos::add_latency,
        ))
        .with_state(store)
        .layer(middleware::map_response(mark_as_emulator))
}

async fn mark_as_emulator(mut response: axum::response::Response) -> axum::response::Response {
    response
        .headers_mut()
        .insert(EMULATOR_HEADER, HeaderValue::from_static("1"));
    response
}

/// Serves the emulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: EmulatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_store(listener, Store::new(config), shutdown).await
}

async fn serve_store(
    listener: TcpListener,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(store))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts emulators in-process.
pub struct Emulator;

impl Emulator {
    /// Starts an emulator on `127.0.0.1:0` in the current tokio runtime.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<EmulatorHandle> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let token = config.token.clone();
        let store = Store::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_store(listener, store.clone(), async move {
            stopped.await.ok();
        }));
        Ok(EmulatorHandle {
            base_url,
            token,
            store,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running in-process emulator; dropping it stops the server.
pub struct EmulatorHandle {
    /// `http://127.0.0.1:{port}`: `HUGGINGFACE_API_BASE` for the adapter (it adds `/v2`).
    pub base_url: String,
    /// The Bearer token it accepts.
    pub token: String,
    store: Store,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The management API root, `{base_url}/v2` (what the official client's
    /// `INFERENCE_ENDPOINTS_ENDPOINT` is set to).
    pub fn v2_url(&self) -> String {
        format!("{}/v2", self.base_url)
    }

    /// Every endpoint held, in every namespace (to compare with the database).
    pub fn endpoints(&self) -> Vec<EndpointInfo> {
        self.store.list(None, &self.base_url)
    }

    /// The current chaos settings.
    pub fn chaos(&self) -> ChaosConfig {
        self.store.chaos()
    }

    /// Replaces the chaos settings.
    pub fn set_chaos(&self, chaos: ChaosConfig) {
        self.store.set_chaos(chaos);
    }

    /// Makes an endpoint `failed` now; false if there is no such endpoint.
    pub fn fail_endpoint(&self, namespace: &str, name: &str) -> bool {
        self.store
            .fail(namespace, name, "Endpoint failed: emulated failure (chaos)")
            .is_ok()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}
