//! `/health` and `/ready` of the API built as production builds it, on port 0: readiness
//! follows the database, request ids are echoed or generated, unknown routes answer the
//! documented error body.

use shared::config::{AuthBackend, Environment, LogFormat};
use tests::app::{Profile, TestApp};
use tests::db::Engine;

#[tokio::test]
async fn ready_follows_the_database() {
    let app = TestApp::start(Engine::Postgres, &[]).await;
    let (url, db, client) = (&app.url, &app.db, &app.client);

    let before = client
        .get(format!("{url}/ready"))
        .send()
        .await
        .expect("ready");
    db.drop_under_its_users().await;
    let after = client
        .get(format!("{url}/ready"))
        .send()
        .await
        .expect("ready");
    let health = client
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("health");

    assert_eq!(before.status(), 200);
    assert_eq!(after.status(), 503);
    let body: serde_json::Value = after.json().await.expect("json");
    assert_eq!(body["checks"]["database"], "unreachable");
    assert_eq!(
        health.status(),
        200,
        "liveness does not depend on the database"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_unknown_routes_use_the_error_shape() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let (url, client) = (&app.url, &app.client);

    let echoed = client
        .get(format!("{url}/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("req");
    let missing = client.get(format!("{url}/nope")).send().await.expect("req");

    assert_eq!(echoed.headers()["x-request-id"], "abc-123");
    assert_eq!(missing.status(), 404);
    let generated = missing.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let body: serde_json::Value = missing.json().await.expect("json");
    assert_eq!(body["error"], "NOT_FOUND");
    assert_eq!(body["request_id"], generated.as_str());
    assert!(body["detail"].as_str().expect("detail").contains("/nope"));
    app.db.drop_database().await;
}

#[tokio::test]
async fn the_app_runs_the_profile_the_run_asked_for() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let (environment, auth, logs, emulator) = match Profile::from_env() {
        Profile::Development => (
            Environment::Development,
            AuthBackend::Static,
            LogFormat::Pretty,
            true,
        ),
        Profile::Production => (
            Environment::Production,
            AuthBackend::Hokusai,
            LogFormat::Json,
            false,
        ),
    };
    assert_eq!(app.profile, Profile::from_env());
    assert_eq!(app.settings.environment, environment);
    assert_eq!(app.settings.auth.backend, auth);
    assert_eq!(app.settings.telemetry.log_format, logs);
    assert_eq!(app.settings.uses_hf_emulator(), emulator);
    let response = app.get("/api/v1/models", tests::app::READ_KEY).await;
    assert_eq!(
        response.status(),
        200,
        "the test keys work in either profile"
    );
}
