//! A real MLflow server for end-to-end tests: where it is (`HOKUSAI_TEST_MLFLOW_URI`, set
//! by `scripts/test`, which starts one with `scripts/start-mlflow`) and the registry calls
//! a data scientist would make (register a model, add a version, log an `MLmodel`).
//!
//! A test that needs MLflow fails when the variable is unset; it never skips.

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use shared::mlflow::client::{Auth, MlflowClient};

/// The server's URL; panics with the way to get one when unset.
pub fn uri() -> String {
    std::env::var("HOKUSAI_TEST_MLFLOW_URI").unwrap_or_else(|_| {
        panic!(
            "HOKUSAI_TEST_MLFLOW_URI is not set: this test needs a real mlflow==3.17.2 server. \
             Run scripts/test, or start one with `scripts/start-mlflow <venv>/bin/python PORT` \
             and export HOKUSAI_TEST_MLFLOW_URI=http://127.0.0.1:PORT"
        )
    })
}

/// A client of the test server (no auth, like a default `mlflow server`).
pub fn client() -> MlflowClient {
    MlflowClient::new(&uri(), Auth::None).expect("MLflow client")
}

fn tags(pairs: &[(&str, &str)]) -> Value {
    pairs
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

/// Registers a model with `model_tags`.
pub async fn create_model(client: &MlflowClient, name: &str, model_tags: &[(&str, &str)]) {
    let body = json!({"name": name, "tags": tags(model_tags)});
    client
        .call(
            Method::POST,
            "api/2.0/mlflow/registered-models/create",
            &body,
        )
        .await
        .expect("registered-models/create");
}

/// Adds a version from `source` (an `s3://…` source needs no run); returns its number.
pub async fn create_version(
    client: &MlflowClient,
    name: &str,
    source: &str,
    run_id: Option<&str>,
    version_tags: &[(&str, &str)],
) -> String {
    let body = json!({"name": name, "source": source, "run_id": run_id,
                      "tags": tags(version_tags)});
    let answer = client
        .call(Method::POST, "api/2.0/mlflow/model-versions/create", &body)
        .await
        .expect("model-versions/create");
    answer["model_version"]["version"]
        .as_str()
        .expect("version number")
        .to_owned()
}

/// Creates a run whose `model/MLmodel` is `mlmodel`; returns the run id.
pub async fn log_model(client: &MlflowClient, mlmodel: &str) -> String {
    let run = client
        .call(
            Method::POST,
            "api/2.0/mlflow/runs/create",
            &json!({"experiment_id": "0"}),
        )
        .await
        .expect("runs/create");
    let run_id = run["run"]["info"]["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();
    let root = run["run"]["info"]["artifact_uri"]
        .as_str()
        .expect("artifact uri");
    let path = root
        .trim_start_matches("mlflow-artifacts:")
        .trim_start_matches('/');
    let url = format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{path}/model/MLmodel",
        uri()
    );
    let response = reqwest::Client::new()
        .put(url)
        .body(mlmodel.to_owned())
        .send()
        .await
        .expect("artifact upload");
    assert!(
        response.status().is_success(),
        "upload: {}",
        response.status()
    );
    run_id
}

/// The version's tags as a JSON object.
pub async fn version_tags(client: &MlflowClient, name: &str, version: &str) -> Value {
    let v = client
        .get_version(name, version)
        .await
        .expect("model-versions/get");
    v.tags
        .into_iter()
        .map(|t| (t.key, Value::String(t.value)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Points the webhook `name` at `url` (a closed port drops deliveries).
pub async fn repoint_webhook(client: &MlflowClient, name: &str, url: &str) {
    let id = webhook_id(client, name).await;
    client
        .update_webhook(&id, &json!({"url": url}))
        .await
        .expect("webhook update");
}

/// Deletes the webhook `name`.
pub async fn delete_webhook(client: &MlflowClient, name: &str) {
    let id = webhook_id(client, name).await;
    let path = format!("api/2.0/mlflow/webhooks/{id}");
    client
        .call(Method::DELETE, &path, &json!({}))
        .await
        .expect("webhook delete");
}

async fn webhook_id(client: &MlflowClient, name: &str) -> String {
    client
        .list_webhooks()
        .await
        .expect("webhooks")
        .into_iter()
        .find(|w| w["name"] == name)
        .and_then(|w| w["webhook_id"].as_str().map(str::to_owned))
        .expect("the webhook exists")
}

/// Polls `probe` every 250 ms until it returns `Some`, or panics after `limit` saying `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
