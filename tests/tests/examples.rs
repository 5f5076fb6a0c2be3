//! The client examples of `examples/` (curl, Python, TypeScript, Rust) and `scripts/smoke`,
//! each run as a user would against a real `hokusai-serve dev` (SQLite, embedded queue, HF
//! emulator): the example deploys a model, waits until it serves, predicts and prints the
//! prediction; the test checks its exit code, its output and, over the API, that the
//! deployment it reported is the one serving.
//!
//! Tools: `bash`, `curl` and `python3` (curl example, smoke), `HOKUSAI_TEST_PYTHON` with
//! `requests` (the virtualenv of scripts/test), `node` and `npm` (TypeScript: `npm ci` into
//! a scratch copy, from npm's cache when it can), and the Rust example binary that
//! `cargo test` builds next to the tests. A missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tests::process::{self, DevServer};
use tokio::process::Command;

const KEY: &str = "hk_dev_examples000000000000000000000000";
const REPOSITORY: &str = "distilbert/distilbert-base-uncased-finetuned-sst-2-english";
/// Longest run of one example (deploy, wait, predict) or one tool step.
const LIMIT: Duration = Duration::from_secs(180);

/// The repository's root folder.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// A finished process.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion (at most [`LIMIT`]); panics when it cannot start.
async fn run(mut command: Command, what: &str) -> Ran {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{what} could not start (is it installed?): {e}"));
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `program args` with the example's environment: the dev server's URL and key, `model`.
fn example(program: impl AsRef<std::ffi::OsStr>, dev: &DevServer, model: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env("HOKUSAI_URL", &dev.base_url)
        .env("HOKUSAI_API_KEY", KEY)
        .env("HOKUSAI_MODEL_ID", model)
        .env("HOKUSAI_TIMEOUT", "120")
        .env_remove("HOKUSAI_REPOSITORY")
        .env_remove("HOKUSAI_TASK");
    command
}

/// A fresh dev server with the known key.
async fn dev() -> DevServer {
    let server = DevServer::start(&process::scratch_dir(), &[("HOKUSAI_DEV_API_KEY", KEY)]).await;
    assert!(server.banner.contains(KEY), "{}", server.banner);
    server
}

async fn get(dev: &DevServer, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", dev.base_url))
        .bearer_auth(KEY)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Checks a successful example run: exit 0, a text-classification prediction printed, and
/// the deployment it reported serving `model` according to the API.
async fn assert_example_succeeded(ran: &Ran, dev: &DevServer, model: &str) {
    let transcript = format!("stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.code, Some(0), "{transcript}");
    let printed = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("prediction: "))
        .unwrap_or_else(|| panic!("no prediction printed\n{transcript}"));
    let predictions: Value = serde_json::from_str(printed).expect("the prediction is JSON");
    let first = &predictions.as_array().expect("a list of predictions")[0];
    assert_eq!(first["label"], "POSITIVE", "{transcript}");
    assert!(first["score"].is_f64(), "{transcript}");
    let deployment = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("deployment ")?.strip_suffix(" serving"))
        .unwrap_or_else(|| panic!("no serving deployment reported\n{transcript}"));
    let (status, body) = get(dev, &format!("/api/v1/models/{model}/status")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "serving", "{body}");
    assert_eq!(body["deployment_id"], deployment, "{body}");
    assert!(
        !ran.stdout.contains(KEY) && !ran.stderr.contains(KEY),
        "the key is never printed"
    );
}

#[tokio::test]
async fn curl_example_deploys_and_predicts() {
    // Arrange
    let dev = dev().await;
    let mut command = example("bash", &dev, "curl-example");
    command.arg(root().join("examples/curl/deploy-and-predict.sh"));

    // Act
    let ran = run(command, "the curl example").await;

    // Assert
    assert_example_succeeded(&ran, &dev, "curl-example").await;
}

#[tokio::test]
async fn python_example_deploys_and_predicts() {
    // Arrange
    let python = std::env::var("HOKUSAI_TEST_PYTHON")
        .expect("HOKUSAI_TEST_PYTHON: the virtualenv's python (scripts/test sets it)");
    let dev = dev().await;
    let mut command = example(python, &dev, "python-example");
    command.arg(root().join("examples/python/deploy_and_predict.py"));

    // Act
    let ran = run(command, "the Python example").await;

    // Assert
    assert_example_succeeded(&ran, &dev, "python-example").await;
}

#[tokio::test]
async fn python_openai_example_streams_a_chat() {
    // Arrange
    let python = std::env::var("HOKUSAI_TEST_PYTHON")
        .expect("HOKUSAI_TEST_PYTHON: the virtualenv's python (scripts/test sets it)");
    let dev = dev().await;
    let mut command = example(python, &dev, "openai-example");
    command.arg(root().join("examples/python/openai_chat.py"));

    // Act
    let ran = run(command, "the OpenAI SDK example").await;

    // Assert
    let transcript = format!("stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.code, Some(0), "{transcript}");
    let answer = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("answer: "))
        .unwrap_or_else(|| panic!("no answer printed\n{transcript}"));
    assert_eq!(answer.split(' ').count(), 12, "{transcript}");
    assert!(ran.stdout.contains("tokens: "), "{transcript}");
    let (status, body) = get(&dev, "/api/v1/models/openai-example/status").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("serving")),
        "{body}"
    );
    assert!(
        !ran.stdout.contains(KEY) && !ran.stderr.contains(KEY),
        "the key is never printed"
    );
}

