//! The OpenAI request bodies the emulated containers accept, parsed once into the few fields
//! the emulator uses. Other fields (`model`, `temperature`, …) are ignored, as TGI and TEI
//! ignore what they do not implement; a `null` optional field counts as absent (serde's
//! `Option`, which both containers use).

use serde_json::Value;

use super::OpenAiError;

/// `max_tokens` when the request has none.
pub(super) const DEFAULT_MAX_TOKENS: usize = 16;
/// The largest `max_tokens` honoured; larger values are capped.
pub(super) const MAX_TOKENS_CAP: usize = 256;

/// Which generation route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavour {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

/// A chat or completions request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Generation {
    pub flavour: Flavour,
    /// Chat: one prompt, the messages' contents joined by `\n`; completions: one per prompt,
    /// each answered by its own choice.
    pub prompts: Vec<String>,
    /// Words generated per prompt, in `1..=MAX_TOKENS_CAP`.
    pub max_tokens: usize,
    /// Answer as server-sent events.
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk carrying the usage.
    pub include_usage: bool,
}

impl Generation {
    /// A `/v1/chat/completions` body.
    pub(super) fn chat(body: &Value) -> Result<Self, OpenAiError> {
        let messages = optional(body, "messages")
            .and_then(Value::as_array)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("`messages` must be a non-empty array of messages"))?;
        let contents = messages
            .iter()
            .enumerate()
            .map(|(i, message)| content(i, message))
            .collect::<Result<Vec<_>, _>>()?;
        Self::with_options(Flavour::Chat, vec![contents.join("\n")], body)
    }

    /// A `/v1/completions` body.
    pub(super) fn completion(body: &Value) -> Result<Self, OpenAiError> {
        let prompts = strings(body, "prompt")?;
        Self::with_options(Flavour::Completion, prompts, body)
    }

    fn with_options(
        flavour: Flavour,
        prompts: Vec<String>,
        body: &Value,
    ) -> Result<Self, OpenAiError> {
        Ok(Self {
            flavour,
            prompts,
            max_tokens: max_tokens(body)?,
            stream: boolean(optional(body, "stream"), "stream")?,
            include_usage: include_usage(body)?,
        })
    }
}

/// How `/v1/embeddings` writes each vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// A JSON array of numbers (the default).
    Float,
    /// Base64 of the little-endian `f32` bytes (the official Python client's default).
    Base64,
}

/// A `/v1/embeddings` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Embeddings {
    /// One vector per input, in order.
    pub inputs: Vec<String>,
    pub encoding: Encoding,
}

impl Embeddings {
    /// A `/v1/embeddings` body.
    pub(super) fn parse(body: &Value) -> Result<Self, OpenAiError> {
        let inputs = strings(body, "input")?;
        let encoding = match optional(body, "encoding_format").map(|v| v.as_str()) {
            None | Some(Some("float")) => Encoding::Float,
            Some(Some("base64")) => Encoding::Base64,
            Some(_) => return Err(invalid("`encoding_format` must be \"float\" or \"base64\"")),
        };
        Ok(Self { inputs, encoding })
    }
}

fn invalid(message: impl Into<String>) -> OpenAiError {
    OpenAiError::Invalid(message.into())
}

/// `body[key]`, with `null` as absent.
fn optional<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

/// The string `content` of `messages[i]`, after checking its `role`.
fn content(i: usize, message: &Value) -> Result<&str, OpenAiError> {
    if !message.is_object() {
        return Err(invalid(format!("`messages[{i}]` must be an object")));
    }
    if !message["role"].is_string() {
        return Err(invalid(format!("`messages[{i}].role` must be a string")));
    }
    message["content"]
        .as_str()
        .ok_or_else(|| invalid(format!("`messages[{i}].content` must be a string")))
}

/// A string or a non-empty array of strings, as a list.
fn strings(body: &Value, key: &str) -> Result<Vec<String>, OpenAiError> {
    let wrong = || {
        invalid(format!(
            "`{key}` must be a string or a non-empty array of strings"
        ))
    };
    match optional(body, key) {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect(),
        _ => Err(wrong()),
    }
}

fn boolean(value: Option<&Value>, name: &str) -> Result<bool, OpenAiError> {
    match value {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("`{name}` must be a boolean"))),
    }
}

fn max_tokens(body: &Value) -> Result<usize, OpenAiError> {
    let Some(value) = optional(body, "max_tokens") else {
        return Ok(DEFAULT_MAX_TOKENS);
    };
    let n = value
        .as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| invalid("`max_tokens` must be a positive integer"))?;
    Ok(usize::try_from(n).map_or(MAX_TOKENS_CAP, |n| n.min(MAX_TOKENS_CAP)))
}

fn include_usage(body: &Value) -> Result<bool, OpenAiError> {
    match optional(body, "stream_options") {
        None => Ok(false),
        Some(options) if options.is_object() => boolean(
            optional(options, "include_usage"),
            "stream_options.include_usage",
        ),
        Some(_) => Err(invalid("`stream_options` must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chat_joins_contents_and_reads_options() {
        let body = json!({"messages": [{"role": "system", "content": "Be brief"},
                                        {"role": "user", "content": "Hi there"}],
                          "stream": true, "max_tokens": 1000,
                          "stream_options": {"include_usage": true}, "temperature": null});

        let parsed = Generation::chat(&body).unwrap();

        assert_eq!(parsed.prompts, vec!["Be brief\nHi there".to_owned()]);
        assert_eq!(parsed.max_tokens, MAX_TOKENS_CAP);
        assert!(parsed.stream && parsed.include_usage);
    }

    #[test]
    fn wrong_fields_are_validation_errors() {
        let message = |role: Value, content: Value| json!({"role": role, "content": content});
        let bad = [
            json!({"messages": []}),
            json!({"messages": ["hi"]}),
            json!({"messages": [message(json!(1), json!("x"))]}),
            json!({"messages": [message(json!("user"), json!(["x"]))]}),
            json!({"messages": [message(json!("user"), json!("x"))], "stream": "yes"}),
            json!({"messages": [message(json!("user"), json!("x"))], "max_tokens": 0}),
            json!({"messages": [message(json!("user"), json!("x"))], "max_tokens": 2.5}),
        ];

        for body in bad {
            let outcome = Generation::chat(&body);
            assert!(matches!(outcome, Err(OpenAiError::Invalid(_))), "{body}");
        }
        assert!(Generation::completion(&json!({"prompt": [1]})).is_err());
        assert!(Embeddings::parse(&json!({"input": "x", "encoding_format": "int8"})).is_err());
    }
}
