//! What the API answers when auth.hokus.ai is in trouble: 503 AUTH_UNAVAILABLE with
//! `Retry-After: 1` for 5xx, connection errors and timeouts (never 401, never 500), 429 with
//! `Retry-After: 60` when it rate-limits, and, with a stale-if-error window, continued
//! service for keys recently seen valid — never for unknown or revoked ones.

use std::time::{Duration, Instant};

use tests::app::{TestApp, assert_error};
use tests::db::Engine;
use tests::fake_auth::{FakeAuth, KeyState};

const KEY: &str = "hk_live_steady0000000000000000000000000";
const OTHER: &str = "hk_live_revoked000000000000000000000000";
const UNKNOWN: &str = "hk_live_unknown00000000000000000000000";

async fn started(overrides: &[(&str, &str)]) -> (FakeAuth, TestApp) {
    let auth = FakeAuth::start().await;
    auth.add_key(KEY, "key-steady", &["read"]);
    auth.add_key(OTHER, "key-other", &["read"]);
    let app = TestApp::start_hokusai(Engine::Sqlite, &auth.url, overrides).await;
    (auth, app)
}

fn retry_after(response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get("retry-after")?;
    Some(value.to_str().expect("ascii").to_owned())
}

async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(retry_after(&response).as_deref(), Some("1"));
    assert_error(response, 503, "AUTH_UNAVAILABLE").await;
}

#[tokio::test]
async fn server_errors_and_a_stopped_service_are_503_with_retry_after() {
    let (auth, app) = started(&[]).await;

    auth.force_status(Some(500));
    let on_500 = app.get("/api/v1/models", KEY).await;
    auth.force_status(Some(502));
    let on_502 = app.get("/api/v1/models", KEY).await;
    auth.stop().await;
    let on_refused = app.get("/api/v1/models", KEY).await;

    assert_unavailable(on_500).await;
    assert_unavailable(on_502).await;
    assert_unavailable(on_refused).await;
}

#[tokio::test]
async fn a_slow_service_is_503_within_about_the_timeout() {
    let (auth, app) = started(&[("AUTH_SERVICE_TIMEOUT", "1")]).await;
    auth.set_delay(Duration::from_secs(4));

    let started_at = Instant::now();
    let response = app.get("/api/v1/models", KEY).await;
    let elapsed = started_at.elapsed();

    assert_unavailable(response).await;
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2000), "{elapsed:?}");
}

#[tokio::test]
async fn rate_limiting_upstream_is_429_with_retry_after_60_and_not_cached() {
    let (auth, app) = started(&[]).await;

    auth.force_status(Some(429));
    let limited = app.get("/api/v1/models", KEY).await;
    auth.force_status(None);
    let afterwards = app.get("/api/v1/models", KEY).await;

    assert_eq!(retry_after(&limited).as_deref(), Some("60"));
    assert_error(limited, 429, "RATE_LIMITED").await;
    assert_eq!(afterwards.status(), 200);
    assert_eq!(auth.validations(), 2);
}

#[tokio::test]
async fn without_a_stale_window_an_outage_fails_closed_once_the_ttl_lapses() {
    let (auth, app) = started(&[("AUTH_CACHE_TTL_SECONDS", "1")]).await;
    let before = app.get("/api/v1/models", KEY).await;

    auth.force_status(Some(500));
    let cached = app.get("/api/v1/models", KEY).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after_ttl = app.get("/api/v1/models", KEY).await;

    assert_eq!(
        (before.status().as_u16(), cached.status().as_u16()),
        (200, 200)
    );
    assert_unavailable(after_ttl).await;
}

#[tokio::test]
async fn a_stale_window_keeps_recently_valid_keys_working_and_no_others() {
    let (auth, app) = started(&[
        ("AUTH_CACHE_TTL_SECONDS", "1"),
        ("AUTH_NEGATIVE_CACHE_TTL_SECONDS", "1"),
        ("AUTH_STALE_IF_ERROR_SECONDS", "30"),
    ])
    .await;
    app.get("/api/v1/models", KEY).await;
    app.get("/api/v1/models", OTHER).await;
    auth.set_state(OTHER, KeyState::Revoked);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked = app.get("/api/v1/models", OTHER).await;

    auth.force_status(Some(503));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let recently_valid = app.get("/api/v1/models", KEY).await;
    let last_seen_invalid = app.get("/api/v1/models", OTHER).await;
    let unknown = app.get("/api/v1/models", UNKNOWN).await;

    assert_error(revoked, 401, "UNAUTHORIZED").await;
    assert_eq!(recently_valid.status(), 200);
    assert_unavailable(last_seen_invalid).await;
    assert_unavailable(unknown).await;
}
