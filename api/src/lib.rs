//! The hokusai-serve HTTP API (axum 0.8).
//!
//! Start-up is a library type: [`Application::build`] connects to the database and binds
//! the listener, [`Application::run_until_stopped`] serves until the shutdown future
//! resolves. Tests start exactly what production starts, on port 0.
//!
//! Layout:
//! - [`startup`]: [`Application`], the router and its middleware.
//! - [`state`]: [`AppState`], shared by every handler.
//! - [`activity`]: when deployments last answered a prediction (idle endpoints).
//! - [`auth`]: API keys, principals and scopes; the authenticator backends.
//! - [`error`]: the one error type and its JSON body.
//! - [`extract`]: extractors whose rejections answer our error body.
//! - [`observe`]: request metrics, the request log line, the per-request context.
//! - `routes/`: one module per resource, each with its own `router()`.
//! - [`routing`]: the predict path's cache of active deployments.
//! - [`rollout_meter`]: per-track measurements of open canary rollouts.

pub mod activity;
pub mod auth;
pub mod bounds;
pub mod error;
pub mod etag;
pub mod extract;
pub mod limits;
pub mod observe;
pub mod protocol;
pub mod rollout_meter;
mod routes;
pub mod routing;
pub mod startup;
pub mod state;

pub use startup::Application;
pub use state::AppState;
