//! Endpoint names: deterministic per deployment, so `deploy` is idempotent.
//!
//! `hk-{model-slug}-{short-id}`: the slug is the model id lowercased with every run of other
//! characters turned into one `-`, cut so the whole name fits HF's 32 characters; the short
//! id is the last 8 hex digits of the deployment id (the random bits of a UUIDv7, not its
//! timestamp, so two deployments created in the same minute still differ).

use std::fmt;

use crate::domain::{DeploymentId, ModelId};

/// A valid HF endpoint name: 1–32 of `a-z 0-9 -`, starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointName(String);

impl EndpointName {
    /// HF's limit.
    pub const MAX_LEN: usize = 32;
    const PREFIX: &'static str = "hk-";
    const SHORT_ID_LEN: usize = 8;

    /// The name of the endpoint serving `deployment` of `model`.
    pub fn for_deployment(model: &ModelId, deployment: DeploymentId) -> Self {
        let hex = deployment.0.simple().to_string();
        let short_id = &hex[hex.len() - Self::SHORT_ID_LEN..];
        let room = Self::MAX_LEN - Self::PREFIX.len() - 1 - Self::SHORT_ID_LEN;
        let mut slug = slugify(model.as_str());
        slug.truncate(room);
        let slug = slug.trim_end_matches('-');
        let slug = if slug.is_empty() { "model" } else { slug };
        Self(format!("{}{slug}-{short_id}", Self::PREFIX))
    }

    /// Checks HF's rules on a name read from elsewhere (a database row, a response).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_chars = raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let alnum_ends = raw.starts_with(|c: char| c.is_ascii_alphanumeric())
            && raw.ends_with(|c: char| c.is_ascii_alphanumeric());
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !valid_chars || !alnum_ends {
            return Err(format!(
                "`{raw}` is not a valid endpoint name (1-32 of a-z, 0-9, '-', alphanumeric ends)"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EndpointName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase alphanumerics, every other run of characters becomes a single `-`.
fn slugify(raw: &str) -> String {
    let mut slug = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn id(raw: &str) -> DeploymentId {
        DeploymentId(Uuid::parse_str(raw).expect("uuid"))
    }

    #[test]
    fn names_are_deterministic_and_readable() {
        let model = ModelId::parse("Fraud_Detector").expect("model id");
        let dep = id("0190f3a4-1111-7abc-8def-0123456789ab");
        let name = EndpointName::for_deployment(&model, dep);
        assert_eq!(name.as_str(), "hk-fraud-detector-456789ab");
        assert_eq!(name, EndpointName::for_deployment(&model, dep));
    }

    #[test]
    fn long_and_odd_model_ids_still_give_valid_names() {
        let dep = id("0190f3a4-1111-7abc-8def-0123456789ab");
        for raw in [
            "a".repeat(255),
            "___".to_owned(),
            "x.-_y".to_owned(),
            "21".to_owned(),
        ] {
            let model = ModelId::parse(&raw).expect("model id");
            let name = EndpointName::for_deployment(&model, dep);
            assert!(name.as_str().len() <= 32, "{name}");
            EndpointName::parse(name.as_str()).expect("valid name");
        }
        let cut =
            EndpointName::for_deployment(&ModelId::parse("abcdefghij-klmnopqrs-tuv").unwrap(), dep);
        assert_eq!(cut.as_str(), "hk-abcdefghij-klmnopqrs-456789ab");
    }

    #[test]
    fn deployments_of_the_same_minute_get_different_names() {
        let model = ModelId::parse("m").expect("model id");
        let a = EndpointName::for_deployment(&model, DeploymentId::new());
        let b = EndpointName::for_deployment(&model, DeploymentId::new());
        assert_ne!(a, b);
    }

    #[test]
    fn parse_enforces_hf_rules() {
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(33)] {
            assert!(EndpointName::parse(bad).is_err(), "{bad}");
        }
        assert!(EndpointName::parse("hk-a-1").is_ok());
    }
}
