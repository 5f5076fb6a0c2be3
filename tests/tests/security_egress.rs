//! The SSRF guard of the `http` provider (issue 19, docs/operator-guide.md "Threat model"):
//! `HTTP_PROVIDER_ALLOWED_HOSTS` through the real API, and the provider's connect-time
//! checks (resolved addresses, redirects) against real loopback servers.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get};
use serde_json::json;
use shared::domain::{DeploymentId, ModelId};
use shared::provider::egress::{AllowList, Lookup};
use shared::provider::http::HttpProvider;
use shared::provider::{
    DeploymentSpec, HttpProviderConfig, InstanceSpec, PredictRequest, Provider, ScalingSpec,
};
use tests::app::{ADMIN_KEY, TestApp, assert_error};
use tests::db::Engine;
use tests::upstream;

/// Every spelling of an always-refused address the issue lists.
const ALWAYS_REFUSED: &[&str] = &[
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fd00:ec2::254]/",
    "http://0.0.0.0:8080/",
    "http://[::]/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
];

async fn deploy(app: &TestApp, model: &str, url: &str) -> reqwest::Response {
    app.post(
        &format!("/api/v1/models/{model}/deployments"),
        ADMIN_KEY,
        &json!({"provider": "http", "endpoint_url": url}),
    )
    .await
}

#[tokio::test]
async fn every_refused_spelling_is_422_naming_endpoint_url_even_under_allow_all() {
    let app = TestApp::start(
        Engine::Sqlite,
        &[("HTTP_PROVIDER_ALLOWED_HOSTS", "0.0.0.0/0,::/0")],
    )
    .await;

    for url in ALWAYS_REFUSED {
        let body = assert_error(deploy(&app, "ssrf", url).await, 422, "VALIDATION_ERROR").await;
        let detail = body["detail"].as_str().expect("detail");
        assert!(detail.contains("endpoint_url"), "{url}: {detail}");
        assert!(detail.contains("refused whatever"), "{url}: {detail}");
    }

    let stored = shared::db::deployments::list(&app.db.conn, &Default::default())
        .await
        .expect("list");
    assert!(stored.is_empty(), "nothing was stored: {stored:?}");
}

#[tokio::test]
async fn an_allowed_loopback_upstream_is_served_and_others_are_refused() {
    let app = TestApp::start(
        Engine::Sqlite,
        &[("HTTP_PROVIDER_ALLOWED_HOSTS", "127.0.0.1,tgi.internal:8080")],
    )
    .await;
    let url = upstream::start(200, r#"[{"label":"ok"}]"#, Duration::ZERO).await;
    let worker = app.worker();

    app.deploy_and_serve(
        &worker,
        "served",
        json!({"provider": "http", "endpoint_url": url}),
    )
    .await;
    let predicted = app
        .post(
            "/api/v1/models/served/predict",
            ADMIN_KEY,
            &json!({"inputs": "x"}),
        )
        .await;
    let private = deploy(&app, "private", "http://10.0.0.8/").await;
    let unlisted = deploy(&app, "named", "http://tgi.internal:9090/").await;

    assert_eq!(predicted.status(), 200);
    for refused in [private, unlisted] {
        let body = assert_error(refused, 422, "VALIDATION_ERROR").await;
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("not in HTTP_PROVIDER_ALLOWED_HOSTS")
        );
    }
}

#[tokio::test]
async fn an_empty_list_disables_the_http_provider() {
    let app = TestApp::start(Engine::Sqlite, &[("HTTP_PROVIDER_ALLOWED_HOSTS", "")]).await;

    let body = assert_error(
        deploy(&app, "m", "http://127.0.0.1:9/").await,
        422,
        "VALIDATION_ERROR",
    )
    .await;

    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("disabled"),
        "{body}"
    );
}

