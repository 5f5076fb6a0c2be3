//! The MLflow integration's shared half (docs/contracts/mlflow.md): a REST
//! [`client`] with Bearer or Basic auth, the [`webhook`] signature check and payloads, and
//! [`metadata`] extraction that turns a registered model version into a
//! [`DeployRequest`](crate::request::DeployRequest). The API's listener uses the webhook
//! half; the worker's intake, status sync and reconciliation use the client and metadata.
//!
//! [`tags`] names every `hokusai.*` tag the service reads or writes.

pub mod client;
pub mod metadata;
pub mod metrics;
pub mod registration;
pub mod tags;
pub mod types;
pub mod webhook;

pub use client::{MlflowClient, MlflowError, ModelVersion, RegisteredModel};
pub use metadata::{Extracted, VersionFacts, extract};
