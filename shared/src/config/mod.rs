//! Typed configuration of hokusai-serve (docs/design/configuration.md).
//!
//! [`Settings::load`] merges the layers of [`sources`] and parses every variable once into
//! typed fields; an invalid value is a [`ConfigError`] naming the variable and why. Nothing
//! else in the project reads the process environment.

mod secret;
pub mod sources;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use secret::{Secret, redact_url_password};
use sources::{Origin, Sources};

/// A configuration problem, shown to the operator as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value we cannot use.
    #[error("{variable}: {reason}")]
    Invalid {
        /// The variable's name.
        variable: &'static str,
        /// Why (never contains a secret value).
        reason: String,
    },
    /// A configuration file cannot be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(variable: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            variable,
            reason: reason.into(),
        }
    }

    fn file(path: &Path, reason: impl Into<String>) -> Self {
        Self::File {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

/// The deployment environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// A developer's machine: `.env` is read, the emulator and static keys are allowed.
    Development,
    /// Pre-production.
    Staging,
    /// Production: refuses static keys and the HF emulator.
    Production,
}

impl Environment {
    /// The lowercase name, as in `config/{name}.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "development" => Ok(Self::Development),
            "staging" => Ok(Self::Staging),
            "production" => Ok(Self::Production),
            other => Err(format!(
                "`{other}` is not one of development, staging, production"
            )),
        }
    }
}

/// Which queue carries deployment commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueBackend {
    /// Rows in the application database (the embedded default).
    Db,
    /// RabbitMQ through lapin.
    RabbitMq,
    /// AWS SQS.
    Sqs,
}

impl FromStr for QueueBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "db" => Ok(Self::Db),
            "rabbitmq" => Ok(Self::RabbitMq),
            "sqs" => Ok(Self::Sqs),
            other => Err(format!("`{other}` is not one of db, rabbitmq, sqs")),
        }
    }
}

/// How API keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthBackend {
    /// auth.hokus.ai validation.
    Hokusai,
    /// Keys from configuration (development and tests only).
    Static,
}

impl FromStr for AuthBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hokusai" => Ok(Self::Hokusai),
            "static" => Ok(Self::Static),
            other => Err(format!("`{other}` is not one of hokusai, static")),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Pretty,
    /// One JSON object per line, for CloudWatch Logs.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is not one of pretty, json")),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// development, staging or production.
    pub environment: Environment,
    /// HTTP listener and request limits.
    pub api: ApiSettings,
    /// `DATABASE_URL`.
    pub database_url: Secret,
    /// Queue backend and its connection details.
    pub queue: QueueSettings,
    /// Worker behaviour.
    pub worker: WorkerSettings,
    /// HuggingFace Inference Endpoints.
    pub huggingface: HuggingFaceSettings,
    /// API key validation.
    pub auth: AuthSettings,
    /// MLflow REST and webhooks.
    pub mlflow: MlflowSettings,
    /// Logs and metrics.
    pub telemetry: TelemetrySettings,
    /// `HTTP_PROVIDER_ALLOWED_HOSTS`: where the `http` provider may connect (empty: the
    /// provider is disabled).
    pub http_provider_allowed_hosts: crate::provider::egress::AllowList,
}

/// HTTP listener and request limits.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `API_HOST`.
    pub host: String,
    /// `API_PORT` (0 picks a free port).
    pub port: u16,
    /// `MAX_BODY_BYTES`: larger bodies get 413.
    pub max_body_bytes: usize,
    /// `PREDICT_TIMEOUT_SECONDS`: upstream timeout of a prediction.
    pub predict_timeout: Duration,
    /// `STREAM_IDLE_TIMEOUT_SECONDS`: the longest wait between two chunks of a streamed
    /// answer (OpenAI-compatible routes); a stream has no total bound.
    pub stream_idle_timeout: Duration,
    /// `ROLLOUT_STICKY`: during a canary rollout, route each API key always to the same
    /// version (by a hash of its key id) instead of drawing per request.
    pub rollout_sticky: bool,
    /// `SCALE_UP_TIMEOUT_SECONDS`: sent as `X-Scale-Up-Timeout` to scaled-to-zero endpoints.
    pub scale_up_timeout: Duration,
    /// How long the predict path trusts its in-memory view of a model's active deployment
    /// (a deploy or rollback is visible within it). Not an environment variable.
    pub routing_ttl: Duration,
    /// `REQUEST_TIMEOUT_SECONDS`: the longest a non-predict request may take (body included).
    pub request_timeout: Duration,
    /// `MAX_CONCURRENT_REQUESTS`: requests served at once; past it 503 `OVERLOADED`.
    pub max_concurrent_requests: usize,
    /// `MAX_UPSTREAM_BODY_BYTES`: the largest answer read from a model endpoint (502 past it).
    pub max_upstream_body_bytes: usize,
    /// `MAX_UPSTREAM_CONNECTIONS_PER_HOST`: predictions in flight to one endpoint host, each
    /// on a connection of its own; past it a prediction waits for one, within its timeout.
    pub max_upstream_connections_per_host: usize,
    /// `MAX_REPLICAS_PER_DEPLOYMENT`: the largest `scaling.max_replica` a deploy may ask for.
    pub max_replicas_per_deployment: u32,
    /// `REDIS_URL`: where per-key rate limits are shared between API processes (`None`:
    /// in-process limits).
    pub redis_url: Option<Secret>,
    /// `FAILED_AUTH_PER_IP_PER_MINUTE`: failed authentications one client IP may make per
    /// minute before it gets 429 without an auth-service call (0: no limit).
    pub failed_auth_per_ip_per_minute: u32,
}

