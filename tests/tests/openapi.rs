//! `GET /openapi.json` and `GET /docs`: the document is OpenAPI 3.1, documents exactly the
//! routes the router serves (an explicit list below, probed against the running router, so
//! a route added without its annotation fails), declares the auth errors and the error
//! schema, and `docs/api-reference.md` is its current rendering.

use std::collections::BTreeSet;

use serde_json::Value;
use shared::db::deployments::{self, NewDeployment};
use shared::db::outbox::Route;
use shared::domain::{DeploymentId, ModelId};
use shared::queue::{Envelope, MessageKind};
use tests::app::{READ_KEY, TestApp};
use tests::db::Engine;
use tests::openapi::{api_reference, operations, rewrite_docs};

/// Every route of `api/src/routes/*.rs`, by hand: update it with the router.
const ROUTES: [(&str, &str); 41] = [
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/dashboard"),
    ("GET", "/dashboard/app.js"),
    ("GET", "/dashboard/app.css"),
    ("GET", "/api/v1/models"),
    ("GET", "/api/v1/models/{model_id}"),
    ("GET", "/api/v1/models/{model_id}/status"),
    ("POST", "/api/v1/models/{model_id}/deployments"),
    ("POST", "/api/v1/models/{model_id}/rollback"),
    ("DELETE", "/api/v1/models/{model_id}/deployment"),
    ("GET", "/api/v1/models/{model_id}/rollout"),
    ("POST", "/api/v1/models/{model_id}/rollout/promote"),
    ("POST", "/api/v1/models/{model_id}/rollout/abort"),
    ("POST", "/api/v1/models/{model_id}/predict"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/api/v1/models/{model_id}/v1/chat/completions"),
    ("POST", "/api/v1/models/{model_id}/v1/completions"),
    ("POST", "/api/v1/models/{model_id}/v1/embeddings"),
    ("GET", "/v2"),
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{model_id}"),
    ("GET", "/v2/models/{model_id}/ready"),
    ("POST", "/v2/models/{model_id}/infer"),
    ("GET", "/v2/models/{model_id}/versions/{version}"),
    ("GET", "/v2/models/{model_id}/versions/{version}/ready"),
    ("POST", "/v2/models/{model_id}/versions/{version}/infer"),
    ("GET", "/api/v1/deployments/{id}"),
    ("GET", "/api/v1/deployments/{id}/events"),
    ("GET", "/api/v1/costs"),
    ("GET", "/api/v1/admin/dlq"),
    ("POST", "/api/v1/admin/dlq/replay"),
    ("DELETE", "/api/v1/admin/dlq/{id}"),
    ("POST", "/api/v1/webhooks/mlflow"),
];

/// Public operations: no key.
const PUBLIC: [&str; 11] = [
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/dashboard",
    "/dashboard/app.js",
    "/dashboard/app.css",
    "/api/v1/webhooks/mlflow",
    "/v2/health/live",
    "/v2/health/ready",
];

/// The error schema of a route: the protocol routes answer in their protocol's shape.
fn error_schema(path: &str) -> &'static str {
    if path == "/v2" || path.starts_with("/v2/") {
        "#/components/schemas/OipErrorResponse"
    } else if path.starts_with("/v1/") || path.contains("}/v1/") {
        "#/components/schemas/OpenAiErrorResponse"
    } else {
        "#/components/schemas/ErrorResponse"
    }
}

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(response.status(), 200);
    response.json().await.expect("valid JSON")
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    operations(doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

fn routes() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_covers_every_route() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let doc = document(&app).await;

    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    assert_eq!(documented(&doc), routes());
}

#[tokio::test]
async fn every_listed_route_is_served_by_the_router() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    for (method, path) in routes() {
        let url = format!(
            "{}{}",
            app.url,
            path.replace("{model_id}", "model-a")
                .replace("{id}", "0190b2a4-0000-7000-8000-000000000000")
                .replace("{version}", "1")
        );
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .client
            .request(method.clone(), &url)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.text().await.expect("body");

        assert_ne!(status, 405, "{method} {path}: method not routed");
        assert!(
            !body.contains("no route for"),
            "{method} {path}: the router does not serve it"
        );
    }
}

