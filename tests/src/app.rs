//! The API as production builds it, on port 0 over a fresh database, with static keys of
//! chosen scopes or with the `hokusai` backend pointed at a fake auth service.
//!
//! `HOKUSAI_TEST_PROFILE=production` (scripts/test sets it for one more run of the `api_*`
//! tests) starts every app with `ENVIRONMENT=production` and what production requires: the
//! `hokusai` auth backend (a [`FakeAuth`] holding the same test keys and scopes), a
//! HuggingFace token and API base (the emulator's, through the real adapter) and the
//! serving policy checked, as `hokusai-serve api` checks it.

use std::collections::HashMap;
use std::sync::Arc;

use api::auth::Authenticator;
use api::auth::static_keys::StaticKeys;
use emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use shared::config::{Environment, LoadOptions, Secret, Settings};
use shared::provider::{ProviderRegistry, ProvidersConfig};

use crate::db::{Engine, TestDb};
use crate::fake_auth::FakeAuth;

/// A key with every scope.
pub const ADMIN_KEY: &str = "hk_test_admin000000000000000000000000";
/// A key with `read` only.
pub const READ_KEY: &str = "hk_test_read0000000000000000000000000";
/// A key that may predict with `model-a` only.
pub const MODEL_A_KEY: &str = "hk_test_modela00000000000000000000000";

/// The test keys: key, user id, scopes.
const TEST_KEYS: [(&str, &str, &[&str]); 3] = [
    (
        ADMIN_KEY,
        "admin-user",
        &["predict", "read", "model:write", "admin"],
    ),
    (READ_KEY, "reader", &["read"]),
    (MODEL_A_KEY, "model-a-user", &["predict:model-a"]),
];

/// The settings profile the test apps run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `ENVIRONMENT` unset: development defaults, static keys.
    Development,
    /// `ENVIRONMENT=production` with the settings it requires.
    Production,
}

impl Profile {
    /// From `HOKUSAI_TEST_PROFILE` (`production`, else development).
    pub fn from_env() -> Profile {
        match std::env::var("HOKUSAI_TEST_PROFILE").as_deref() {
            Ok("production") => Profile::Production,
            Ok("" | "development") | Err(_) => Profile::Development,
            Ok(other) => panic!("HOKUSAI_TEST_PROFILE={other}: use production or development"),
        }
    }
}

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

/// Who checks the keys of a test app.
enum Keys {
    /// [`TEST_KEYS`]: static keys, or a fake auth service holding them in production.
    Test,
    /// The backend the settings choose (`AUTH_BACKEND=hokusai` and its URL given).
    Configured,
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
    /// The profile it runs with.
    pub profile: Profile,
    /// The `key_id` the authenticator reports for each test key.
    key_ids: HashMap<&'static str, String>,
    /// The fake auth service of [`TEST_KEYS`] in the production profile.
    _auth: Option<FakeAuth>,
}

impl TestApp {
    /// Starts the API on a fresh, migrated database of `engine`.
    pub async fn start(engine: Engine, overrides: &[(&str, &str)]) -> TestApp {
        Self::start_with(engine, overrides, Keys::Test).await
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
        Self::start_with(engine, &all, Keys::Configured).await
    }

    async fn start_with(engine: Engine, overrides: &[(&str, &str)], keys: Keys) -> TestApp {
        let db = TestDb::migrated(engine).await;
        let conn = db.conn.clone();
        let url = db.url.clone();
        Self::start_on(db, &url, conn, overrides, keys).await
    }

    /// Starts the API (static test keys) on `db`, reaching it through `app_url` (e.g. a
    /// [`crate::proxy::TcpProxy`] in front of PostgreSQL); `TestApp::db` stays direct.
    pub async fn start_via(db: TestDb, app_url: &str, overrides: &[(&str, &str)]) -> TestApp {
        let conn = shared::db::connect(app_url)
            .await
            .expect("connect through the proxy");
        Self::start_on(db, app_url, conn, overrides, Keys::Test).await
    }

