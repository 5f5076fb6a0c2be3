//! No key material in any log line: every log event of the process (all targets, TRACE
//! level) is captured into a buffer while keys are accepted, refused, rate-limited, served
//! stale and timed out, and the buffer must not contain any of the keys.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::app::TestApp;
use tests::db::Engine;
use tests::fake_auth::FakeAuth;

const VALID: &str = "hk_live_secretvalid00000000000000000000";
const UNKNOWN: &str = "hk_live_secretunknown000000000000000000";

/// A `Write` appending to a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

fn capture_all_logs() -> Captured {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    captured
}

#[tokio::test]
async fn no_key_reaches_any_log_line() {
    let logs = capture_all_logs();
    let auth = FakeAuth::start().await;
    auth.add_key(VALID, "key-logged", &["read"]);
    let app = TestApp::start_hokusai(
        Engine::Sqlite,
        &auth.url,
        &[
            ("AUTH_CACHE_TTL_SECONDS", "1"),
            ("AUTH_NEGATIVE_CACHE_TTL_SECONDS", "0"),
            ("AUTH_STALE_IF_ERROR_SECONDS", "30"),
            ("AUTH_SERVICE_TIMEOUT", "1"),
            ("AUTH_USAGE_REPORTING", "true"),
        ],
    )
    .await;

    let accepted = app.get("/api/v1/models", VALID).await;
    let refused = app.get("/api/v1/models", UNKNOWN).await;
    auth.force_status(Some(429));
    let limited = app.get("/api/v1/models", UNKNOWN).await;
    auth.force_status(Some(500));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = app.get("/api/v1/models", VALID).await;
    auth.force_status(None);
    auth.set_delay(Duration::from_secs(3));
    let timed_out = app.get("/api/v1/models", UNKNOWN).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let statuses = [&accepted, &refused, &limited, &stale, &timed_out].map(|r| r.status().as_u16());
    assert_eq!(statuses, [200, 401, 429, 200, 503]);
    let text = logs.text();
    assert!(
        text.contains("serving a recently valid key"),
        "capture works: {text}"
    );
    assert!(
        text.contains("authentication service unavailable"),
        "{text}"
    );
    for key in [VALID, UNKNOWN] {
        assert!(!text.contains(key), "a key leaked into the logs");
        assert!(
            !text.contains(&key[8..]),
            "part of a key leaked into the logs"
        );
    }
}
