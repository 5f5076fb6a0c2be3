//! The v2 management routes: list, create, get, update, delete, pause, resume,
//! scale-to-zero and the hardware listing, with the real API's validation and errors.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::catalogue;
use crate::endpoint::Phase;
use crate::store::{ApiError, Store};

type Answer = Result<Json<Value>, ApiError>;

/// Routes that need the Bearer token.
pub fn protected() -> Router<Store> {
    Router::new()
        .route("/v2/endpoint/{namespace}", get(list).post(create))
        .route(
            "/v2/endpoint/{namespace}/{name}",
            get(get_one).put(update).delete(delete),
        )
        .route("/v2/endpoint/{namespace}/{name}/pause", post(pause))
        .route("/v2/endpoint/{namespace}/{name}/resume", post(resume))
        .route(
            "/v2/endpoint/{namespace}/{name}/scale-to-zero",
            post(scale_to_zero),
        )
        .route("/v2/provider/{namespace}", get(hardware))
}

/// Routes open to anyone (`GET /v2/provider`).
pub fn public() -> Router<Store> {
    Router::new().route("/v2/provider", get(hardware))
}

/// `http://{Host}`: URLs handed out point back at the address the client used.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

async fn hardware() -> Json<Value> {
    Json(catalogue::listing())
}

async fn list(
    State(store): State<Store>,
    Path(ns): Path<String>,
    headers: HeaderMap,
) -> Json<Value> {
    let items: Vec<Value> = store
        .list(Some(&ns), &base_url(&headers))
        .into_iter()
        .map(|e| e.raw)
        .collect();
    Json(json!({"items": items}))
}

async fn get_one(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    store.with_endpoint(&ns, &name, |r| Ok(Json(r.to_json(&base_url(&headers)))))
}

async fn create(
    State(store): State<Store>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let body = parse_json(&body)?;
    let name = body["name"]
        .as_str()
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    check_name(name)?;
    let kind = check_type(body.get("type"))?;
    check_spec(&body)?;
    let mut spec =
        json!({"provider": body["provider"], "compute": body["compute"], "model": body["model"]});
    if let Some(tags) = body.get("tags") {
        spec["tags"] = tags.clone();
    }
    store
        .insert(&ns, name, &kind, spec, &base_url(&headers))
        .map(Json)
}

async fn update(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let patch = parse_json(&body)?;
    let kind = patch.get("type").map(|t| check_type(Some(t))).transpose()?;
    store.with_endpoint(&ns, &name, |r| {
        let mut spec = r.spec.clone();
        for block in ["provider", "compute", "model"] {
            if let Some(part) = patch.get(block) {
                merge(&mut spec[block], part);
            }
        }
        if let Some(tags) = patch.get("tags") {
            spec["tags"] = tags.clone();
        }
        check_spec(&spec)?;
        r.spec = spec;
        if let Some(kind) = kind {
            r.kind = kind;
        }
        if matches!(
            r.phase,
            Phase::Running | Phase::Updating | Phase::ScaledToZero | Phase::Failed(_)
        ) {
            r.enter(Phase::Updating);
        }
        Ok(Json(r.to_json(&base_url(&headers))))
    })
}

async fn delete(State(store): State<Store>, Path((ns, name)): Path<(String, String)>) -> Answer {
    store.remove(&ns, &name)?;
    Ok(Json(json!({})))
}

async fn pause(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    store.with_endpoint(&ns, &name, |r| {
        r.enter(Phase::Paused);
        Ok(Json(r.to_json(&base_url(&headers))))
    })
}

async fn resume(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    store.with_endpoint(&ns, &name, |r| {
        match r.phase {
            Phase::Running => {
                return Err(ApiError::bad_request(format!(
                    "Endpoint {name} is already running"
                )));
            }
            Phase::Paused | Phase::Failed(_) => {
                r.doomed = false;
                r.enter(Phase::Initializing);
            }
            Phase::ScaledToZero => r.enter(Phase::Waking),
            _ => {}
        }
        Ok(Json(r.to_json(&base_url(&headers))))
    })
}

async fn scale_to_zero(
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    store.with_endpoint(&ns, &name, |r| {
        match r.phase {
            Phase::Running | Phase::ScaledToZero => r.enter(Phase::ScaledToZero),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Endpoint {name} is not running ({})",
                    r.state()
                )));
            }
        }
        Ok(Json(r.to_json(&base_url(&headers))))
    })
}

/// JSON syntax errors are plain text, like HF's.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::Text(
            StatusCode::BAD_REQUEST,
            format!("Json deserialize error: {e}"),
        )
    })
}

/// Objects merge key by key; `env`, `secrets`, `image` and everything else are replaced.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                let whole = matches!(k.as_str(), "env" | "secrets" | "image");
                match t.get_mut(k) {
                    Some(existing) if !whole && existing.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > 32 || !chars || !ends {
        return Err(ApiError::bad_request(format!(
            "Invalid endpoint name '{name}': lowercase letters, digits and '-', at most 32 characters"
        )));
    }
    Ok(())
}

fn check_type(kind: Option<&Value>) -> Result<String, ApiError> {
    match kind.and_then(Value::as_str) {
        Some(k @ ("public" | "authenticated" | "private" | "protected")) => Ok(k.to_owned()),
        None => Ok("authenticated".to_owned()),
        Some(other) => Err(ApiError::Text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "Json deserialize error: unknown variant `{other}`, expected one of `public`, `authenticated`, `private`"
            ),
        )),
    }
}

/// The model and hardware blocks of a create (or an updated spec).
fn check_spec(body: &Value) -> Result<(), ApiError> {
    let model = &body["model"];
    if model.get("task").is_some_and(Value::is_null) {
        return Err(ApiError::Text(
            StatusCode::BAD_REQUEST,
            "Json deserialize error: invalid type: null, expected a string at model.task".into(),
        ));
    }
    if model["repository"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("model.repository is required"));
    }
    let field = |block: &str, key: &str| body[block][key].as_str().unwrap_or("").to_owned();
    catalogue::check(
        &field("provider", "vendor"),
        &field("provider", "region"),
        &field("compute", "accelerator"),
        &field("compute", "instanceType"),
        &field("compute", "instanceSize"),
    )
    .map_err(ApiError::bad_request)
}