#[tokio::test]
async fn typescript_example_compiles_deploys_and_predicts() {
    // Arrange: a scratch copy, its pinned dependencies (npm ci) and the compiled script.
    let source = root().join("examples/typescript");
    let work = process::scratch_dir();
    for file in ["package.json", "package-lock.json", "tsconfig.json"] {
        std::fs::copy(source.join(file), work.join(file)).expect(file);
    }
    std::fs::create_dir_all(work.join("src")).expect("src");
    std::fs::copy(
        source.join("src/deploy-and-predict.ts"),
        work.join("src/deploy-and-predict.ts"),
    )
    .expect("the example's source");
    for (what, args) in [
        (
            "npm ci",
            &["ci", "--prefer-offline", "--no-audit", "--no-fund"][..],
        ),
        ("npm run build", &["run", "build"][..]),
    ] {
        let mut npm = Command::new("npm");
        npm.args(args).current_dir(&work);
        let ran = run(npm, what).await;
        assert_eq!(ran.code, Some(0), "{what}:\n{}\n{}", ran.stdout, ran.stderr);
    }
    let dev = dev().await;
    let mut command = example("node", &dev, "typescript-example");
    command.arg(work.join("dist/deploy-and-predict.js"));

    // Act
    let ran = run(command, "the TypeScript example").await;

    // Assert
    assert_example_succeeded(&ran, &dev, "typescript-example").await;
}

#[tokio::test]
async fn rust_example_deploys_and_predicts() {
    // Arrange: `cargo test` builds the example next to the test executables.
    let exe = std::env::current_exe().expect("test executable path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join("examples/deploy_and_predict");
    assert!(
        binary.exists(),
        "{} is missing: build it (`cargo build -p tests --examples`; `cargo test --workspace` does)",
        binary.display()
    );
    let dev = dev().await;

    // Act
    let ran = run(example(binary, &dev, "rust-example"), "the Rust example").await;

    // Assert
    assert_example_succeeded(&ran, &dev, "rust-example").await;
}

#[tokio::test]
async fn an_example_exits_non_zero_when_the_key_is_wrong() {
    // Arrange
    let dev = dev().await;
    let mut command = example("bash", &dev, "refused");
    command
        .arg(root().join("examples/curl/deploy-and-predict.sh"))
        .env("HOKUSAI_API_KEY", "hk_dev_wrong000000000000000000000000000");

    // Act
    let ran = run(command, "the curl example").await;

    // Assert
    assert_eq!(ran.code, Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stderr.contains("deploy answered 401"), "{}", ran.stderr);
    assert!(!ran.stdout.contains("prediction:"), "{}", ran.stdout);
}

/// `scripts/smoke URL KEY [MODEL]`.
fn smoke(dev: &DevServer, key: &str, model: Option<&str>) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(root().join("scripts/smoke"))
        .arg(&dev.base_url)
        .arg(key)
        .args(model);
    command
}

#[tokio::test]
async fn smoke_passes_against_dev_and_fails_with_a_wrong_key() {
    // Arrange: a model serving, deployed over the API.
    let dev = dev().await;
    let created = reqwest::Client::new()
        .post(format!("{}/api/v1/models/smoke/deployments", dev.base_url))
        .bearer_auth(KEY)
        .json(&json!({"repository": REPOSITORY, "task": "text-classification"}))
        .send()
        .await
        .expect("deploy");
    assert_eq!(created.status().as_u16(), 202);
    let start = std::time::Instant::now();
    while get(&dev, "/api/v1/models/smoke/status").await.1["status"] != "serving" {
        assert!(start.elapsed() < LIMIT, "the smoke model never served");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Act
    let plain = run(smoke(&dev, KEY, None), "scripts/smoke").await;
    let with_model = run(smoke(&dev, KEY, Some("smoke")), "scripts/smoke").await;
    let wrong = "hk_dev_wrong000000000000000000000000000";
    let refused = run(smoke(&dev, wrong, Some("smoke")), "scripts/smoke").await;

    // Assert: every check passes with the key, five of them without a model, six with.
    for (ran, checks) in [(&plain, 5), (&with_model, 6)] {
        assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
        let ok = ran.stdout.lines().filter(|l| l.starts_with("ok ")).count();
        assert_eq!(ok, checks, "{}", ran.stdout);
        assert!(!ran.stdout.contains("FAIL"), "{}", ran.stdout);
        assert!(
            ran.stdout.contains("smoke: all checks passed"),
            "{}",
            ran.stdout
        );
    }
    assert!(
        with_model
            .stdout
            .contains("ok    POST /api/v1/models/smoke/predict")
    );
    // A wrong key: the authenticated checks fail, the exit code says so, the key stays hidden.
    assert_eq!(
        refused.code,
        Some(1),
        "{}\n{}",
        refused.stdout,
        refused.stderr
    );
    assert!(
        refused
            .stdout
            .contains("FAIL  GET /api/v1/models with a key (got 401"),
        "{}",
        refused.stdout
    );
    assert!(
        refused
            .stdout
            .contains("FAIL  POST /api/v1/models/smoke/predict (got 401"),
        "{}",
        refused.stdout
    );
    for ran in [&plain, &with_model, &refused] {
        assert!(!ran.stdout.contains(KEY) && !ran.stdout.contains(wrong));
        assert!(!ran.stderr.contains(KEY) && !ran.stderr.contains(wrong));
    }
}