/// Queue backend and its connection details.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `QUEUE_BACKEND`.
    pub backend: QueueBackend,
    /// `AMQP_URL`.
    pub amqp_url: Secret,
    /// `SQS_QUEUE_URL`.
    pub sqs_queue_url: Option<String>,
    /// `SQS_DLQ_URL`.
    pub sqs_dlq_url: Option<String>,
    /// `QUEUE_MAX_ATTEMPTS`: dead-letter threshold.
    pub max_attempts: u32,
    /// `QUEUE_LEASE_SECONDS`: how long a taken message stays invisible to other consumers
    /// (db lease, SQS visibility timeout) before a crashed consumer's message returns.
    pub lease: Duration,
    /// `QUEUE_POLL_INTERVAL_SECONDS` (fractions allowed): how often an idle consumer of the
    /// embedded queue looks for rows when no wake-up arrived (the fallback of
    /// LISTEN/NOTIFY and of the in-process wake-up).
    pub poll_interval: Duration,
}

/// Worker behaviour.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `WORKER_CONCURRENCY`: handlers per worker process.
    pub concurrency: usize,
    /// `WORKER_METRICS_PORT`: where the worker serves `/metrics` (0 picks a free port).
    pub metrics_port: u16,
    /// `DEPLOY_TIMEOUT_SECONDS`: give up provisioning and roll back.
    pub deploy_timeout: Duration,
    /// `RETIRE_AFTER_SECONDS`: how long a replaced version keeps running for instant rollback.
    pub retire_after: Duration,
    /// First delay between provider status polls while an endpoint provisions (doubles up
    /// to `status_poll_max`). Not an environment variable; tests shorten it.
    pub status_poll_initial: Duration,
    /// Longest delay between status polls.
    pub status_poll_max: Duration,
    /// `STEP_TIMEOUT_SECONDS`: the longest one saga step may take, its provider client's
    /// retries included; past it the step is abandoned and its command retried later.
    pub step_timeout: Duration,
    /// The reconciler (docs/architecture.md, "The reconciler").
    pub reconcile: ReconcileSettings,
    /// `RELAY_MAX_ATTEMPTS`: failed publishes of one outbox row before it is parked.
    pub relay_max_attempts: u32,
    /// `RETENTION_DAYS`: published outbox rows, processed messages, MLflow deliveries and
    /// events, and the measurements of rollouts ended longer ago than this are pruned by the
    /// leader.
    pub retention: Duration,
}

/// The level-triggered reconciler and its leader lease.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    /// `DEPLOYMENT_RECONCILE_INTERVAL_SECONDS`: time between two passes.
    pub interval: Duration,
    /// `LEADER_LEASE_SECONDS`: how long a leader's lease lasts without renewal.
    pub leader_lease: Duration,
    /// `ON_ENDPOINT_LOST`: what a pass does with a deployment whose endpoint is gone.
    pub on_endpoint_lost: OnEndpointLost,
    /// `HEAL_ATTEMPTS_PER_HOUR`: replacement deployments per model and hour.
    pub heal_attempts_per_hour: u32,
    /// `ORPHAN_GRACE_SECONDS`: age before an endpoint nobody owns is swept.
    pub orphan_grace: Duration,
    /// `ORPHAN_SWEEP`: delete orphans, or only report them.
    pub orphan_sweep: OrphanSweep,
    /// `COMMAND_STALL_SECONDS`: a non-terminal deployment with no activity for this long and
    /// no command in the queue has lost its command; the pass reissues it.
    pub command_stall: Duration,
}

/// `ON_ENDPOINT_LOST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEndpointLost {
    /// A new deployment of the same version replaces the lost one.
    Redeploy,
    /// The lost deployment ends `failed`; nothing replaces it.
    Fail,
}

impl FromStr for OnEndpointLost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redeploy" => Ok(Self::Redeploy),
            "fail" => Ok(Self::Fail),
            other => Err(format!("`{other}` is not one of redeploy, fail")),
        }
    }
}

