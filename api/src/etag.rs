//! The model's entity tag: its operation version (`shared::db::model_ops`), bumped by every
//! accepted operation and every activation. `GET /api/v1/models/{model_id}` and every write
//! on a model answer it in `ETag`; deploy, rollback and undeploy honour `If-Match`
//! (docs/design/http-api.md, "Conditional writes").

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::error::ApiError;

/// The `ETag` value of version `version` (a strong tag: `"7"`).
pub fn format(version: i64) -> String {
    format!("\"{version}\"")
}

/// Sets `ETag` on `response`.
pub fn set(response: &mut Response, version: i64) {
    if let Ok(value) = HeaderValue::from_str(&format(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// The version `If-Match` requires: `None` without the header or with `*`; a tag this server
/// never issued (a weak tag, another format) can match no version (RFC 9110 §13.1.1: strong
/// comparison), so it fails as stale. A header that is not an entity-tag list is a 400.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("If-Match must be visible ASCII".into()))?
        .trim();
    if value == "*" {
        return Ok(None);
    }
    let first = value.split(',').next().unwrap_or_default().trim();
    let tag = first.strip_prefix("W/").unwrap_or(first);
    let Some(opaque) = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return Err(ApiError::BadRequest(
            "If-Match must be `*` or an entity tag such as \"7\" (quotes included)".into(),
        ));
    };
    if first.starts_with("W/") {
        return Ok(Some(i64::MIN));
    }
    Ok(Some(opaque.parse().unwrap_or(i64::MIN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Result<Option<i64>, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        if_match(&headers)
    }

    #[test]
    fn if_match_takes_strong_tags_and_star() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(parsed("*").unwrap(), None);
        assert_eq!(parsed("\"7\"").unwrap(), Some(7));
        assert_eq!(parsed(" \"12\" ").unwrap(), Some(12));
        // Never issued by us: matches nothing.
        assert_eq!(parsed("W/\"7\"").unwrap(), Some(i64::MIN));
        assert_eq!(parsed("\"abc\"").unwrap(), Some(i64::MIN));
        assert!(matches!(parsed("7"), Err(ApiError::BadRequest(_))));
    }
}
