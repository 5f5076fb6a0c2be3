//! The layers of configuration: built-in defaults, then `config/{ENVIRONMENT}.toml`, then
//! environment variables (`.env` only in development). Later layers win.
//!
//! Every setting has one name, the environment variable of docs/design/configuration.md. A TOML
//! file may spell it flat (`api_port = 8001`) or in a section (`[api]` then `port = 8001`);
//! both flatten to `API_PORT`. Unknown keys in a file are errors (typos must not be silently
//! ignored); unknown environment variables are simply not ours.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use super::ConfigError;
use super::secret::redact_url_password;

/// How a variable's value must be shown to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// Shown as is.
    Plain,
    /// Never shown.
    Secret,
    /// A URL whose password part is hidden.
    Url,
}

/// A variable hokusai-serve reads.
#[derive(Debug)]
pub struct Variable {
    /// The environment variable's name, which is also its key in TOML files.
    pub name: &'static str,
    /// How to show it.
    pub sensitivity: Sensitivity,
}

const fn plain(name: &'static str) -> Variable {
    Variable {
        name,
        sensitivity: Sensitivity::Plain,
    }
}

const fn secret(name: &'static str) -> Variable {
    Variable {
        name,
        sensitivity: Sensitivity::Secret,
    }
}

const fn url(name: &'static str) -> Variable {
    Variable {
        name,
        sensitivity: Sensitivity::Url,
    }
}

/// Every variable (listed for operators in docs/operator-guide.md, "Configuration reference").
pub const VARIABLES: &[Variable] = &[
    plain("ENVIRONMENT"),
    plain("API_HOST"),
    plain("API_PORT"),
    url("DATABASE_URL"),
    plain("QUEUE_BACKEND"),
    url("AMQP_URL"),
    plain("SQS_QUEUE_URL"),
    plain("SQS_DLQ_URL"),
    secret("HUGGINGFACE_API_KEY"),
    plain("HUGGINGFACE_NAMESPACE"),
    plain("HUGGINGFACE_API_BASE"),
    plain("HUGGINGFACE_DEFAULT_VENDOR"),
    plain("HUGGINGFACE_DEFAULT_REGION"),
    plain("HUGGINGFACE_DEFAULT_INSTANCE_TYPE"),
    plain("HUGGINGFACE_DEFAULT_INSTANCE_SIZE"),
    plain("HUGGINGFACE_TIMEOUT"),
    plain("HUGGINGFACE_MAX_RETRIES"),
    plain("HOKUSAI_AUTH_SERVICE_URL"),
    plain("AUTH_BACKEND"),
    plain("AUTH_SERVICE_ID"),
    plain("AUTH_SERVICE_TIMEOUT"),
    plain("AUTH_CACHE_TTL_SECONDS"),
    plain("AUTH_NEGATIVE_CACHE_TTL_SECONDS"),
    plain("AUTH_STALE_IF_ERROR_SECONDS"),
    plain("TRUST_FORWARDED_FOR"),
    plain("TRUSTED_PROXY_HOPS"),
    plain("FAILED_AUTH_PER_IP_PER_MINUTE"),
    url("REDIS_URL"),
    plain("HTTP_PROVIDER_ALLOWED_HOSTS"),
    plain("REQUEST_TIMEOUT_SECONDS"),
    plain("MAX_CONCURRENT_REQUESTS"),
    plain("MAX_UPSTREAM_BODY_BYTES"),
    plain("MAX_UPSTREAM_CONNECTIONS_PER_HOST"),
    plain("MAX_REPLICAS_PER_DEPLOYMENT"),
    plain("AUTH_USAGE_REPORTING"),
    secret("HOKUSAI_DEV_API_KEY"),
    url("MLFLOW_TRACKING_URI"),
    secret("MLFLOW_TRACKING_TOKEN"),
    plain("MLFLOW_TRACKING_USERNAME"),
    secret("MLFLOW_TRACKING_PASSWORD"),
    secret("MLFLOW_WEBHOOK_SECRET"),
    plain("MLFLOW_RECONCILE_INTERVAL_SECONDS"),
    plain("MLFLOW_AUTO_DEPLOY"),
    plain("CLOUDWATCH_NAMESPACE"),
    plain("METRICS_CLOUDWATCH_ENABLED"),
    plain("CLOUDWATCH_FLUSH_SECONDS"),
    plain("LOG_FORMAT"),
    plain("RUST_LOG"),
    plain("LOG_PAYLOADS"),
    plain("LOG_PAYLOAD_MAX_BYTES"),
    plain("LOG_REDACT_FIELDS"),
    plain("COST_IDLE_HOURS"),
    plain("MAX_BODY_BYTES"),
    plain("PREDICT_TIMEOUT_SECONDS"),
    plain("STREAM_IDLE_TIMEOUT_SECONDS"),
    plain("ROLLOUT_STICKY"),
    plain("SCALE_UP_TIMEOUT_SECONDS"),
    plain("QUEUE_MAX_ATTEMPTS"),
    plain("QUEUE_LEASE_SECONDS"),
    plain("QUEUE_POLL_INTERVAL_SECONDS"),
    plain("WORKER_CONCURRENCY"),
    plain("WORKER_METRICS_PORT"),
    plain("DEPLOY_TIMEOUT_SECONDS"),
    plain("RETIRE_AFTER_SECONDS"),
    plain("STEP_TIMEOUT_SECONDS"),
    plain("DEPLOYMENT_RECONCILE_INTERVAL_SECONDS"),
    plain("LEADER_LEASE_SECONDS"),
    plain("ON_ENDPOINT_LOST"),
    plain("HEAL_ATTEMPTS_PER_HOUR"),
    plain("ORPHAN_GRACE_SECONDS"),
    plain("ORPHAN_SWEEP"),
    plain("COMMAND_STALL_SECONDS"),
    plain("RELAY_MAX_ATTEMPTS"),
    plain("RETENTION_DAYS"),
];

