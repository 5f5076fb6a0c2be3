//! The registry objects of MLflow's REST answers that the integration reads: model
//! versions, registered models and their `{key, value}` tags. Empty fields are often left
//! out by MLflow, so every collection defaults to empty.

use serde::Deserialize;

/// A `{key, value}` tag.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A model version as `model-versions/get` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelVersion {
    /// Registered model name.
    pub name: String,
    /// Version number, as a string.
    pub version: String,
    /// Where the model's files are.
    #[serde(default)]
    pub source: Option<String>,
    /// The run that logged it (`""` or absent for logged models).
    #[serde(default)]
    pub run_id: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// Aliases pointing at it.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A registered model as `registered-models/get` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegisteredModel {
    /// Name.
    pub name: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// The value of `key` among `tags`.
pub fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key == key).map(|t| t.value.as_str())
}
