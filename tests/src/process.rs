//! Running the real `hokusai-serve` binary in tests, with a clean environment and a fresh
//! working folder so a developer's `.env` or `config/` never leaks in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The binary next to the test executables (`scripts/test` builds it first), or next to
/// the running program when that is itself a binary of `target/<profile>/` (`load-test`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let own_dir = exe.parent().expect("target/<profile>/<program>");
    if own_dir.join("hokusai-serve").exists() {
        return own_dir.join("hokusai-serve");
    }
    let profile_dir = own_dir.parent().expect("target/<profile>/deps/<test>");
    let binary = profile_dir.join("hokusai-serve");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build --bin hokusai-serve`, as scripts/test does)",
        binary.display()
    );
    binary
}

/// A fresh, empty working folder.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hokusai-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// `hokusai-serve ARGS` in `dir` with only `PATH` and `envs` set.
pub fn command(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Output of a finished command.
#[derive(Debug)]
pub struct Finished {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `hokusai-serve ARGS` to completion (at most 60 s).
pub async fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Finished {
    let output = tokio::time::timeout(Duration::from_secs(60), command(dir, args, envs).output())
        .await
        .expect("the command finishes within 60 s")
        .expect("the binary runs");
    Finished {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `hokusai-serve dev`, killed when dropped.
pub struct DevServer {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// Everything printed on stdout up to the banner's last line.
    pub banner: String,
    /// Lines printed on stdout after the banner (CloudWatch EMF lines, among others).
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Lines printed on stderr (the logs), when started with [`DevServer::start_captured`].
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl DevServer {
    /// Starts `dev --port 0` in `dir` and waits for its banner; its logs go to the test's
    /// stderr.
    pub async fn start(dir: &Path, envs: &[(&str, &str)]) -> DevServer {
        Self::start_with(dir, envs, false).await
    }

    /// Like [`DevServer::start`], keeping the logs in [`DevServer::stderr`].
    pub async fn start_captured(dir: &Path, envs: &[(&str, &str)]) -> DevServer {
        Self::start_with(dir, envs, true).await
    }

    async fn start_with(dir: &Path, envs: &[(&str, &str)], capture_stderr: bool) -> DevServer {
        let stderr_mode = if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = command(dir, &["dev", "--port", "0", "--data-dir", ".hokusai"], envs)
            .stdout(Stdio::piped())
            .stderr(stderr_mode)
            .spawn()
            .expect("dev starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(pipe) = child.stderr.take() {
            let sink = stderr.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    sink.lock().expect("stderr lines").push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut banner = String::new();
        let read_banner = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Stop with") {
                    return;
                }
            }
            panic!("dev exited before printing its banner:\n{banner}");
        };
        tokio::time::timeout(Duration::from_secs(60), read_banner)
            .await
            .expect("banner within 60 s");
        let base_url = banner
            .split_whitespace()
            .find(|w| {
                w.starts_with("http://127.0.0.1:")
                    && !w.contains("/health")
                    && !w.contains("/ready")
            })
            .expect("the banner shows the URL")
            .trim_end_matches('/')
            .to_owned();
        // Keep draining stdout so the server never blocks on a full pipe.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("stdout lines").push(line);
            }
        });
        DevServer {
            child,
            base_url,
            banner,
            stdout,
            stderr,
        }
    }
}

/// A running `hokusai-serve api` (the production role, `ENVIRONMENT=staging` unless `envs`
/// says otherwise), killed when dropped.
pub struct ApiProcess {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
}

impl ApiProcess {
    /// Starts `api` in `dir` on a free loopback port with `envs` and waits until `/health`
    /// answers 200 (at most 60 s). The role needs a migrated database (`DATABASE_URL`) and,
    /// outside development, `HUGGINGFACE_API_KEY` and `HUGGINGFACE_NAMESPACE`.
    pub async fn start(dir: &Path, envs: &[(&str, &str)]) -> ApiProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
            .to_string();
        let mut all = vec![
            ("ENVIRONMENT", "staging"),
            ("API_HOST", "127.0.0.1"),
            ("API_PORT", port.as_str()),
            ("RUST_LOG", "warn"),
        ];
        all.extend_from_slice(envs);
        let child = command(dir, &["api"], &all)
            .stdout(Stdio::null())
            .spawn()
            .expect("api starts");
        let base_url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let health = format!("{base_url}/health");
        let ready = async {
            loop {
                if let Ok(answer) = client.get(&health).send().await
                    && answer.status() == 200
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .expect("`hokusai-serve api` answers /health within 60 s");
        ApiProcess { child, base_url }
    }
}