/// `ORPHAN_SWEEP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanSweep {
    /// Delete orphaned endpoints past their grace period.
    Delete,
    /// Only log and count them.
    Report,
}

impl FromStr for OrphanSweep {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "delete" => Ok(Self::Delete),
            "report" => Ok(Self::Report),
            other => Err(format!("`{other}` is not one of delete, report")),
        }
    }
}

/// HuggingFace Inference Endpoints.
#[derive(Debug, Clone)]
pub struct HuggingFaceSettings {
    /// `HUGGINGFACE_API_KEY`; `None` means the emulator (development only).
    pub api_key: Option<Secret>,
    /// `HUGGINGFACE_NAMESPACE`: the user or organisation owning the endpoints.
    pub namespace: Option<String>,
    /// `HUGGINGFACE_API_BASE`.
    pub api_base: String,
    /// `HUGGINGFACE_DEFAULT_VENDOR`.
    pub default_vendor: String,
    /// `HUGGINGFACE_DEFAULT_REGION`.
    pub default_region: String,
    /// `HUGGINGFACE_DEFAULT_INSTANCE_TYPE`.
    pub default_instance_type: String,
    /// `HUGGINGFACE_DEFAULT_INSTANCE_SIZE`.
    pub default_instance_size: String,
    /// `HUGGINGFACE_TIMEOUT`: per call.
    pub timeout: Duration,
    /// `HUGGINGFACE_MAX_RETRIES`.
    pub max_retries: u32,
}

/// API key validation.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `AUTH_BACKEND`.
    pub backend: AuthBackend,
    /// `HOKUSAI_AUTH_SERVICE_URL`.
    pub service_url: String,
    /// `AUTH_SERVICE_ID`.
    pub service_id: String,
    /// `AUTH_SERVICE_TIMEOUT`.
    pub service_timeout: Duration,
    /// `AUTH_CACHE_TTL_SECONDS`.
    pub cache_ttl: Duration,
    /// `AUTH_NEGATIVE_CACHE_TTL_SECONDS`.
    pub negative_cache_ttl: Duration,
    /// `AUTH_STALE_IF_ERROR_SECONDS` (0 = fail closed): how long past its positive TTL a
    /// key last seen valid keeps working while the auth service cannot answer.
    pub stale_if_error: Duration,
    /// `TRUST_FORWARDED_FOR`: take the client IP from `X-Forwarded-For` (only behind a load
    /// balancer that appends to it, see `trusted_proxy_hops`); otherwise the TCP peer.
    pub trust_forwarded_for: bool,
    /// `TRUSTED_PROXY_HOPS`: how many proxies in front of us append to `X-Forwarded-For`;
    /// the client is the entry the outermost one appended (that many from the right).
    pub trusted_proxy_hops: usize,
    /// `AUTH_USAGE_REPORTING`: report each authenticated request to the auth service's
    /// usage route, after the response and off the request path.
    pub usage_reporting: bool,
    /// `HOKUSAI_DEV_API_KEY`: the static key of `dev` (generated when unset).
    pub dev_api_key: Option<Secret>,
}

/// MLflow REST and webhooks.
#[derive(Debug, Clone)]
pub struct MlflowSettings {
    /// `MLFLOW_TRACKING_URI`.
    pub tracking_uri: Option<String>,
    /// `MLFLOW_TRACKING_TOKEN` (Bearer).
    pub tracking_token: Option<Secret>,
    /// `MLFLOW_TRACKING_USERNAME` (Basic).
    pub tracking_username: Option<String>,
    /// `MLFLOW_TRACKING_PASSWORD` (Basic).
    pub tracking_password: Option<Secret>,
    /// `MLFLOW_WEBHOOK_SECRET`: HMAC key of the webhook signature.
    pub webhook_secret: Option<Secret>,
    /// `MLFLOW_RECONCILE_INTERVAL_SECONDS`.
    pub reconcile_interval: Duration,
    /// `MLFLOW_AUTO_DEPLOY`: which new model versions deploy themselves.
    pub auto_deploy: AutoDeploy,
}

/// Which newly created MLflow model versions are deployed (`MLFLOW_AUTO_DEPLOY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoDeploy {
    /// Only versions whose version or registered model carries `hokusai.deploy=true`.
    Tagged,
    /// Every new version.
    All,
}

impl FromStr for AutoDeploy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tagged" => Ok(Self::Tagged),
            "all" => Ok(Self::All),
            other => Err(format!("`{other}` is not one of tagged, all")),
        }
    }
}

