//! The API as production builds it, on port 0 over a fresh database, with static keys of
//! chosen scopes or with the `hokusai` backend pointed at a fake auth service.

use std::collections::HashMap;
use std::sync::Arc;

use api::auth::Authenticator;
use api::auth::static_keys::StaticKeys;
use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use shared::config::{LoadOptions, Secret, Settings};
use shared::provider::{ProviderRegistry, ProvidersConfig};

use crate::db::{Engine, TestDb};

/// A key with every scope.
pub const ADMIN_KEY: &str = "hk_test_admin000000000000000000000000";
/// A key with `read` only.
pub const READ_KEY: &str = "hk_test_read0000000000000000000000000";
/// A key that may predict with `model-a` only.
pub const MODEL_A_KEY: &str = "hk_test_modela00000000000000000000000";

/// Settings for tests: defaults plus `overrides`, never the developer's files.
pub fn settings(database_url: &str, overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("DATABASE_URL".into(), database_url.into());
    env.insert("API_HOST".into(), "127.0.0.1".into());
    env.insert("API_PORT".into(), "0".into());
    for (k, v) in overrides {
        env.insert((*k).into(), (*v).into());
    }
    let options = LoadOptions {
        config_dir: "/nonexistent".into(),
        dotenv: "/nonexistent/.env".into(),
    };
    Settings::load_from(&env, &options)
        .expect("test settings are valid")
        .0
}

/// A running API.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its database.
    pub db: TestDb,
    /// A client.
    pub client: reqwest::Client,
    /// The HF emulator its providers talk to.
    pub emulator: EmulatorHandle,
    /// The providers (shared with a worker a test may build).
    pub providers: Arc<ProviderRegistry>,
    /// The settings it was built with.
    pub settings: Settings,
}

impl TestApp {
    /// Starts the API on a fresh, migrated database of `engine`.
    pub async fn start(engine: Engine, overrides: &[(&str, &str)]) -> TestApp {
        let keys = StaticKeys::new()
            .with_key(
                ADMIN_KEY,
                "admin-user",
                &["predict", "read", "model:write", "admin"],
            )
            .with_key(READ_KEY, "reader", &["read"])
            .with_key(MODEL_A_KEY, "model-a-user", &["predict:model-a"]);
        Self::start_with(engine, overrides, Some(Arc::new(keys))).await
    }

    /// Starts the API with `AUTH_BACKEND=hokusai` validating keys against `auth_url` (a
    /// [`crate::fake_auth::FakeAuth`]), wired exactly as production wires it.
    pub async fn start_hokusai(
        engine: Engine,
        auth_url: &str,
        overrides: &[(&str, &str)],
    ) -> TestApp {
        let mut all = vec![
            ("AUTH_BACKEND", "hokusai"),
            ("HOKUSAI_AUTH_SERVICE_URL", auth_url),
        ];
        all.extend_from_slice(overrides);
        Self::start_with(engine, &all, None).await
    }

    /// With `authenticator`, or the one configuration selects when `None`.
    async fn start_with(
        engine: Engine,
        overrides: &[(&str, &str)],
        authenticator: Option<Arc<dyn Authenticator>>,
    ) -> TestApp {
        let db = TestDb::migrated(engine).await;
        let conn = db.conn.clone();
        let url = db.url.clone();
        Self::start_on(db, &url, conn, overrides, authenticator).await
    }

    /// Starts the API (static test keys) on `db`, reaching it through `app_url` (e.g. a
    /// [`crate::proxy::TcpProxy`] in front of PostgreSQL); `TestApp::db` stays direct.
    pub async fn start_via(db: TestDb, app_url: &str, overrides: &[(&str, &str)]) -> TestApp {
        let conn = shared::db::connect(app_url)
            .await
            .expect("connect through the proxy");
        let keys = StaticKeys::new()
            .with_key(
                ADMIN_KEY,
                "admin-user",
                &["predict", "read", "model:write", "admin"],
            )
            .with_key(READ_KEY, "reader", &["read"])
            .with_key(MODEL_A_KEY, "model-a-user", &["predict:model-a"]);
        Self::start_on(db, app_url, conn, overrides, Some(Arc::new(keys))).await
    }

    async fn start_on(
        db: TestDb,
        app_url: &str,
        conn: sea_orm::DatabaseConnection,
        overrides: &[(&str, &str)],
        authenticator: Option<Arc<dyn Authenticator>>,
    ) -> TestApp {
        let settings = settings(app_url, overrides);
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .expect("emulator starts");
        let token = Secret::new(emulator.token.clone());
        let config = ProvidersConfig::with_hf_emulator(&settings, &emulator.base_url, token);
        let providers = Arc::new(ProviderRegistry::build(&config).expect("providers"));
        let built = settings.clone();
        let app = match authenticator {
            Some(keys) => api::Application::build_with(built, conn, providers.clone(), keys).await,
            None => api::Application::build_with_db(built, conn, providers.clone()).await,
        }
        .expect("the API builds");
        let url = format!("http://{}", app.local_addr());
        tokio::spawn(app.run_until_stopped(std::future::pending()));
        TestApp {
            url,
            db,
            client: reqwest::Client::new(),
            emulator,
            providers,
            settings,
        }
    }

    /// A worker over the same database, queue and providers (not running; drive it with
    /// [`TestApp::work_until`]).
    pub fn worker(&self) -> worker::Worker {
        let mut settings = self.settings.clone();
        settings.worker.status_poll_initial = std::time::Duration::from_millis(100);
        settings.worker.status_poll_max = std::time::Duration::from_millis(400);
        let options = shared::queue::QueueOptions::new(
            shared::queue::DEPLOYMENTS_QUEUE,
            settings.queue.max_attempts,
        );
        let queue = std::sync::Arc::new(shared::queue::db::DbQueue::new(
            self.db.conn.clone(),
            options,
        ));
        worker::Worker::assemble(
            settings,
            self.db.conn.clone(),
            self.providers.clone(),
            queue,
        )
    }

    /// Drives `worker` until `done` holds for deployment `id` (panics after 30 s).
    pub async fn work_until(
        &self,
        worker: &worker::Worker,
        id: &str,
        done: impl Fn(&shared::db::deployments::Deployment) -> bool,
    ) -> shared::db::deployments::Deployment {
        let id = shared::domain::DeploymentId(id.parse().expect("a deployment id"));
        let start = std::time::Instant::now();
        loop {
            let row = shared::db::deployments::get(&self.db.conn, id)
                .await
                .expect("get")
                .expect("exists");
            if done(&row) {
                return row;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "not reached in 30 s: {row:?}"
            );
            worker.consumer().try_process_one().await.expect("queue");
        }
    }

    /// Deploys `model` through the API and drives the worker until it serves; returns the
    /// deployment id.
    pub async fn deploy_and_serve(
        &self,
        worker: &worker::Worker,
        model: &str,
        body: serde_json::Value,
    ) -> String {
        let response = self
            .post(
                &format!("/api/v1/models/{model}/deployments"),
                ADMIN_KEY,
                &body,
            )
            .await;
        assert_eq!(response.status(), 202, "deploy accepted");
        let created: serde_json::Value = response.json().await.expect("json");
        let id = created["deployment"]["id"].as_str().expect("id").to_owned();
        self.work_until(worker, &id, |d| d.is_active).await;
        id
    }

    /// `GET path` with `key` as Bearer.
    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
    }

    /// `POST path` with a JSON body and `key` as Bearer.
    pub async fn post(&self, path: &str, key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request")
    }
}

/// Asserts the documented error body and returns it.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let request_id = response
        .headers()
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("json error body");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}
