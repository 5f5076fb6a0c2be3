//! A string that must never reach logs, errors or panics.
//!
//! `Debug` and `Display` print `[redacted]`; the value is reachable only through
//! [`Secret::expose`], so every place that uses a secret is greppable.

use std::fmt;

/// A secret value (API token, password, HMAC key, URL with credentials).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Call it only where the value is sent to its destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Replaces the password of a `scheme://user:password@host/…` URL (and a `password=`
/// query parameter) with `[redacted]`, so connection strings can be shown to an operator.
pub fn redact_url_password(url: &str) -> String {
    let url = redact_authority_password(url);
    match url.find("password=") {
        Some(start) => {
            let value_start = start + "password=".len();
            let value_end = url[value_start..]
                .find('&')
                .map_or(url.len(), |i| value_start + i);
            format!("{}[redacted]{}", &url[..value_start], &url[value_end..])
        }
        None => url,
    }
}

fn redact_authority_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:[redacted]{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &url[scheme_end + 3 + at..]
        ),
        // `https://token@host`: over HTTP a lone user name is a credential (a token).
        (Some(at), _) if url.starts_with("http") => format!(
            "{}[redacted]{}",
            &url[..scheme_end + 3],
            &url[scheme_end + 3 + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("hf_abcdef");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "hf_abcdef");
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url_password("postgres://app:s3cret@db:5432/hokusai"),
            "postgres://app:[redacted]@db:5432/hokusai"
        );
        assert_eq!(
            redact_url_password("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:[redacted]@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url_password("postgres://app@db/hokusai?password=x:y@z&sslmode=require"),
            "postgres://app@db/hokusai?password=[redacted]&sslmode=require"
        );
        assert_eq!(
            redact_url_password("https://hf_token123@mlflow.example/api?x=1"),
            "https://[redacted]@mlflow.example/api?x=1"
        );
        assert_eq!(
            redact_url_password("sqlite://.hokusai/hokusai.db"),
            "sqlite://.hokusai/hokusai.db"
        );
    }
}
