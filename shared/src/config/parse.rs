//! Built-in defaults and the typed parse of every variable.

use std::str::FromStr;
use std::time::Duration;

use super::sources::{Origin, Sources, VARIABLES};
use super::*;

/// The default sqlite database of development (`dev` points it into `--data-dir`).
pub const DEV_DATABASE_URL: &str = "sqlite://.hokusai/hokusai.db?mode=rwc";

/// The built-in layer. Some defaults depend on the environment (docs/design/configuration.md).
pub fn defaults(environment: Environment) -> Sources {
    let dev = environment == Environment::Development;
    let mut s = Sources::default();
    let mut d = |name: &'static str, value: &str| s.set(name, value, Origin::Default);
    d("API_HOST", "0.0.0.0");
    d("API_PORT", "8001");
    if dev {
        d("DATABASE_URL", DEV_DATABASE_URL);
    }
    d("QUEUE_BACKEND", "db");
    d("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    d(
        "HUGGINGFACE_API_BASE",
        "https://api.endpoints.huggingface.cloud",
    );
    d("HUGGINGFACE_DEFAULT_VENDOR", "aws");
    d("HUGGINGFACE_DEFAULT_REGION", "us-east-1");
    d("HUGGINGFACE_DEFAULT_INSTANCE_TYPE", "intel-spr");
    d("HUGGINGFACE_DEFAULT_INSTANCE_SIZE", "x2");
    d("HUGGINGFACE_TIMEOUT", "30");
    d("HUGGINGFACE_MAX_RETRIES", "5");
    d("HOKUSAI_AUTH_SERVICE_URL", "https://auth.hokus.ai");
    d("AUTH_BACKEND", if dev { "static" } else { "hokusai" });
    d("AUTH_SERVICE_ID", "platform");
    d("AUTH_SERVICE_TIMEOUT", "5");
    d("AUTH_CACHE_TTL_SECONDS", "300");
    d("AUTH_NEGATIVE_CACHE_TTL_SECONDS", "30");
    d("AUTH_STALE_IF_ERROR_SECONDS", "0");
    d("TRUST_FORWARDED_FOR", "false");
    d("TRUSTED_PROXY_HOPS", "1");
    d("FAILED_AUTH_PER_IP_PER_MINUTE", "120");
    d(
        "HTTP_PROVIDER_ALLOWED_HOSTS",
        if dev {
            crate::provider::egress::AllowList::DEVELOPMENT_DEFAULT
        } else {
            ""
        },
    );
    d("REQUEST_TIMEOUT_SECONDS", "30");
    d("MAX_CONCURRENT_REQUESTS", "4096");
    d("MAX_UPSTREAM_BODY_BYTES", "10485760");
    d("MAX_UPSTREAM_CONNECTIONS_PER_HOST", "128");
    d("MAX_REPLICAS_PER_DEPLOYMENT", "10");
    d("AUTH_USAGE_REPORTING", "false");
    d("MLFLOW_RECONCILE_INTERVAL_SECONDS", "300");
    d("MLFLOW_AUTO_DEPLOY", "tagged");
    d("CLOUDWATCH_NAMESPACE", "Hokusai/API");
    d("METRICS_CLOUDWATCH_ENABLED", "false");
    d("CLOUDWATCH_FLUSH_SECONDS", "60");
    d("LOG_FORMAT", if dev { "pretty" } else { "json" });
    d("RUST_LOG", "info,sqlx=warn,sea_orm=warn");
    d("LOG_PAYLOADS", "false");
    d("LOG_PAYLOAD_MAX_BYTES", "2048");
    d(
        "LOG_REDACT_FIELDS",
        "password,token,secret,api_key,apikey,authorization",
    );
    d("COST_IDLE_HOURS", "24");
    d("MAX_BODY_BYTES", "10485760");
    d("PREDICT_TIMEOUT_SECONDS", "25");
    d("STREAM_IDLE_TIMEOUT_SECONDS", "60");
    d("ROLLOUT_STICKY", "false");
    d("SCALE_UP_TIMEOUT_SECONDS", "60");
    d("QUEUE_MAX_ATTEMPTS", "8");
    d("QUEUE_LEASE_SECONDS", "30");
    d("QUEUE_POLL_INTERVAL_SECONDS", "1");
    d("WORKER_CONCURRENCY", "16");
    d("WORKER_METRICS_PORT", "9091");
    d("DEPLOY_TIMEOUT_SECONDS", "1800");
    d("RETIRE_AFTER_SECONDS", "600");
    d("STEP_TIMEOUT_SECONDS", "60");
    d("DEPLOYMENT_RECONCILE_INTERVAL_SECONDS", "30");
    d("LEADER_LEASE_SECONDS", "15");
    d("ON_ENDPOINT_LOST", "redeploy");
    d("HEAL_ATTEMPTS_PER_HOUR", "3");
    d("ORPHAN_GRACE_SECONDS", "600");
    d("ORPHAN_SWEEP", "delete");
    d("COMMAND_STALL_SECONDS", "120");
    d("RELAY_MAX_ATTEMPTS", "10");
    d("RETENTION_DAYS", "14");
    s
}

