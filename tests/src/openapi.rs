//! Renders `docs/api-reference.md` from the OpenAPI document the API serves: one table row
//! per operation (method, path, summary, scopes, status codes), sorted by path then method.
//! `tests/tests/openapi.rs` compares the rendering with the committed file, so the
//! reference cannot drift from the code.

use serde_json::Value;

/// The HTTP methods an OpenAPI path item can hold, in the order rows are written.
pub const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// Every `(METHOD, path)` pair of the document, sorted.
pub fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    ops.push((method.to_uppercase(), path.clone(), op.clone()));
                }
            }
        }
    }
    ops.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    ops
}

/// The scopes an operation accepts (any one suffices), `none` for a public one.
pub fn scopes(op: &Value) -> String {
    let mut scopes: Vec<String> = op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|requirement| requirement.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        "none".to_owned()
    } else {
        scopes
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// The markdown reference of the document.
pub fn api_reference(doc: &Value) -> String {
    let mut out = String::from(
        "# API reference\n\n\
         Generated from `GET /openapi.json` by `tests/tests/openapi.rs`; do not edit by hand.\n\
         Regenerate with `HOKUSAI_UPDATE_DOCS=1 cargo test -p tests --test openapi`.\n\
         The live document is served at `/openapi.json` and rendered at `/docs`.\n\n\
         Keys go in `Authorization: Bearer <key>`, `Authorization: ApiKey <key>` or `X-API-Key`.\n\
         Every error answers `{\"detail\", \"error\", \"request_id\"}`.\n\n\
         | Method | Path | Summary | Scopes | Responses |\n\
         |---|---|---|---|---|\n",
    );
    for (method, path, op) in operations(doc) {
        let summary = op["summary"].as_str().unwrap_or_default();
        let mut codes: Vec<&String> = op["responses"]
            .as_object()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        codes.sort();
        let codes = codes
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {method} | `{path}` | {summary} | {} | {codes} |\n",
            scopes(&op)
        ));
    }
    let webhook = &doc["paths"]["/api/v1/webhooks/mlflow"]["post"]["description"];
    if let Some(text) = webhook.as_str() {
        out.push_str(&format!("\nMLflow webhook: {text}\n"));
    }
    out
}

/// Whether the API-reference check rewrites `docs/api-reference.md` instead of comparing it,
/// from the values of `HOKUSAI_UPDATE_DOCS` and `CI`. A rewrite makes the check pass by
/// construction, so it is a developer's tool only: in CI (`CI` set to anything but empty,
/// `0` or `false`, as `.ci/run` and CI services set it) asking for it is an error.
pub fn rewrite_docs(update: Option<&str>, ci: Option<&str>) -> Result<bool, String> {
    let update = update == Some("1");
    let ci = ci.is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"));
    if update && ci {
        return Err("HOKUSAI_UPDATE_DOCS=1 is refused in CI: regenerate \
                    docs/api-reference.md locally and commit it"
            .to_owned());
    }
    Ok(update)
}