/// Looks a variable up by name.
pub fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built in.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// The `.env` file (development only).
    DotEnv,
    /// The process environment.
    Env,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::DotEnv => f.write_str(".env"),
            Origin::Env => f.write_str("environment"),
        }
    }
}

/// The merged layers: for each variable set anywhere, its winning value and origin.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl Sources {
    /// Sets `name` from `origin`, replacing what an earlier layer said.
    pub fn set(&mut self, name: &'static str, value: impl Into<String>, origin: Origin) {
        self.values.insert(name, (value.into(), origin));
    }

    /// The value of `name`, if any layer set it. Empty strings count as unset, as an
    /// operator who writes `HUGGINGFACE_API_KEY=` means "none".
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Where the winning value of `name` came from, if any layer set it.
    pub fn origin(&self, name: &str) -> Option<&Origin> {
        self.values.get(name).map(|(_, origin)| origin)
    }

    /// Every set variable with its value made safe to show, and its origin.
    pub fn redacted(&self) -> Vec<(&'static str, String, &Origin)> {
        self.values
            .iter()
            .map(|(name, (value, origin))| {
                let shown = match variable(name).map(|v| v.sensitivity) {
                    Some(Sensitivity::Secret) if !value.is_empty() => "[redacted]".to_owned(),
                    Some(Sensitivity::Url) => redact_url_password(value),
                    _ => value.clone(),
                };
                (*name, shown, origin)
            })
            .collect()
    }

    /// Adds the known variables found in `env` (process environment or `.env`).
    pub fn layer_env(&mut self, env: &HashMap<String, String>, origin: &Origin) {
        for var in VARIABLES {
            if let Some(value) = env.get(var.name) {
                self.set(var.name, value.clone(), origin.clone());
            }
        }
    }

    /// Adds a TOML file's settings. A missing file is not an error: files are optional.
    pub fn layer_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ConfigError::file(path, e.to_string())),
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::file(path, e.message().to_owned()))?;
        let mut flat = Vec::new();
        flatten("", &table, &mut flat).map_err(|reason| ConfigError::file(path, reason))?;
        for (key, value) in flat {
            let var = variable(&key)
                .ok_or_else(|| ConfigError::file(path, format!("unknown setting `{key}`")))?;
            self.set(var.name, value, Origin::File(path.to_owned()));
        }
        Ok(())
    }
}

fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut Vec<(String, String)>,
) -> Result<(), String> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.to_ascii_uppercase()
        } else {
            format!("{prefix}_{}", key.to_ascii_uppercase())
        };
        match value {
            toml::Value::Table(inner) => flatten(&name, inner, out)?,
            toml::Value::String(s) => out.push((name, s.clone())),
            toml::Value::Integer(i) => out.push((name, i.to_string())),
            toml::Value::Float(f) => out.push((name, f.to_string())),
            toml::Value::Boolean(b) => out.push((name, b.to_string())),
            toml::Value::Datetime(_) | toml::Value::Array(_) => {
                return Err(format!("`{name}` must be a string, number or boolean"));
            }
        }
    }
    Ok(())
}

/// Reads a `.env` file into a map; a missing file is an empty map.
pub fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    match dotenvy::from_path_iter(path) {
        Ok(iter) => iter
            .map(|item| item.map_err(|e| ConfigError::file(path, e.to_string())))
            .collect(),
        Err(dotenvy::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(HashMap::new())
        }
        Err(e) => Err(ConfigError::file(path, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_and_flat_keys_flatten_to_variable_names() {
        let table: toml::Table = "api_port = 9000\n[huggingface]\ndefault_vendor = \"gcp\"\n"
            .parse()
            .expect("valid toml");
        let mut out = Vec::new();
        flatten("", &table, &mut out).expect("flattens");
        out.sort();
        assert_eq!(
            out,
            vec![
                ("API_PORT".to_owned(), "9000".to_owned()),
                ("HUGGINGFACE_DEFAULT_VENDOR".to_owned(), "gcp".to_owned())
            ]
        );
    }

    #[test]
    fn secrets_and_url_passwords_are_redacted_for_display() {
        let mut sources = Sources::default();
        sources.set("HUGGINGFACE_API_KEY", "hf_secret", Origin::Env);
        sources.set("DATABASE_URL", "postgres://u:p@h/db", Origin::Env);
        sources.set("API_PORT", "8001", Origin::Default);
        let shown: Vec<_> = sources
            .redacted()
            .into_iter()
            .map(|(n, v, _)| (n, v))
            .collect();
        assert!(shown.contains(&("HUGGINGFACE_API_KEY", "[redacted]".to_owned())));
        assert!(shown.contains(&("DATABASE_URL", "postgres://u:[redacted]@h/db".to_owned())));
        assert!(shown.contains(&("API_PORT", "8001".to_owned())));
    }
}
