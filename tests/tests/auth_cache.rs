//! The validation cache through the real API against the fake auth service: hits make no
//! upstream call, concurrent misses make one, and a revoked key is refused once its
//! positive TTL lapses and stays refused after the negative TTL.

use std::time::Duration;

use futures_util::future::join_all;
use tests::app::{TestApp, assert_error};
use tests::db::Engine;
use tests::fake_auth::{FakeAuth, KeyState};

const KEY: &str = "hk_live_cached0000000000000000000000000";

async fn started(overrides: &[(&str, &str)]) -> (FakeAuth, TestApp) {
    let auth = FakeAuth::start().await;
    auth.add_key(KEY, "key-cached", &["read"]);
    let app = TestApp::start_hokusai(Engine::Sqlite, &auth.url, overrides).await;
    (auth, app)
}

#[tokio::test]
async fn a_cache_hit_makes_no_upstream_call() {
    let (auth, app) = started(&[]).await;

    let first = app.get("/api/v1/models", KEY).await;
    let calls_after_first = auth.validations();
    let second = app.get("/api/v1/models", KEY).await;
    let third = app.get("/api/v1/models", KEY).await;

    assert_eq!(
        (
            first.status().as_u16(),
            second.status().as_u16(),
            third.status().as_u16()
        ),
        (200, 200, 200)
    );
    assert_eq!(calls_after_first, 1);
    assert_eq!(auth.validations(), 1);
}

#[tokio::test]
async fn a_hundred_concurrent_first_requests_make_one_upstream_call() {
    let (auth, app) = started(&[]).await;
    auth.set_delay(Duration::from_millis(300));

    let responses = join_all((0..100).map(|_| app.get("/api/v1/models", KEY))).await;

    assert!(responses.iter().all(|r| r.status() == 200));
    assert_eq!(auth.validations(), 1);
}

#[tokio::test]
async fn a_revoked_key_is_refused_after_the_ttl_and_stays_refused() {
    let (auth, app) = started(&[
        ("AUTH_CACHE_TTL_SECONDS", "1"),
        ("AUTH_NEGATIVE_CACHE_TTL_SECONDS", "1"),
    ])
    .await;
    let before = app.get("/api/v1/models", KEY).await;
    auth.set_state(KEY, KeyState::Revoked);

    let within_ttl = app.get("/api/v1/models", KEY).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after_ttl = app.get("/api/v1/models", KEY).await;
    let negatively_cached = app.get("/api/v1/models", KEY).await;
    let calls_while_negative = auth.validations();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after_negative_ttl = app.get("/api/v1/models", KEY).await;

    assert_eq!(
        (before.status().as_u16(), within_ttl.status().as_u16()),
        (200, 200)
    );
    assert_error(after_ttl, 401, "UNAUTHORIZED").await;
    assert_error(negatively_cached, 401, "UNAUTHORIZED").await;
    assert_eq!(calls_while_negative, 2);
    assert_error(after_negative_ttl, 401, "UNAUTHORIZED").await;
    assert_eq!(
        auth.validations(),
        3,
        "the negative verdict expired and was asked again"
    );
}
