//! A small MLflow REST client: the calls of docs/contracts/mlflow.md and nothing more.
//!
//! Authentication is chosen once from configuration: Bearer (`MLFLOW_TRACKING_TOKEN`,
//! proxies and Databricks), Basic (`MLFLOW_TRACKING_USERNAME`/`_PASSWORD`, the
//! `basic-auth` app of `mlflow server`) or none. Idempotent calls are retried with
//! exponential backoff when the failure is transient ([`MlflowError::is_transient`]);
//! credentials never appear in `Debug` output or errors.

use std::time::Duration;

use backon::Retryable;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use super::types::{ModelVersion, RegisteredModel, Tag, tag_value};
use crate::config::{MlflowSettings, Secret};
use crate::runtime::Backoff;

/// Delays between tries of an idempotent MLflow call.
const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));

/// What went wrong talking to MLflow. Retry or not is in the variant.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    /// The resource does not exist (`RESOURCE_DOES_NOT_EXIST`, 404).
    #[error("MLflow: not found: {0}")]
    NotFound(String),
    /// MLflow refused the call (4xx other than 404 and 429).
    #[error("MLflow refused the call ({status} {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// MLflow's `error_code`.
        code: String,
        /// MLflow's message.
        message: String,
    },
    /// MLflow did not answer, answered 5xx or 429: try again later.
    #[error("MLflow unavailable: {0}")]
    Unavailable(String),
    /// The answer is not what the contract says.
    #[error("unexpected MLflow answer: {0}")]
    Decode(String),
}

impl MlflowError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// How requests authenticate.
#[derive(Clone)]
pub enum Auth {
    /// No credentials (a default `mlflow server`).
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

/// A client of one MLflow tracking server.
#[derive(Clone)]
pub struct MlflowClient {
    base: Url,
    http: reqwest::Client,
    auth: Auth,
    retries: usize,
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.auth {
            Auth::None => "none",
            Auth::Bearer(_) => "bearer",
            Auth::Basic { .. } => "basic",
        };
        f.debug_struct("MlflowClient")
            .field(
                "base",
                &crate::config::redact_url_password(self.base.as_str()),
            )
            .field("auth", &auth)
            .finish()
    }
}

impl MlflowClient {
    /// A client of `base_url` (`http://host:5000`, no trailing `/api`).
    pub fn new(base_url: &str, auth: Auth) -> Result<Self, MlflowError> {
        let base = Url::parse(&format!("{}/", base_url.trim_end_matches('/')))
            .map_err(|_| MlflowError::Decode("MLFLOW_TRACKING_URI is not a URL".into()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| MlflowError::Unavailable(e.to_string()))?;
        Ok(Self {
            base,
            http,
            auth,
            retries: 3,
        })
    }

    /// The client `MLFLOW_TRACKING_URI` and its credentials describe; `None` when the URI is
    /// unset (the integration is off). A token wins over a user name and password.
    pub fn from_settings(settings: &MlflowSettings) -> Result<Option<Self>, MlflowError> {
        let Some(uri) = &settings.tracking_uri else {
            return Ok(None);
        };
        let auth = match (&settings.tracking_token, &settings.tracking_username) {
            (Some(token), _) => Auth::Bearer(token.clone()),
            (None, Some(username)) => Auth::Basic {
                username: username.clone(),
                password: settings
                    .tracking_password
                    .clone()
                    .unwrap_or_else(|| Secret::new("")),
            },
            (None, None) => Auth::None,
        };
        Self::new(uri, auth).map(Some)
    }

    /// How many times a transient failure of an idempotent call is retried (default 3).
    pub fn with_retries(mut self, retries: usize) -> Self {
        self.retries = retries;
        self
    }

    /// `model-versions/get`.
    pub async fn get_version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<ModelVersion, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let query = [("name", name), ("version", version)];
        let answer: Answer = self
            .get("api/2.0/mlflow/model-versions/get", &query)
            .await?;
        Ok(answer.model_version)
    }

