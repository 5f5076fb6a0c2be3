use std::collections::HashMap;
use std::path::PathBuf;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Options pointing at a fresh folder, so the developer's own files never leak in.
fn isolated(files: &[(&str, &str)]) -> (LoadOptions, PathBuf) {
    let dir = std::env::temp_dir().join(format!("hokusai-config-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write file");
    }
    (
        LoadOptions {
            config_dir: dir.clone(),
            dotenv: dir.join(".env"),
        },
        dir,
    )
}

fn error_of(pairs: &[(&str, &str)]) -> String {
    let (options, _dir) = isolated(&[]);
    Settings::load_from(&env(pairs), &options)
        .and_then(|(settings, _)| settings.check_serving_policy())
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn development_defaults_need_no_configuration() {
    let (options, _dir) = isolated(&[]);
    let (settings, _) = Settings::load_from(&env(&[]), &options).expect("defaults are valid");
    assert_eq!(settings.environment, Environment::Development);
    assert_eq!(settings.api.port, 8001);
    assert_eq!(settings.queue.backend, QueueBackend::Db);
    assert_eq!(settings.auth.backend, AuthBackend::Static);
    assert_eq!(settings.telemetry.log_format, LogFormat::Pretty);
    assert_eq!(settings.database_url.expose(), parse::DEV_DATABASE_URL);
    assert_eq!(settings.worker.deploy_timeout, Duration::from_secs(1800));
    assert!(settings.uses_hf_emulator());
}

#[test]
fn bad_values_name_the_variable_and_the_reason() {
    assert_eq!(
        error_of(&[("QUEUE_BACKEND", "kafka")]),
        "QUEUE_BACKEND: `kafka` is not one of db, rabbitmq, sqs"
    );
    assert_eq!(
        error_of(&[("API_PORT", "abc")]),
        "API_PORT: `abc` is not a port number (0-65535)"
    );
    assert_eq!(
        error_of(&[("API_PORT", "70000")]),
        "API_PORT: `70000` is not a port number (0-65535)"
    );
    assert_eq!(
        error_of(&[("WORKER_CONCURRENCY", "0")]),
        "WORKER_CONCURRENCY: must be at least 1"
    );
    assert_eq!(
        error_of(&[("LOG_PAYLOADS", "maybe")]),
        "LOG_PAYLOADS: `maybe` is not a boolean (true or false)"
    );
    assert!(error_of(&[("ENVIRONMENT", "prod")]).starts_with("ENVIRONMENT: `prod`"));
}

#[test]
fn invalid_urls_do_not_echo_credentials() {
    let message = error_of(&[("DATABASE_URL", "mysql://root:hunter2@db/x")]);
    assert!(
        message.starts_with("DATABASE_URL: must be a URL"),
        "{message}"
    );
    assert!(!message.contains("hunter2"));
}

#[test]
fn production_refuses_static_keys_and_the_emulator() {
    let base = [
        ("ENVIRONMENT", "production"),
        ("DATABASE_URL", "postgres://db/hokusai"),
    ];
    assert!(error_of(&base).starts_with("HUGGINGFACE_API_KEY: required in production"));
    let with_static = [
        &base[..],
        &[("HUGGINGFACE_API_KEY", "hf_x"), ("AUTH_BACKEND", "static")],
    ]
    .concat();
    assert!(error_of(&with_static).starts_with("AUTH_BACKEND: `static` keys are refused"));
    let without_db = [
        ("ENVIRONMENT", "production"),
        ("HUGGINGFACE_API_KEY", "hf_x"),
    ];
    assert_eq!(error_of(&without_db), "DATABASE_URL: is required");
}

#[test]
fn production_defaults_to_hokusai_auth_and_json_logs() {
    let (options, _dir) = isolated(&[]);
    let vars = env(&[
        ("ENVIRONMENT", "production"),
        ("DATABASE_URL", "postgres://db/hokusai"),
        ("HUGGINGFACE_API_KEY", "hf_x"),
    ]);
    let (settings, _) = Settings::load_from(&vars, &options).expect("valid");
    assert_eq!(settings.auth.backend, AuthBackend::Hokusai);
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);
}

