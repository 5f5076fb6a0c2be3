//! The API's own description: `GET /openapi.json` (an OpenAPI 3.1 document generated from
//! the handlers' `#[utoipa::path]` annotations and the types' `ToSchema` derives) and
//! `GET /docs` (a self-contained page that renders it; no CDN, so it works offline).
//! Neither needs a key.
//!
//! Every route of this module tree is listed in [`ApiDoc`]; the test
//! `tests/tests/openapi.rs` compares the document's operations with the routes, so a route
//! added without its annotation fails.

use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, Server};
use utoipa::{Modify, OpenApi};

use super::{
    admin, costs, dashboard, deployments, health, model_deployments, models, oip, openai, predict,
    rollouts, webhooks,
};
use crate::error::{ErrorResponse, OipErrorResponse, OpenAiErrorResponse, Shape};
use crate::state::AppState;

/// `/openapi.json` and `/docs`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
}

/// The document's root: every operation, the error schema and the security schemes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "hokusai-serve",
        description = "Turns models registered in MLflow into live, authenticated prediction \
            endpoints. Authenticate with `Authorization: Bearer <key>`, `Authorization: ApiKey \
            <key>` or `X-API-Key: <key>`; each operation's security lists the scope it needs. \
            Every error answers `{\"detail\", \"error\", \"request_id\"}` (schema `ErrorResponse`) \
            and every response carries `X-Request-Id`; the OpenAI-compatible routes answer \
            errors in OpenAI's shape (`OpenAiErrorResponse`) and the Open Inference Protocol \
            routes in theirs (`OipErrorResponse`).",
    ),
    paths(
        health::health,
        health::ready,
        health::metrics,
        openapi_json,
        docs,
        dashboard::page,
        dashboard::script,
        dashboard::stylesheet,
        models::list,
        models::show,
        model_deployments::deploy,
        model_deployments::rollback,
        model_deployments::undeploy,
        model_deployments::status,
        rollouts::show,
        rollouts::promote,
        rollouts::abort,
        predict::predict,
        openai::chat,
        openai::completions,
        openai::embeddings,
        openai::models,
        openai::chat_of,
        openai::completions_of,
        openai::embeddings_of,
        oip::server_metadata,
        oip::live,
        oip::ready,
        oip::metadata,
        oip::model_ready,
        oip::infer,
        oip::version_metadata,
        oip::version_ready,
        oip::version_infer,
        deployments::show,
        deployments::events,
        costs::costs,
        admin::list,
        admin::replay,
        admin::purge,
        webhooks::receive,
    ),
    components(schemas(ErrorResponse, OpenAiErrorResponse, OipErrorResponse)),
    modifiers(&SecuritySchemes, &CommonResponses),
    tags(
        (name = "ops", description = "Health, readiness, metrics, this documentation and the dashboard; no key"),
        (name = "models", description = "Deployed models (scope `read`)"),
        (name = "model actions", description = "Deploy, roll back, undeploy, promote or abort a rollout (scope `model:write`); status and rollout (`read`)"),
        (name = "predict", description = "Predictions (scope `predict` or `predict:{model_id}`)"),
        (name = "openai", description = "OpenAI-compatible routes for text-generation and feature-extraction models (scope `predict` or `predict:{model_id}`; errors as `OpenAiErrorResponse`)"),
        (name = "open inference protocol", description = "Open Inference Protocol V2 / KServe V2 (scope `predict` or `predict:{model_id}`; the health routes need no key; errors as `OipErrorResponse`)"),
        (name = "deployments", description = "One deployment and its event log (scope `read`)"),
        (name = "costs", description = "Cost accounting (scope `read`)"),
        (name = "admin", description = "Dead letters (scope `admin`)"),
        (name = "webhooks", description = "MLflow listener (HMAC signature, no key)"),
    ),
)]
pub struct ApiDoc;

/// Declares the two ways to present a key; operations name the scope they need in theirs.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer <key>` (or `Authorization: ApiKey <key>`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "`X-API-Key: <key>`",
            ))),
        );
        openapi.servers = Some(vec![Server::new("/")]);
    }
}