    /// `registered-models/get`.
    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            registered_model: RegisteredModel,
        }
        let answer: Answer = self
            .get("api/2.0/mlflow/registered-models/get", &[("name", name)])
            .await?;
        Ok(answer.registered_model)
    }

    /// `model-versions/get-download-uri`: where the version's files are.
    pub async fn download_uri(&self, name: &str, version: &str) -> Result<String, MlflowError> {
        let query = [("name", name), ("version", version)];
        let answer: Value = self
            .get("api/2.0/mlflow/model-versions/get-download-uri", &query)
            .await?;
        string_field(&answer, "artifact_uri")
    }

    /// `runs/get`: the run's artifact root.
    pub async fn run_artifact_uri(&self, run_id: &str) -> Result<String, MlflowError> {
        let answer: Value = self
            .get("api/2.0/mlflow/runs/get", &[("run_id", run_id)])
            .await?;
        string_field(&answer["run"]["info"], "artifact_uri")
    }

    /// Downloads a file through the artifact proxy (`path` is the part after
    /// `mlflow-artifacts:/`); `None` when it does not exist.
    pub async fn artifact_text(&self, path: &str) -> Result<Option<String>, MlflowError> {
        let mut url = self.url("api/2.0/mlflow-artifacts/artifacts", &[])?;
        url.path_segments_mut()
            .map_err(|()| MlflowError::Decode("base URL cannot have a path".into()))?
            .extend(path.split('/').filter(|s| !s.is_empty()));
        let call = || async {
            let response = self.authorised(self.http.get(url.clone())).send().await;
            let response = response.map_err(|e| MlflowError::Unavailable(e.to_string()))?;
            if response.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let response = check(response).await?;
            let text = response.text().await;
            text.map(Some)
                .map_err(|e| MlflowError::Unavailable(e.to_string()))
        };
        self.retrying(call).await
    }

    /// `model-versions/set-tag`.
    pub async fn set_version_tag(
        &self,
        name: &str,
        version: &str,
        key: &str,
        value: &str,
    ) -> Result<(), MlflowError> {
        let body = json!({"name": name, "version": version, "key": key, "value": value});
        let path = "api/2.0/mlflow/model-versions/set-tag";
        self.send::<Value>(Method::POST, path, &body, true)
            .await
            .map(drop)
    }

    /// The version the alias points at (`registered-models/alias`); `None` when unset.
    pub async fn alias_version(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<String>, MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            model_version: ModelVersion,
        }
        let query = [("name", name), ("alias", alias)];
        match self
            .get::<Answer>("api/2.0/mlflow/registered-models/alias", &query)
            .await
        {
            Ok(answer) => Ok(Some(answer.model_version.version)),
            Err(MlflowError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// One page of `model-versions/search` with `filter`; the next page's token, if any.
    pub async fn search_versions(
        &self,
        filter: &str,
        page_token: Option<&str>,
    ) -> Result<(Vec<ModelVersion>, Option<String>), MlflowError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            model_versions: Vec<ModelVersion>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let mut query = vec![("filter", filter), ("max_results", "200")];
        if let Some(token) = page_token {
            query.push(("page_token", token));
        }
        let answer: Answer = self
            .get("api/2.0/mlflow/model-versions/search", &query)
            .await?;
        let next = answer.next_page_token.filter(|t| !t.is_empty());
        Ok((answer.model_versions, next))
    }

    /// `GET webhooks`: every webhook (first page of 1000 is plenty for a registry).
    pub async fn list_webhooks(&self) -> Result<Vec<Value>, MlflowError> {
        let answer: Value = self
            .get("api/2.0/mlflow/webhooks", &[("max_results", "1000")])
            .await?;
        Ok(answer["webhooks"].as_array().cloned().unwrap_or_default())
    }

    /// `POST webhooks` (not retried: a retry after a lost answer would create a second).
    pub async fn create_webhook(&self, body: &Value) -> Result<Value, MlflowError> {
        let answer: Value = self
            .send(Method::POST, "api/2.0/mlflow/webhooks", body, false)
            .await?;
        Ok(answer["webhook"].clone())
    }

    /// `PATCH webhooks/{id}`.
    pub async fn update_webhook(&self, id: &str, body: &Value) -> Result<Value, MlflowError> {
        let path = format!("api/2.0/mlflow/webhooks/{id}");
        let answer: Value = self.send(Method::PATCH, &path, body, true).await?;
        Ok(answer["webhook"].clone())
    }

    /// Any call of the REST API, for what this client does not wrap (tests set up models
    /// with it): JSON in, JSON out, never retried.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, MlflowError> {
        self.send(method, path, body, false).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, MlflowError> {
        let url = self.url(path, query)?;
        let call = || async {
            let response = self.authorised(self.http.get(url.clone())).send().await;
            decode(response).await
        };
        self.retrying(call).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &Value,
        idempotent: bool,
    ) -> Result<T, MlflowError> {
        let url = self.url(path, &[])?;
        let call = || async {
            let request = self.http.request(method.clone(), url.clone()).json(body);
            decode(self.authorised(request).send().await).await
        };
        if idempotent {
            self.retrying(call).await
        } else {
            call().await
        }
    }

    async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, MlflowError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, MlflowError>>,
    {
        let policy = RETRY.with_max_times(self.retries);
        call.retry(policy).when(MlflowError::is_transient).await
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, MlflowError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| MlflowError::Decode(e.to_string()))?;
        if query.is_empty() {
            return Ok(url);
        }
        Url::parse_with_params(url.as_str(), query).map_err(|e| MlflowError::Decode(e.to_string()))
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token.expose()),
            Auth::Basic { username, password } => {
                request.basic_auth(username, Some(password.expose()))
            }
        }
    }
}

fn string_field(value: &Value, field: &str) -> Result<String, MlflowError> {
    value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| MlflowError::Decode(format!("`{field}` missing")))
}

async fn decode<T: DeserializeOwned>(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, MlflowError> {
    let response = response.map_err(|e| MlflowError::Unavailable(e.without_url().to_string()))?;
    let response = check(response).await?;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| MlflowError::Unavailable(e.without_url().to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| MlflowError::Decode(e.to_string()))
}

/// Maps an error status to [`MlflowError`] (reading MLflow's `{error_code, message}`).
async fn check(response: reqwest::Response) -> Result<reqwest::Response, MlflowError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error_code"].as_str().unwrap_or("").to_owned();
    let message = body["message"]
        .as_str()
        .map(|m| m.chars().take(300).collect())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    if status == reqwest::StatusCode::NOT_FOUND || code == "RESOURCE_DOES_NOT_EXIST" {
        return Err(MlflowError::NotFound(message));
    }
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(MlflowError::Unavailable(format!(
            "HTTP {}: {message}",
            status.as_u16()
        )));
    }
    Err(MlflowError::Refused {
        status: status.as_u16(),
        code,
        message,
    })
}

#[cfg(test)]
mod tests;