#[test]
fn forwarded_for_and_usage_reporting_are_off_unless_enabled() {
    let (options, _dir) = isolated(&[]);
    let (defaults, _) = Settings::load_from(&env(&[]), &options).expect("valid");
    let on = env(&[
        ("TRUST_FORWARDED_FOR", "true"),
        ("AUTH_USAGE_REPORTING", "1"),
    ]);
    let (enabled, _) = Settings::load_from(&on, &options).expect("valid");

    assert!(!defaults.auth.trust_forwarded_for && !defaults.auth.usage_reporting);
    assert!(enabled.auth.trust_forwarded_for && enabled.auth.usage_reporting);
    assert_eq!(
        error_of(&[("TRUST_FORWARDED_FOR", "alb")]),
        "TRUST_FORWARDED_FOR: `alb` is not a boolean (true or false)"
    );
}

#[test]
fn sqs_backend_needs_both_queue_urls() {
    assert_eq!(
        error_of(&[("QUEUE_BACKEND", "sqs")]),
        "SQS_QUEUE_URL: required when QUEUE_BACKEND=sqs"
    );
}

#[test]
fn queue_lease_defaults_to_30_seconds_and_must_be_positive() {
    let (options, _dir) = isolated(&[]);
    let (settings, _) = Settings::load_from(&env(&[]), &options).expect("defaults are valid");
    assert_eq!(settings.queue.lease, Duration::from_secs(30));
    let (settings, _) =
        Settings::load_from(&env(&[("QUEUE_LEASE_SECONDS", "3")]), &options).expect("valid");
    assert_eq!(settings.queue.lease, Duration::from_secs(3));
    assert_eq!(
        error_of(&[("QUEUE_LEASE_SECONDS", "0")]),
        "QUEUE_LEASE_SECONDS: must be at least 1"
    );
}

#[test]
fn queue_poll_interval_takes_fractions_within_bounds() {
    let (options, _dir) = isolated(&[]);
    let (settings, _) = Settings::load_from(&env(&[]), &options).expect("defaults are valid");
    assert_eq!(settings.queue.poll_interval, Duration::from_secs(1));
    let (settings, _) =
        Settings::load_from(&env(&[("QUEUE_POLL_INTERVAL_SECONDS", "0.25")]), &options)
            .expect("valid");
    assert_eq!(settings.queue.poll_interval, Duration::from_millis(250));
    for bad in ["0", "0.001", "61", "NaN", "inf", "-1"] {
        assert_eq!(
            error_of(&[("QUEUE_POLL_INTERVAL_SECONDS", bad)]),
            "QUEUE_POLL_INTERVAL_SECONDS: must be between 0.01 and 60",
            "{bad}"
        );
    }
    assert!(
        error_of(&[("QUEUE_POLL_INTERVAL_SECONDS", "soon")])
            .starts_with("QUEUE_POLL_INTERVAL_SECONDS:")
    );
}

#[test]
fn layers_apply_in_order_file_then_dotenv_then_environment() {
    let (options, _dir) = isolated(&[
        (
            "development.toml",
            "queue_max_attempts = 3\n[api]\nport = 9001\nhost = \"127.0.0.1\"\n",
        ),
        (".env", "API_PORT=9002\nWORKER_CONCURRENCY=7\n"),
    ]);
    let (settings, sources) =
        Settings::load_from(&env(&[("WORKER_CONCURRENCY", "9")]), &options).expect("valid");
    assert_eq!(settings.api.host, "127.0.0.1");
    assert_eq!(settings.api.port, 9002, ".env beats the file");
    assert_eq!(settings.worker.concurrency, 9, "the environment beats .env");
    assert_eq!(settings.queue.max_attempts, 3);
    let origin = |name: &str| {
        sources
            .redacted()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, o)| o.to_string())
    };
    assert_eq!(origin("API_PORT").as_deref(), Some(".env"));
    assert_eq!(origin("WORKER_CONCURRENCY").as_deref(), Some("environment"));
}

#[test]
fn dotenv_is_ignored_outside_development() {
    let (options, _dir) = isolated(&[(".env", "API_PORT=9002\n")]);
    let vars = env(&[
        ("ENVIRONMENT", "staging"),
        ("DATABASE_URL", "postgres://db/hokusai"),
    ]);
    let (settings, _) = Settings::load_from(&vars, &options).expect("valid");
    assert_eq!(settings.api.port, 8001);
}

