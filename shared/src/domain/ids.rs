//! Identifiers. A [`ModelId`] is the MLflow registered-model name as it appears in URLs.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The MLflow registered-model name, e.g. `fraud-detector` or Hokusai's short ids like `21`.
///
/// Rules: 1–255 characters from `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`, so it
/// is safe in a URL path segment, a log field and a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ModelId(String);

/// Why a string is not a [`ModelId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model id {0}")]
pub struct InvalidModelId(&'static str);

impl ModelId {
    /// The longest accepted id, the width of `deployed_models.model_id`.
    pub const MAX_LEN: usize = 255;

    /// Checks the rules once; everything downstream trusts the value.
    pub fn parse(raw: &str) -> Result<Self, InvalidModelId> {
        if raw.is_empty() {
            return Err(InvalidModelId("must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidModelId("must be at most 255 characters"));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(InvalidModelId(
                "may contain only letters, digits, '.', '_' and '-'",
            ));
        }
        if raw.starts_with(['.', '-']) {
            return Err(InvalidModelId("must start with a letter, digit or '_'"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ModelId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A deployment's id (`deployed_models.id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeploymentId(pub Uuid);

impl DeploymentId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for DeploymentId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_mlflow_names_and_hokusai_short_ids() {
        for ok in ["fraud-detector", "21", "sentiment_v2", "a.b-c_D"] {
            assert_eq!(ModelId::parse(ok).expect(ok).as_str(), ok);
        }
    }

    #[test]
    fn rejects_what_is_unsafe_in_a_path_or_label() {
        assert!(ModelId::parse("").is_err());
        assert!(ModelId::parse("a/b").is_err());
        assert!(ModelId::parse("a b").is_err());
        assert!(ModelId::parse("..").is_err());
        assert!(ModelId::parse("-x").is_err());
        assert!(ModelId::parse(&"x".repeat(256)).is_err());
        assert!(ModelId::parse(&"x".repeat(255)).is_ok());
    }
}
