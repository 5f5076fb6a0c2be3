//! Deploys a model on hokusai-serve, waits until it serves, predicts and prints the prediction.
//!
//! ```sh
//! HOKUSAI_URL=http://127.0.0.1:8001 HOKUSAI_API_KEY=hk_dev_… \
//!   cargo run -p tests --example deploy_and_predict
//! ```
//!
//! Optional: `HOKUSAI_MODEL_ID` (sentiment), `HOKUSAI_REPOSITORY`, `HOKUSAI_TASK`,
//! `HOKUSAI_TIMEOUT` (seconds to wait for the deployment, 180). Exits non-zero on any
//! failure; the key is never printed. Dependencies: `reqwest` (json), `tokio`, `serde_json`,
//! `anyhow`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Statuses a deployment never leaves: waiting longer is pointless.
const TERMINAL_FAILURES: [&str; 3] = ["failed", "rollback_failed", "stopped"];

/// A client of one hokusai-serve.
struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
}

impl Client {
    /// Sends `method path` with an optional JSON body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(&self.api_key);
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))
    }

    /// Sends and expects `expected`, returning the JSON body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        expected: StatusCode,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let response = self.send(method.clone(), path, body).await?;
        let status = response.status();
        if status != expected {
            let text = response.text().await.unwrap_or_default();
            bail!("{method} {path} answered {status}: {text}");
        }
        response
            .json()
            .await
            .with_context(|| format!("{method} {path}: JSON body"))
    }

    /// Deploys the repository as `model_id`; returns the deployment id.
    async fn deploy(&self, model_id: &str, repository: &str, task: &str) -> anyhow::Result<String> {
        let body = json!({ "repository": repository, "task": task });
        let path = format!("/api/v1/models/{model_id}/deployments");
        let created = self
            .call(Method::POST, &path, StatusCode::ACCEPTED, Some(&body))
            .await?;
        created["deployment"]["id"]
            .as_str()
            .map(str::to_owned)
            .context("the answer carries no deployment id")
    }

    /// Polls the model's status until `deployment_id` serves.
    async fn wait_serving(
        &self,
        model_id: &str,
        deployment_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let path = format!("/api/v1/models/{model_id}/status");
            let status = self.call(Method::GET, &path, StatusCode::OK, None).await?;
            if status["deployment_id"] == deployment_id && status["status"] == "serving" {
                return Ok(());
            }
            let path = format!("/api/v1/deployments/{deployment_id}");
            let deployment = self.call(Method::GET, &path, StatusCode::OK, None).await?;
            let state = deployment["status"].as_str().unwrap_or_default();
            if TERMINAL_FAILURES.contains(&state) {
                bail!(
                    "deployment {deployment_id} ended {state}: {}",
                    deployment["error_message"]
                );
            }
            if start.elapsed() > timeout {
                bail!("deployment {deployment_id} not serving after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Predicts, retrying while a cold endpoint answers 503 `MODEL_NOT_READY`.
    async fn predict(&self, model_id: &str, inputs: Value) -> anyhow::Result<Value> {
        let path = format!("/api/v1/models/{model_id}/predict");
        let body = json!({ "inputs": inputs });
        let mut response = self.send(Method::POST, &path, Some(&body)).await?;
        for _ in 1..10 {
            if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(retry_after)).await;
            response = self.send(Method::POST, &path, Some(&body)).await?;
        }
        let status = response.status();
        if status != StatusCode::OK {
            let text = response.text().await.unwrap_or_default();
            bail!("POST {path} answered {status}: {text}");
        }
        Ok(response.json().await?)
    }
}

/// The variable `name`, or `default`.
fn env(name: &str, default: Option<&str>) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => default
            .map(str::to_owned)
            .with_context(|| format!("set {name}")),
    }
}

async fn run() -> anyhow::Result<()> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base_url: env("HOKUSAI_URL", None)?.trim_end_matches('/').to_owned(),
        api_key: env("HOKUSAI_API_KEY", None)?,
    };
    let model_id = env("HOKUSAI_MODEL_ID", Some("sentiment"))?;
    let repository = env(
        "HOKUSAI_REPOSITORY",
        Some("distilbert/distilbert-base-uncased-finetuned-sst-2-english"),
    )?;
    let task = env("HOKUSAI_TASK", Some("text-classification"))?;
    let timeout: u64 = env("HOKUSAI_TIMEOUT", Some("180"))?
        .parse()
        .context("HOKUSAI_TIMEOUT: seconds")?;

    let deployment_id = client.deploy(&model_id, &repository, &task).await?;
    println!("deployment {deployment_id} accepted");
    client
        .wait_serving(&model_id, &deployment_id, Duration::from_secs(timeout))
        .await?;
    println!("deployment {deployment_id} serving");
    let answer = client
        .predict(&model_id, json!("I love this movie"))
        .await?;
    println!("prediction: {}", answer["predictions"]);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