/// A name table standing in for DNS, answering each name with the addresses given.
#[derive(Debug)]
struct Table(Vec<(&'static str, SocketAddr)>);

impl Lookup for Table {
    fn lookup(
        &self,
        name: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        let found: Vec<SocketAddr> = (self.0.iter())
            .filter(|(n, _)| *n == name)
            .map(|(_, a)| *a)
            .collect();
        Box::pin(async move { Ok(found) })
    }
}

fn provider(allow: &str, lookup: Option<Arc<dyn Lookup>>) -> HttpProvider {
    let mut config = HttpProviderConfig::new(
        Duration::from_secs(2),
        AllowList::parse(allow).expect("list"),
    );
    if let Some(lookup) = lookup {
        config.lookup = lookup;
    }
    HttpProvider::new(&config).expect("provider")
}

fn spec(url: &str) -> DeploymentSpec {
    DeploymentSpec {
        deployment_id: DeploymentId::new(),
        model_id: ModelId::parse("egress").expect("id"),
        model_version: None,
        repository: None,
        revision: None,
        task: None,
        framework: None,
        instance: InstanceSpec {
            vendor: "self".into(),
            region: "local".into(),
            instance_type: "vm".into(),
            instance_size: "x1".into(),
        },
        scaling: ScalingSpec::default(),
        endpoint_url: Some(url.to_owned()),
    }
}

fn request() -> PredictRequest {
    PredictRequest {
        inputs: json!("x"),
        parameters: None,
        task: None,
    }
}

/// A loopback server counting every request it gets; optionally redirecting them.
async fn counting(redirect_to: Option<String>) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = hits.clone();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(any(move || {
            let (seen, to) = (seen.clone(), redirect_to.clone());
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                match to {
                    Some(to) => (StatusCode::FOUND, [(header::LOCATION, to)], "").into_response(),
                    None => (StatusCode::OK, "[]").into_response(),
                }
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, hits)
}

#[tokio::test]
async fn a_name_is_checked_on_its_resolved_address_at_connect_time() {
    let (target, hits) = counting(None).await;
    let port = target.rsplit(':').next().expect("port");
    let rebinding: Arc<dyn Lookup> = Arc::new(Table(vec![
        ("rebind.test", "169.254.169.254:0".parse().expect("addr")),
        (
            "mapped.test",
            "[::ffff:169.254.169.254]:0".parse().expect("addr"),
        ),
    ]));
    let everything = provider("0.0.0.0/0,::/0", Some(rebinding));
    let only_ten = provider("10.0.0.0/8", None);

    for name in ["rebind.test", "mapped.test"] {
        let spec = spec(&format!("http://{name}/"));
        let handle = everything
            .deploy(&spec)
            .await
            .expect("a name is accepted when ranges are listed");
        let refused = everything
            .predict(&handle, request())
            .await
            .expect_err(name);
        assert_eq!(refused.kind(), "transient", "{name}: {refused}");
    }
    // localhost resolves to 127.0.0.1, outside 10.0.0.0/8: refused before connecting.
    let handle = only_ten
        .deploy(&spec(&format!("http://localhost:{port}/")))
        .await
        .expect("accepted for a connect-time check");
    let refused = only_ten.predict(&handle, request()).await;
    let status = only_ten.get_status(&handle).await.expect("status");

    assert!(refused.is_err());
    assert!(!status.ready);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (target, target_hits) = counting(None).await;
    let (redirector, redirector_hits) = counting(Some(format!("{target}/"))).await;
    let (_, metadata_hits) =
        counting(Some("http://169.254.169.254/latest/meta-data/".into())).await;
    let provider = provider("127.0.0.1", None);
    let handle = provider
        .deploy(&spec(&format!("{redirector}/")))
        .await
        .expect("deploy");

    let answer = provider.predict(&handle, request()).await;

    let failure = answer.expect_err("a 302 is an upstream failure, not followed");
    assert_eq!(
        failure.kind(),
        "transient",
        "the endpoint's failure: {failure}"
    );
    assert_eq!(redirector_hits.load(Ordering::SeqCst), 1);
    assert_eq!(target_hits.load(Ordering::SeqCst), 0);
    assert_eq!(metadata_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn upstream_error_bodies_and_urls_never_reach_the_client() {
    let app = TestApp::start(
        Engine::Sqlite,
        &[("HTTP_PROVIDER_ALLOWED_HOSTS", "127.0.0.1")],
    )
    .await;
    let url = upstream::start(
        500,
        r#"{"error":"db at http://10.1.2.3:5432 refused"}"#,
        Duration::ZERO,
    )
    .await;
    let worker = app.worker();
    app.deploy_and_serve(
        &worker,
        "leaky",
        json!({"provider": "http", "endpoint_url": url}),
    )
    .await;

    let answer = app
        .post(
            "/api/v1/models/leaky/predict",
            ADMIN_KEY,
            &json!({"inputs": "x"}),
        )
        .await;

    let body = assert_error(answer, 502, "UPSTREAM_ERROR").await;
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        !detail.contains("10.1.2.3") && !detail.contains("127.0.0.1"),
        "{detail}"
    );
}

#[tokio::test]
async fn dev_under_allow_all_refuses_every_spelling_and_serves_a_loopback_upstream() {
    const KEY: &str = "hk_dev_egress0000000000000000000000000";
    let dir = tests::process::scratch_dir();
    let server = tests::process::DevServer::start(
        &dir,
        &[
            ("HOKUSAI_DEV_API_KEY", KEY),
            ("HTTP_PROVIDER_ALLOWED_HOSTS", "0.0.0.0/0,::/0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        client
            .post(format!("{}{path}", server.base_url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };
    let upstream = upstream::start(200, r#"[{"label":"ok"}]"#, Duration::ZERO).await;

    for url in ALWAYS_REFUSED {
        let body = json!({"provider": "http", "endpoint_url": url});
        let answer = post("/api/v1/models/ssrf/deployments".into(), body)
            .await
            .expect("request");
        let status = answer.status().as_u16();
        let body: serde_json::Value = answer.json().await.expect("json");
        assert_eq!(
            (status, body["error"].as_str()),
            (422, Some("VALIDATION_ERROR")),
            "{url}"
        );
        assert!(
            body["detail"]
                .as_str()
                .expect("detail")
                .contains("endpoint_url"),
            "{url}: {body}"
        );
    }
    let deployed = post(
        "/api/v1/models/loopback/deployments".into(),
        json!({"provider": "http", "endpoint_url": upstream}),
    )
    .await
    .expect("request");
    assert_eq!(deployed.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let served = loop {
        let answer = post(
            "/api/v1/models/loopback/predict".into(),
            json!({"inputs": "x"}),
        )
        .await
        .expect("request");
        if answer.status() == 200 || std::time::Instant::now() > deadline {
            break answer.status().as_u16();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    assert_eq!(served, 200, "the loopback upstream serves within 30 s");
}