/// Documents on every operation the answers that do not depend on the handler, so the
/// document lists every status a route can give (a schema-driven client, and the fuzz test,
/// hold us to it): with a key, 401 / 403 / 429 (`RATE_LIMITED`, `QUOTA_EXCEEDED` on the
/// prediction routes); with a path parameter, 422 for one that is not UTF-8; with a body,
/// 400 / 413 / 422; on every route but the probes (`bounds.rs`), 503 `OVERLOADED` and, the
/// prediction routes aside, 504 `TIMEOUT`; and 500 — each in the route's error shape
/// (`crate::error::Shape`). An annotation's own description of a status wins.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::path::{HttpMethod, Operation};
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |schema: &str, description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(schema)))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let probe = crate::bounds::PROBES.contains(&path.as_str());
            let predict = crate::observe::PREDICTION_ROUTES.contains(&path.as_str());
            let schema = match Shape::of(Some(path)) {
                Shape::Hokusai => "ErrorResponse",
                Shape::OpenAi => "OpenAiErrorResponse",
                Shape::Oip => "OipErrorResponse",
            };
            let templated = path.contains('{');
            let operations: [(HttpMethod, &mut Option<Operation>); 5] = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ];
            for (_, operation) in operations {
                let Some(op) = operation.as_mut() else {
                    continue;
                };
                let keyed = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let body = op.request_body.is_some();
                let mut add = |status: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(schema, description).into());
                };
                if keyed {
                    add(
                        "401",
                        "UNAUTHORIZED: no API key, or an invalid or expired one",
                    );
                    add("403", "FORBIDDEN: the key lacks the required scope");
                    add(
                        "429",
                        if predict {
                            "RATE_LIMITED: the key's hourly allowance is spent, or too many failed authentications from this address (`Retry-After`); QUOTA_EXCEEDED: the key's monthly prediction quota is spent"
                        } else {
                            "RATE_LIMITED: the key's hourly allowance is spent, or too many failed authentications from this address (`Retry-After`)"
                        },
                    );
                }
                if templated {
                    add(
                        "422",
                        "VALIDATION_ERROR: a path parameter is not valid UTF-8",
                    );
                }
                if body {
                    add("400", "BAD_REQUEST: the body is not readable");
                    add(
                        "413",
                        "PAYLOAD_TOO_LARGE: the body exceeds `MAX_BODY_BYTES`",
                    );
                    add(
                        "422",
                        "VALIDATION_ERROR: the body does not have the documented shape",
                    );
                }
                if !probe {
                    add(
                        "503",
                        "OVERLOADED: more than `MAX_CONCURRENT_REQUESTS` requests in flight (`Retry-After`)",
                    );
                    if !predict {
                        add(
                            "504",
                            "TIMEOUT: the request took longer than `REQUEST_TIMEOUT_SECONDS`",
                        );
                    }
                }
                add("500", "INTERNAL: unexpected failure (logged, never sent)");
            }
        }
    }
}

/// The document, built from the annotations.
pub fn document() -> Document {
    ApiDoc::openapi()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    operation_id = "openapi_json",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> Json<Document> {
    Json(document())
}

#[utoipa::path(
    get,
    path = "/docs",
    tag = "ops",
    operation_id = "docs",
    summary = "A human page rendering /openapi.json",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)),
)]
async fn docs() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_SECURITY_POLICY, docs_policy())],
        Html(DOCS_PAGE),
    )
}

/// The page of `/docs`.
const DOCS_PAGE: &str = include_str!("docs.html");

/// The page's Content-Security-Policy: its one inline script is allowed by hash, nothing
/// else runs, and it may fetch only from this origin (`/openapi.json`).
fn docs_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY
        .get_or_init(|| {
            use base64::Engine;
            use sha2::{Digest, Sha256};
            let script = DOCS_PAGE
                .split_once("<script>")
                .and_then(|(_, rest)| rest.split_once("</script>"))
                .map_or("", |(script, _)| script);
            let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
            format!(
                "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            )
        })
        .as_str()
}