#[tokio::test]
async fn protected_operations_declare_auth_errors_and_the_error_schema() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let doc = document(&app).await;

    let error = &doc["components"]["schemas"]["ErrorResponse"];
    let mut required: Vec<&str> = error["required"]
        .as_array()
        .expect("required fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort();
    assert_eq!(required, ["detail", "error", "request_id"]);
    let openai = &doc["components"]["schemas"]["OpenAiErrorResponse"];
    assert_eq!(openai["required"], serde_json::json!(["error"]), "{openai}");
    let oip = &doc["components"]["schemas"]["OipErrorResponse"];
    assert_eq!(oip["properties"]["error"]["type"], "string", "{oip}");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["api_key"]["name"], "X-API-Key", "{schemes}");
    for (method, path, op) in operations(&doc) {
        let responses = &op["responses"];
        if PUBLIC.contains(&path.as_str()) {
            assert!(op.get("security").is_none(), "{method} {path} is public");
            continue;
        }
        assert!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            "{method} {path}: no security"
        );
        for code in ["401", "403", "429", "500"] {
            let schema = &responses[code]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, error_schema(&path), "{method} {path}: {code}");
        }
    }
}

#[tokio::test]
async fn the_deployment_schema_has_the_served_fields() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let new = NewDeployment {
        id: DeploymentId::new(),
        model_id: ModelId::parse("fraud-detector").expect("id"),
        model_version: Some("1".into()),
        provider: "huggingface".into(),
        instance_type: "intel-spr".into(),
        instance_size: Some("x2".into()),
        vendor: None,
        region: None,
        task: None,
        framework: None,
        repository: Some("org/model".into()),
        revision: None,
        metadata: None,
        hourly_cost_usd: None,
        idempotency_key: None,
    };
    let command = Envelope::new(MessageKind::Deploy, new.id, serde_json::json!({}));
    let row = deployments::create(&app.db.conn, Route::Direct, new, &command)
        .await
        .expect("seed");

    let served: Value = app
        .get(&format!("/api/v1/deployments/{}", row.id), READ_KEY)
        .await
        .json()
        .await
        .expect("json");
    let doc = document(&app).await;

    let served: BTreeSet<&String> = served.as_object().expect("object").keys().collect();
    let schema = &doc["components"]["schemas"]["Deployment"]["properties"];
    let documented: BTreeSet<&String> = schema.as_object().expect("properties").keys().collect();
    assert_eq!(documented, served);
}

#[tokio::test]
async fn the_docs_page_renders_the_document() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;

    let response = app
        .client
        .get(format!("{}/docs", app.url))
        .send()
        .await
        .expect("docs");

    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.expect("page");
    assert!(page.contains("/openapi.json"));
}

#[tokio::test]
async fn the_api_reference_is_current() {
    let app = TestApp::start(Engine::Sqlite, &[]).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api-reference.md");

    let rendered = api_reference(&document(&app).await);

    let update = std::env::var("HOKUSAI_UPDATE_DOCS").ok();
    let ci = std::env::var("CI").ok();
    if rewrite_docs(update.as_deref(), ci.as_deref()).unwrap_or_else(|e| panic!("{e}")) {
        std::fs::write(path, &rendered).expect("write docs/api-reference.md");
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/api-reference.md is out of date; regenerate it with \
         `HOKUSAI_UPDATE_DOCS=1 cargo test -p tests --test openapi`"
    );
}

#[test]
fn ci_refuses_to_rewrite_the_api_reference() {
    assert_eq!(rewrite_docs(None, None), Ok(false));
    assert_eq!(rewrite_docs(Some("1"), None), Ok(true));
    assert_eq!(rewrite_docs(Some("1"), Some("false")), Ok(true));
    assert_eq!(rewrite_docs(Some("0"), Some("true")), Ok(false));
    assert_eq!(rewrite_docs(None, Some("true")), Ok(false));
    for ci in ["true", "1", "yes"] {
        assert!(rewrite_docs(Some("1"), Some(ci)).is_err(), "CI={ci}");
    }
}
