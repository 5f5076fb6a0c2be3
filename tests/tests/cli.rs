//! The real binary: configuration errors exit 2 with a one-line reason, check-config redacts
//! secrets, `migrate` works against PostgreSQL, one-off verbs print only their result unless
//! `-v`, and `dev` serves `/health` and `/ready`.

use tests::db::{Engine, TestDb};
use tests::process::{DevServer, run, scratch_dir};

#[tokio::test]
async fn invalid_values_exit_2_with_one_line_naming_the_variable() {
    let dir = scratch_dir();
    for (variable, value) in [
        ("QUEUE_BACKEND", "kafka"),
        ("API_PORT", "abc"),
        ("ENVIRONMENT", "prod"),
    ] {
        let finished = run(&dir, &["check-config"], &[(variable, value)]).await;

        assert_eq!(finished.code, Some(2), "{variable}={value}: {finished:?}");
        let lines: Vec<_> = finished.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {:?}", finished.stderr);
        assert!(
            lines[0].contains(variable) && lines[0].contains(value),
            "{}",
            lines[0]
        );
    }
}

#[tokio::test]
async fn unknown_keys_in_the_config_file_exit_2() {
    let dir = scratch_dir();
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    std::fs::write(dir.join("config/development.toml"), "[api]\nprot = 1\n").expect("file");

    let finished = run(&dir, &["check-config"], &[]).await;

    assert_eq!(finished.code, Some(2));
    assert!(
        finished.stderr.contains("unknown setting `API_PROT`"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = scratch_dir();
    std::fs::write(dir.join(".env"), "WORKER_CONCURRENCY=6\n").expect(".env");
    let envs = [
        ("HUGGINGFACE_API_KEY", "hf_verysecret"),
        ("MLFLOW_WEBHOOK_SECRET", "whsec_verysecret"),
        (
            "DATABASE_URL",
            "postgres://app:pgverysecret@db:5432/hokusai",
        ),
        ("API_PORT", "9100"),
    ];

    let finished = run(&dir, &["check-config"], &envs).await;

    assert_eq!(finished.code, Some(0), "{finished:?}");
    assert!(
        !finished.stdout.contains("verysecret"),
        "{}",
        finished.stdout
    );
    assert!(finished.stdout.contains("HUGGINGFACE_API_KEY=[redacted]"));
    assert!(
        finished
            .stdout
            .contains("DATABASE_URL=postgres://app:[redacted]@db:5432/hokusai")
    );
    assert!(finished.stdout.contains("API_PORT=9100  # environment"));
    assert!(finished.stdout.contains("WORKER_CONCURRENCY=6  # .env"));
    assert!(finished.stdout.contains("QUEUE_BACKEND=db  # default"));
}

#[tokio::test]
async fn migrate_up_status_down_against_postgres() {
    let db = TestDb::empty(Engine::Postgres).await;
    let dir = scratch_dir();
    let envs = [("DATABASE_URL", db.url.as_str())];

    let status = run(&dir, &["migrate", "status"], &envs).await;
    let up = run(&dir, &["migrate", "up"], &envs).await;
    let down = run(&dir, &["migrate", "down", "-n", "2"], &envs).await;

    let total = <migrations::Migrator as migrations::MigratorTrait>::migrations().len();
    assert_eq!(status.code, Some(0), "{status:?}");
    assert_eq!(
        status
            .stdout
            .lines()
            .filter(|l| l.starts_with("pending"))
            .count(),
        total
    );
    assert_eq!(up.code, Some(0), "{up:?}");
    assert_eq!(
        up.stdout
            .lines()
            .filter(|l| l.starts_with("applied"))
            .count(),
        total
    );
    assert_eq!(down.code, Some(0), "{down:?}");
    assert_eq!(
        down.stdout
            .lines()
            .filter(|l| l.starts_with("pending"))
            .count(),
        2
    );
    let fresh_refused = run(
        &dir,
        &["migrate", "fresh"],
        &[("ENVIRONMENT", "staging"), envs[0]],
    )
    .await;
    assert_eq!(fresh_refused.code, Some(2), "{fresh_refused:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_runtime_failure_exits_1() {
    let dir = scratch_dir();
    let envs = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")];

    let finished = run(&dir, &["migrate", "status"], &envs).await;

    assert_eq!(finished.code, Some(1), "{finished:?}");
    assert!(
        finished
            .stderr
            .starts_with("error: connecting to the database"),
        "{}",
        finished.stderr
    );
}

#[tokio::test]
async fn dev_serves_health_and_ready_on_a_fresh_folder() {
    let dir = scratch_dir();
    let mut server = DevServer::start(&dir, &[]).await;
    let client = reqwest::Client::new();

    let health = client
        .get(format!("{}/health", server.base_url))
        .send()
        .await
        .expect("health");
    let ready = client
        .get(format!("{}/ready", server.base_url))
        .send()
        .await
        .expect("ready");

    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"));
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        dir.join(".hokusai/hokusai.db").exists(),
        "dev creates its SQLite database"
    );
    server.child.kill().await.ok();
}

#[tokio::test]
async fn hf_emulator_verb_serves_the_v2_api_and_says_it_is_an_emulator() {
    use tokio::io::AsyncBufReadExt;
    let dir = scratch_dir();
    let mut child = tests::process::command(&dir, &["hf-emulator", "--port", "0"], &[])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("hf-emulator starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("prints within 30 s")
        .expect("read")
        .expect("a line");
    let url = first.split_whitespace().last().expect("url").to_owned();

    let response = reqwest::get(format!("{url}/v2/provider"))
        .await
        .expect("GET /v2/provider");

    assert!(first.contains("EMULATOR (not the real service)"), "{first}");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-hokusai-emulator"], "1");
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(
        body["vendors"].as_array().is_some_and(|v| !v.is_empty()),
        "{body}"
    );
    child.kill().await.ok();
}

/// `dlq list --json 2>err` leaves `err` empty; `-v` brings the logs back, without colour on
/// a pipe. RabbitMQ is the backend whose connection logs an INFO line.
#[tokio::test]
async fn dlq_list_json_writes_only_json_unless_verbose() {
    let dir = scratch_dir();
    let envs = [("QUEUE_BACKEND", "rabbitmq")];

    let quiet = run(&dir, &["dlq", "list", "--json"], &envs).await;
    let verbose = run(&dir, &["-v", "dlq", "list", "--json"], &envs).await;

    assert_eq!(quiet.code, Some(0), "{quiet:?}");
    let listed: serde_json::Value = serde_json::from_str(&quiet.stdout).expect("JSON on stdout");
    assert!(listed.is_array(), "{listed}");
    assert_eq!(quiet.stderr, "", "stderr stays empty without -v");
    assert_eq!(verbose.code, Some(0), "{verbose:?}");
    assert_eq!(verbose.stdout, quiet.stdout, "-v changes only the logs");
    assert!(
        verbose.stderr.contains("INFO") && verbose.stderr.contains("connected to RabbitMQ"),
        "{}",
        verbose.stderr
    );
    assert!(!verbose.stderr.contains('\u{1b}'), "{:?}", verbose.stderr);
}

#[tokio::test]
async fn migrate_is_quiet_unless_verbose() {
    let db = TestDb::empty(Engine::Sqlite).await;
    let dir = scratch_dir();
    let envs = [("DATABASE_URL", db.url.as_str())];

    let up = run(&dir, &["migrate", "up"], &envs).await;

    assert_eq!(up.code, Some(0), "{up:?}");
    assert!(up.stdout.contains("applied"), "{}", up.stdout);
    assert_eq!(up.stderr, "", "stderr stays empty without -v");
}