/// Reads typed values out of the merged layers, naming the variable on every error.
struct Reader<'a>(&'a Sources);

impl Reader<'_> {
    fn name(name: &str) -> &'static str {
        VARIABLES
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.name)
            .expect("every variable read is declared in sources::VARIABLES")
    }

    fn opt_string(&self, name: &str) -> Option<String> {
        self.0.get(name).map(str::to_owned)
    }

    fn string(&self, name: &str) -> Result<String, ConfigError> {
        self.opt_string(name)
            .ok_or_else(|| ConfigError::invalid(Self::name(name), "is required"))
    }

    fn opt_secret(&self, name: &str) -> Option<Secret> {
        self.0.get(name).map(Secret::new)
    }

    fn parsed<T: FromStr>(&self, name: &str, what: &str) -> Result<T, ConfigError> {
        let raw = self.string(name)?;
        raw.trim()
            .parse()
            .map_err(|_| ConfigError::invalid(Self::name(name), format!("`{raw}` is not {what}")))
    }

    fn choice<T: FromStr<Err = String>>(&self, name: &str) -> Result<T, ConfigError> {
        self.string(name)?
            .trim()
            .parse()
            .map_err(|r| ConfigError::invalid(Self::name(name), r))
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.string(name)?.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            other => Err(ConfigError::invalid(
                Self::name(name),
                format!("`{other}` is not a boolean (true or false)"),
            )),
        }
    }

    fn seconds(&self, name: &str, min: u64) -> Result<Duration, ConfigError> {
        let n: u64 = self.parsed(name, "a whole number of seconds")?;
        if n < min {
            return Err(ConfigError::invalid(
                Self::name(name),
                format!("must be at least {min}"),
            ));
        }
        Ok(Duration::from_secs(n))
    }

    /// A duration in seconds where fractions are allowed (`0.25`), within `[min, max]`.
    fn fractional_seconds(&self, name: &str, min: f64, max: f64) -> Result<Duration, ConfigError> {
        let n: f64 = self.parsed(name, "a number of seconds (fractions allowed)")?;
        if !(min..=max).contains(&n) {
            return Err(ConfigError::invalid(
                Self::name(name),
                format!("must be between {min} and {max}"),
            ));
        }
        Ok(Duration::from_secs_f64(n))
    }

    fn positive<T: FromStr + PartialOrd + From<u8>>(&self, name: &str) -> Result<T, ConfigError> {
        let n: T = self.parsed(name, "a whole number")?;
        if n < T::from(1) {
            return Err(ConfigError::invalid(Self::name(name), "must be at least 1"));
        }
        Ok(n)
    }

    fn url(&self, name: &str, schemes: &[&str]) -> Result<String, ConfigError> {
        let raw = self.string(name)?;
        check_url(name, &raw, schemes)?;
        Ok(raw.trim_end_matches('/').to_owned())
    }

    fn opt_url(&self, name: &str, schemes: &[&str]) -> Result<Option<String>, ConfigError> {
        match self.0.get(name) {
            Some(_) => self.url(name, schemes).map(Some),
            None => Ok(None),
        }
    }
}

fn check_url(name: &str, raw: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let ok = schemes.iter().any(|s| {
        raw.strip_prefix(s)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|r| !r.is_empty())
    });
    if ok {
        Ok(())
    } else {
        // The value may hold credentials: say what is expected, not what was given.
        Err(ConfigError::invalid(
            Reader::name(name),
            format!("must be a URL starting with {}://", schemes.join("://, ")),
        ))
    }
}