#[test]
fn unknown_keys_in_files_are_errors() {
    let (options, dir) = isolated(&[("development.toml", "[api]\nprot = 1\n")]);
    let message = Settings::load_from(&env(&[]), &options)
        .expect_err("typo")
        .to_string();
    assert_eq!(
        message,
        format!(
            "{}: unknown setting `API_PROT`",
            dir.join("development.toml").display()
        )
    );
}

#[test]
fn debug_output_redacts_secrets() {
    let (options, _dir) = isolated(&[]);
    let vars = env(&[
        ("HUGGINGFACE_API_KEY", "hf_topsecret"),
        ("MLFLOW_WEBHOOK_SECRET", "whsec"),
    ]);
    let (settings, _) = Settings::load_from(&vars, &options).expect("valid");
    let debug = format!("{settings:?}");
    assert!(
        !debug.contains("hf_topsecret") && !debug.contains("whsec"),
        "{debug}"
    );
}

#[test]
fn mlflow_auto_deploy_defaults_to_tagged_and_accepts_all() {
    let (options, _dir) = isolated(&[]);
    let (defaults, _) = Settings::load_from(&env(&[]), &options).expect("defaults");
    let (all, _) =
        Settings::load_from(&env(&[("MLFLOW_AUTO_DEPLOY", "all")]), &options).expect("all");

    assert_eq!(defaults.mlflow.auto_deploy, AutoDeploy::Tagged);
    assert_eq!(all.mlflow.auto_deploy, AutoDeploy::All);
    assert_eq!(
        error_of(&[("MLFLOW_AUTO_DEPLOY", "some")]),
        "MLFLOW_AUTO_DEPLOY: `some` is not one of tagged, all"
    );
}

#[test]
fn production_refuses_an_http_auth_service_url_except_on_loopback() {
    let production = [
        ("ENVIRONMENT", "production"),
        ("DATABASE_URL", "postgres://db/hokusai"),
        ("HUGGINGFACE_API_KEY", "hf_x"),
    ];
    let mut plain = production.to_vec();
    plain.push(("HOKUSAI_AUTH_SERVICE_URL", "http://auth.internal"));
    let mut loopback = production.to_vec();
    loopback.push(("HOKUSAI_AUTH_SERVICE_URL", "http://127.0.0.1:8080"));
    let (options, _dir) = isolated(&[]);

    assert!(error_of(&plain).starts_with("HOKUSAI_AUTH_SERVICE_URL: must be https://"));
    let (settings, _) = Settings::load_from(&env(&loopback), &options).expect("valid");
    settings
        .check_serving_policy()
        .expect("loopback is allowed");
}

#[test]
fn security_limits_have_defaults_and_the_allow_list_depends_on_the_environment() {
    let (options, _dir) = isolated(&[]);
    let (dev, sources) = Settings::load_from(&env(&[]), &options).expect("valid");
    let production = [
        ("ENVIRONMENT", "production"),
        ("DATABASE_URL", "postgres://db/h"),
    ];
    let (prod, _) = Settings::load_from(&env(&production), &options).expect("valid");

    assert_eq!(sources.origin("ENVIRONMENT"), Some(&Origin::Default));
    assert!(
        !dev.http_provider_allowed_hosts.is_empty(),
        "loopback in development"
    );
    assert!(
        prod.http_provider_allowed_hosts.is_empty(),
        "disabled elsewhere"
    );
    assert_eq!(dev.api.max_concurrent_requests, 4096);
    assert_eq!(dev.api.request_timeout, Duration::from_secs(30));
    assert_eq!(dev.api.max_replicas_per_deployment, 10);
    assert_eq!(dev.api.failed_auth_per_ip_per_minute, 120);
    assert_eq!(dev.auth.trusted_proxy_hops, 1);
    assert!(dev.api.redis_url.is_none());
    assert!(
        error_of(&[("HTTP_PROVIDER_ALLOWED_HOSTS", "10.0.0.0/99")])
            .starts_with("HTTP_PROVIDER_ALLOWED_HOSTS: `10.0.0.0/99`")
    );
    assert!(error_of(&[("REDIS_URL", "http://cache")]).starts_with("REDIS_URL: must be a URL"));
}
