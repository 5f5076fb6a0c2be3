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
         Every error answers `{\"detail\", \"error\", \"request_id\"}`, except on the\n\
         OpenAI-compatible routes (`/v1/...`, `/api/v1/models/{model_id}/v1/...`), which answer\n\
         OpenAI's `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, and the Open\n\
         Inference Protocol routes (`/v2/...`), which answer `{\"error\": \"...\"}`.\n\n\
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

/// Where a request lands in the document.
#[derive(Debug)]
pub enum Lookup {
    /// The operation for this method and path.
    Operation(Value),
    /// The path exists, but not with this method: it takes these (upper case).
    MethodNotAllowed(Vec<String>),
    /// No documented path matches.
    NoPath,
}

/// Whether the concrete `path` matches the template `template` (`{param}` matches one
/// segment, even an empty one inside the path: the router takes `/api/v1/models//predict`
/// to the predict route, whose handler refuses the empty id; a trailing empty one matches
/// nothing).
fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    let last = t.len().saturating_sub(1);
    t.len() == p.len()
        && t.iter().zip(&p).enumerate().all(|(n, (t, p))| {
            (t.starts_with('{') && t.ends_with('}') && (n < last || !p.is_empty())) || t == p
        })
}

/// The documented operation a request for `method` `path` (no query) reaches. A literal path
/// wins over a templated one, as in the router.
pub fn find_operation(doc: &Value, method: &str, path: &str) -> Lookup {
    let Some(paths) = doc["paths"].as_object() else {
        return Lookup::NoPath;
    };
    let mut candidates: Vec<(&String, &Value)> = paths
        .iter()
        .filter(|(template, _)| matches_template(template, path))
        .collect();
    candidates.sort_by_key(|(template, _)| template.matches('{').count());
    let Some((_, item)) = candidates.first() else {
        return Lookup::NoPath;
    };
    match item.get(method.to_lowercase()) {
        Some(op) => Lookup::Operation(op.clone()),
        None => Lookup::MethodNotAllowed(
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| m.to_uppercase())
                .collect(),
        ),
    }
}

/// The documented statuses of `op`.
pub fn statuses(op: &Value) -> Vec<u16> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_default()
}

/// The JSON schema `op` documents for `status`, if any.
pub fn response_schema(op: &Value, status: u16) -> Option<Value> {
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    (!schema.is_null()).then(|| schema.clone())
}

/// Checks `value` against `schema` (the subset of JSON Schema utoipa emits: `$ref`, `type`
/// (one or a list, `null` included), `properties`, `required`, `additionalProperties: false`,
/// `items`, `oneOf`, `anyOf`, `allOf`, `enum`). `Err` names the first place that differs.
pub fn validate(doc: &Value, schema: &Value, value: &Value) -> Result<(), String> {
    validate_at(doc, schema, value, "$")
}

fn validate_at(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &doc["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: unknown schema {reference}"));
        }
        return validate_at(doc, target, value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            validate_at(doc, s, value, at)?;
        }
    }
    for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        if let Some(options) = schema[key].as_array() {
            let passing = options
                .iter()
                .filter(|s| validate_at(doc, s, value, at).is_ok())
                .count();
            let ok = if exactly_one {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                return Err(format!(
                    "{at}: {passing} of the {key} schemas match {value}"
                ));
            }
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let fits = types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        });
        if !fits {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for required in schema["required"].as_array().into_iter().flatten() {
            if let Some(name) = required.as_str()
                && !object.contains_key(name)
            {
                return Err(format!("{at}: required `{name}` missing"));
            }
        }
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(s) => validate_at(doc, s, field, &format!("{at}.{name}"))?,
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    return Err(format!("{at}: `{name}` is not documented"));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(elements)) = (schema.get("items"), value.as_array()) {
        for (n, element) in elements.iter().enumerate() {
            validate_at(doc, items, element, &format!("{at}[{n}]"))?;
        }
    }
    Ok(())
}