fn log_filter(r: &Reader<'_>) -> Result<String, ConfigError> {
    let raw = r.string("RUST_LOG")?;
    tracing_subscriber::EnvFilter::try_new(&raw).map_err(|e| {
        ConfigError::invalid("RUST_LOG", format!("`{raw}` is not a valid filter: {e}"))
    })?;
    Ok(raw)
}

fn allowed_hosts(r: &Reader<'_>) -> Result<crate::provider::egress::AllowList, ConfigError> {
    let raw = r
        .opt_string("HTTP_PROVIDER_ALLOWED_HOSTS")
        .unwrap_or_default();
    crate::provider::egress::AllowList::parse(&raw)
        .map_err(|why| ConfigError::invalid("HTTP_PROVIDER_ALLOWED_HOSTS", why))
}

/// Parses every variable.
pub fn settings(environment: Environment, s: &Sources) -> Result<Settings, ConfigError> {
    let r = Reader(s);
    let database_url = r.string("DATABASE_URL")?;
    check_url(
        "DATABASE_URL",
        &database_url,
        &["sqlite", "postgres", "postgresql"],
    )?;
    Ok(Settings {
        environment,
        api: ApiSettings {
            host: r.string("API_HOST")?,
            port: r.parsed("API_PORT", "a port number (0-65535)")?,
            max_body_bytes: r.positive("MAX_BODY_BYTES")?,
            predict_timeout: r.seconds("PREDICT_TIMEOUT_SECONDS", 1)?,
            stream_idle_timeout: r.seconds("STREAM_IDLE_TIMEOUT_SECONDS", 1)?,
            rollout_sticky: r.bool("ROLLOUT_STICKY")?,
            scale_up_timeout: r.seconds("SCALE_UP_TIMEOUT_SECONDS", 0)?,
            routing_ttl: Duration::from_secs(2),
            request_timeout: r.seconds("REQUEST_TIMEOUT_SECONDS", 1)?,
            max_concurrent_requests: r.positive("MAX_CONCURRENT_REQUESTS")?,
            max_upstream_body_bytes: r.positive("MAX_UPSTREAM_BODY_BYTES")?,
            max_upstream_connections_per_host: r.positive("MAX_UPSTREAM_CONNECTIONS_PER_HOST")?,
            max_replicas_per_deployment: r.positive("MAX_REPLICAS_PER_DEPLOYMENT")?,
            redis_url: r.opt_url("REDIS_URL", &["redis"])?.map(Secret::new),
            failed_auth_per_ip_per_minute: r
                .parsed("FAILED_AUTH_PER_IP_PER_MINUTE", "a whole number")?,
        },
        database_url: Secret::new(database_url),
        queue: QueueSettings {
            backend: r.choice("QUEUE_BACKEND")?,
            amqp_url: Secret::new(r.url("AMQP_URL", &["amqp", "amqps"])?),
            sqs_queue_url: r.opt_url("SQS_QUEUE_URL", &["http", "https"])?,
            sqs_dlq_url: r.opt_url("SQS_DLQ_URL", &["http", "https"])?,
            max_attempts: r.positive("QUEUE_MAX_ATTEMPTS")?,
            lease: r.seconds("QUEUE_LEASE_SECONDS", 1)?,
            poll_interval: r.fractional_seconds("QUEUE_POLL_INTERVAL_SECONDS", 0.01, 60.0)?,
        },
        worker: WorkerSettings {
            concurrency: r.positive("WORKER_CONCURRENCY")?,
            metrics_port: r.parsed("WORKER_METRICS_PORT", "a port number (0-65535)")?,
            deploy_timeout: r.seconds("DEPLOY_TIMEOUT_SECONDS", 1)?,
            retire_after: r.seconds("RETIRE_AFTER_SECONDS", 0)?,
            status_poll_initial: Duration::from_secs(2),
            status_poll_max: Duration::from_secs(30),
            step_timeout: r.seconds("STEP_TIMEOUT_SECONDS", 1)?,
            reconcile: ReconcileSettings {
                interval: r.seconds("DEPLOYMENT_RECONCILE_INTERVAL_SECONDS", 1)?,
                leader_lease: r.seconds("LEADER_LEASE_SECONDS", 1)?,
                on_endpoint_lost: r.choice("ON_ENDPOINT_LOST")?,
                heal_attempts_per_hour: r.parsed("HEAL_ATTEMPTS_PER_HOUR", "a whole number")?,
                orphan_grace: r.seconds("ORPHAN_GRACE_SECONDS", 0)?,
                orphan_sweep: r.choice("ORPHAN_SWEEP")?,
                command_stall: r.seconds("COMMAND_STALL_SECONDS", 1)?,
            },
            relay_max_attempts: r.positive("RELAY_MAX_ATTEMPTS")?,
            retention: Duration::from_secs(
                u64::from(r.positive::<u32>("RETENTION_DAYS")?) * 86_400,
            ),
        },
        huggingface: HuggingFaceSettings {
            api_key: r.opt_secret("HUGGINGFACE_API_KEY"),
            namespace: r.opt_string("HUGGINGFACE_NAMESPACE"),
            api_base: r.url("HUGGINGFACE_API_BASE", &["http", "https"])?,
            default_vendor: r.string("HUGGINGFACE_DEFAULT_VENDOR")?,
            default_region: r.string("HUGGINGFACE_DEFAULT_REGION")?,
            default_instance_type: r.string("HUGGINGFACE_DEFAULT_INSTANCE_TYPE")?,
            default_instance_size: r.string("HUGGINGFACE_DEFAULT_INSTANCE_SIZE")?,
            timeout: r.seconds("HUGGINGFACE_TIMEOUT", 1)?,
            max_retries: r.parsed("HUGGINGFACE_MAX_RETRIES", "a whole number")?,
        },
        auth: AuthSettings {
            backend: r.choice("AUTH_BACKEND")?,
            service_url: r.url("HOKUSAI_AUTH_SERVICE_URL", &["http", "https"])?,
            service_id: r.string("AUTH_SERVICE_ID")?,
            service_timeout: r.seconds("AUTH_SERVICE_TIMEOUT", 1)?,
            cache_ttl: r.seconds("AUTH_CACHE_TTL_SECONDS", 0)?,
            negative_cache_ttl: r.seconds("AUTH_NEGATIVE_CACHE_TTL_SECONDS", 0)?,
            stale_if_error: r.seconds("AUTH_STALE_IF_ERROR_SECONDS", 0)?,
            trust_forwarded_for: r.bool("TRUST_FORWARDED_FOR")?,
            trusted_proxy_hops: r.positive("TRUSTED_PROXY_HOPS")?,
            usage_reporting: r.bool("AUTH_USAGE_REPORTING")?,
            dev_api_key: r.opt_secret("HOKUSAI_DEV_API_KEY"),
        },
        mlflow: MlflowSettings {
            tracking_uri: r.opt_url("MLFLOW_TRACKING_URI", &["http", "https"])?,
            tracking_token: r.opt_secret("MLFLOW_TRACKING_TOKEN"),
            tracking_username: r.opt_string("MLFLOW_TRACKING_USERNAME"),
            tracking_password: r.opt_secret("MLFLOW_TRACKING_PASSWORD"),
            webhook_secret: r.opt_secret("MLFLOW_WEBHOOK_SECRET"),
            reconcile_interval: r.seconds("MLFLOW_RECONCILE_INTERVAL_SECONDS", 1)?,
            auto_deploy: r.choice("MLFLOW_AUTO_DEPLOY")?,
        },
        telemetry: TelemetrySettings {
            log_format: r.choice("LOG_FORMAT")?,
            log_filter: log_filter(&r)?,
            log_payloads: r.bool("LOG_PAYLOADS")?,
            cloudwatch_namespace: r.string("CLOUDWATCH_NAMESPACE")?,
            cloudwatch_enabled: r.bool("METRICS_CLOUDWATCH_ENABLED")?,
            cloudwatch_flush: r.seconds("CLOUDWATCH_FLUSH_SECONDS", 1)?,
            log_payload_max_bytes: r.positive("LOG_PAYLOAD_MAX_BYTES")?,
            log_redact_fields: r
                .string("LOG_REDACT_FIELDS")?
                .split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .filter(|f| !f.is_empty())
                .collect(),
            idle_after: Duration::from_secs(r.positive::<u64>("COST_IDLE_HOURS")? * 3600),
        },
        http_provider_allowed_hosts: allowed_hosts(&r)?,
    })
}
