//! The shipped `config/{development,staging,production}.toml` parse, and with the secrets an
//! ECS task receives they give the settings each environment is meant to run with.

use std::collections::HashMap;
use std::path::PathBuf;

use shared::config::{AuthBackend, Environment, LoadOptions, QueueBackend, Settings};

fn options() -> LoadOptions {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    LoadOptions {
        config_dir: root.join("config"),
        dotenv: root.join("tests/no-such.env"),
    }
}

fn load(pairs: &[(&str, &str)]) -> Settings {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    Settings::load_from(&env, &options())
        .unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
        .0
}

#[test]
fn development_file_runs_the_embedded_defaults() {
    let settings = load(&[]);
    assert_eq!(settings.environment, Environment::Development);
    assert_eq!(settings.queue.backend, QueueBackend::Db);
    assert_eq!(settings.auth.backend, AuthBackend::Static);
}

#[test]
fn staging_and_production_files_run_on_sqs_with_hokusai_auth() {
    for environment in ["staging", "production"] {
        let settings = load(&[
            ("ENVIRONMENT", environment),
            ("DATABASE_URL", "postgres://hokusai@db:5432/hokusai"),
            ("HUGGINGFACE_API_KEY", "hf_x"),
            (
                "SQS_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/1/hokusai-deployments",
            ),
            (
                "SQS_DLQ_URL",
                "https://sqs.us-east-1.amazonaws.com/1/hokusai-deployments-dlq",
            ),
        ]);
        assert_eq!(settings.queue.backend, QueueBackend::Sqs, "{environment}");
        assert_eq!(settings.auth.backend, AuthBackend::Hokusai, "{environment}");
        assert_eq!(settings.api.port, 8001, "{environment}");
        assert_eq!(settings.telemetry.cloudwatch_namespace, "Hokusai/API");
    }
}