/// Logs and metrics.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: a tracing filter.
    pub log_filter: String,
    /// `LOG_PAYLOADS`: log (truncated) request bodies.
    pub log_payloads: bool,
    /// `CLOUDWATCH_NAMESPACE`.
    pub cloudwatch_namespace: String,
    /// `METRICS_CLOUDWATCH_ENABLED`: write the CloudWatch metrics (Embedded Metric Format
    /// lines on stdout).
    pub cloudwatch_enabled: bool,
    /// `CLOUDWATCH_FLUSH_SECONDS`: how long CloudWatch figures are aggregated per line.
    pub cloudwatch_flush: Duration,
    /// `LOG_PAYLOAD_MAX_BYTES`: payloads are truncated to this many bytes when logged.
    pub log_payload_max_bytes: usize,
    /// `LOG_REDACT_FIELDS`: JSON object keys whose values are replaced by `[redacted]` in
    /// logged payloads (lower case, matched case-insensitively).
    pub log_redact_fields: Vec<String>,
    /// `COST_IDLE_HOURS`: a billing deployment without a prediction for this long is idle.
    pub idle_after: Duration,
}

mod parse;

/// Where to look for configuration.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The folder holding `{ENVIRONMENT}.toml` (default `config`).
    pub config_dir: PathBuf,
    /// The `.env` file read in development (default `.env`).
    pub dotenv: PathBuf,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            config_dir: PathBuf::from("config"),
            dotenv: PathBuf::from(".env"),
        }
    }
}

impl Settings {
    /// Loads from the process environment and the files in the current directory.
    pub fn load() -> Result<(Self, Sources), ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_from(&env, &LoadOptions::default())
    }

    /// Loads from an explicit environment (tests use this; nothing global is read).
    pub fn load_from(
        env: &HashMap<String, String>,
        options: &LoadOptions,
    ) -> Result<(Self, Sources), ConfigError> {
        let environment: Environment = match env.get("ENVIRONMENT").filter(|v| !v.is_empty()) {
            Some(v) => v
                .parse()
                .map_err(|r| ConfigError::invalid("ENVIRONMENT", r))?,
            None => Environment::Development,
        };
        let mut sources = parse::defaults(environment);
        sources.layer_file(
            &options
                .config_dir
                .join(format!("{}.toml", environment.as_str())),
        )?;
        if environment == Environment::Development {
            sources.layer_env(&sources::read_dotenv(&options.dotenv)?, &Origin::DotEnv);
        }
        sources.layer_env(env, &Origin::Env);
        sources.set("ENVIRONMENT", environment.as_str(), origin_of(env));
        let settings = parse::settings(environment, &sources)?;
        settings.check_policy()?;
        Ok((settings, sources))
    }

    /// What production refuses in the serving roles (`api`, `worker`; `check-config` checks
    /// it too): static keys and the HF emulator. One-off tasks such as `migrate` and `dlq`
    /// do not need the HF token or an auth backend, so they do not call this.
    pub fn check_serving_policy(&self) -> Result<(), ConfigError> {
        if self.environment == Environment::Production {
            if self.auth.backend == AuthBackend::Static {
                return Err(ConfigError::invalid(
                    "AUTH_BACKEND",
                    "`static` keys are refused in production; use `hokusai`",
                ));
            }
            if self.auth.backend == AuthBackend::Hokusai
                && !secure_or_loopback(&self.auth.service_url)
            {
                return Err(ConfigError::invalid(
                    "HOKUSAI_AUTH_SERVICE_URL",
                    "must be https:// in production (http:// only to a loopback address)",
                ));
            }
            if self.huggingface.api_key.is_none() {
                return Err(ConfigError::invalid(
                    "HUGGINGFACE_API_KEY",
                    "required in production (without it the HF emulator would be used)",
                ));
            }
        }
        Ok(())
    }

    /// Rules that span variables and hold for every command: what a backend needs.
    fn check_policy(&self) -> Result<(), ConfigError> {
        if self.queue.backend == QueueBackend::Sqs {
            if self.queue.sqs_queue_url.is_none() {
                return Err(ConfigError::invalid(
                    "SQS_QUEUE_URL",
                    "required when QUEUE_BACKEND=sqs",
                ));
            }
            if self.queue.sqs_dlq_url.is_none() {
                return Err(ConfigError::invalid(
                    "SQS_DLQ_URL",
                    "required when QUEUE_BACKEND=sqs",
                ));
            }
        }
        Ok(())
    }

    /// Whether the HF emulator stands in for HuggingFace (no token configured).
    pub fn uses_hf_emulator(&self) -> bool {
        self.huggingface.api_key.is_none()
    }
}

/// Whether `url` is https, or http to a loopback host.
fn secure_or_loopback(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    match (parsed.scheme(), parsed.host()) {
        ("https", _) => true,
        ("http", Some(url::Host::Domain(d))) => d == "localhost",
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

fn origin_of(env: &HashMap<String, String>) -> Origin {
    if env.get("ENVIRONMENT").is_some_and(|v| !v.is_empty()) {
        Origin::Env
    } else {
        Origin::Default
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