    async fn start_on(
        db: TestDb,
        app_url: &str,
        conn: sea_orm::DatabaseConnection,
        overrides: &[(&str, &str)],
        keys: Keys,
    ) -> TestApp {
        let profile = Profile::from_env();
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .expect("emulator starts");
        let (authenticator, auth, key_ids) = test_keys(profile, &keys).await;
        let mut all: Vec<(&str, &str)> = Vec::new();
        if profile == Profile::Production {
            all.extend([
                ("ENVIRONMENT", "production"),
                ("HUGGINGFACE_API_KEY", emulator.token.as_str()),
                ("HUGGINGFACE_API_BASE", emulator.base_url.as_str()),
                ("HUGGINGFACE_NAMESPACE", "hokusai"),
                // The tests' upstreams listen on loopback; production's default is none.
                ("HTTP_PROVIDER_ALLOWED_HOSTS", "127.0.0.1"),
            ]);
            if let Some(auth) = &auth {
                all.extend([
                    ("AUTH_BACKEND", "hokusai"),
                    ("HOKUSAI_AUTH_SERVICE_URL", auth.url.as_str()),
                ]);
            }
        }
        all.extend_from_slice(overrides);
        let settings = settings(app_url, &all);
        let config = match profile {
            Profile::Development => {
                let token = Secret::new(emulator.token.clone());
                ProvidersConfig::with_hf_emulator(&settings, &emulator.base_url, token)
            }
            Profile::Production => {
                assert_eq!(settings.environment, Environment::Production);
                settings
                    .check_serving_policy()
                    .expect("production accepts the test settings");
                ProvidersConfig::from_settings(&settings).expect("HuggingFace settings")
            }
        };
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
            profile,
            key_ids,
            _auth: auth,
        }
    }

    /// The `key_id` the API reports (prediction metadata, logs) for test key `key`.
    pub fn key_id(&self, key: &str) -> &str {
        self.key_ids
            .get(key)
            .map(String::as_str)
            .expect("one of the test keys")
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

    /// Starts a loopback upstream answering `status` with `body` after `delay`
    /// ([`crate::upstream::start`]) and deploys it as `model` with the `http` provider, serving.
    pub async fn serve_upstream(
        &self,
        model: &str,
        status: u16,
        body: &'static str,
        delay: std::time::Duration,
    ) {
        let url = crate::upstream::start(status, body, delay).await;
        let worker = self.worker();
        let spec = serde_json::json!({"provider": "http", "endpoint_url": url});
        self.deploy_and_serve(&worker, model, spec).await;
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

/// The authenticator of [`TEST_KEYS`] for `profile` (`None`: the one settings choose), the
/// fake auth service holding them in production, and their key ids.
async fn test_keys(
    profile: Profile,
    keys: &Keys,
) -> (
    Option<Arc<dyn Authenticator>>,
    Option<FakeAuth>,
    HashMap<&'static str, String>,
) {
    let mut key_ids = HashMap::new();
    match (keys, profile) {
        (Keys::Configured, _) => (None, None, key_ids),
        (Keys::Test, Profile::Development) => {
            let mut keys = StaticKeys::new();
            for (key, user, scopes) in TEST_KEYS {
                keys = keys.with_key(key, user, scopes);
            }
            for (key, _, _) in TEST_KEYS {
                let principal = keys.authenticate(key, None).await.expect("a test key");
                key_ids.insert(key, principal.key_id);
            }
            (Some(Arc::new(keys)), None, key_ids)
        }
        (Keys::Test, Profile::Production) => {
            let auth = FakeAuth::start().await;
            for (key, user, scopes) in TEST_KEYS {
                let key_id = format!("key-of-{user}");
                auth.add_user_key(key, &key_id, user, scopes);
                key_ids.insert(key, key_id);
            }
            (None, Some(auth), key_ids)
        }
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
