//! The OpenAI-compatible routes of HF's serving containers, under each endpoint's
//! `status.url`: TGI's (`text-generation`) `/v1/chat/completions` and `/v1/completions`,
//! TEI's (`feature-extraction`, `sentence-embeddings`) `/v1/embeddings`. An endpoint of
//! another task answers 404, as a container without the route does.
//!
//! The proxy in front behaves as for predictions (`inference`: auth, 503 while waking, 400
//! when paused, and the 500s of the endpoint's `predict_error_rate`). Answers are deterministic: the words generated for a prompt depend only on
//! the prompt, so tests can assert values; errors have TGI's `{"error", "error_type"}`
//! shape. `request` parses the bodies, `stream` writes the server-sent events.

mod request;
mod stream;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::config::ChaosConfig;
use crate::inference::reach_container;
use crate::predictions;
use crate::store::Store;
use request::{Embeddings, Encoding, Flavour, Generation};

/// The `model` field of generation answers (TGI serves one model, whatever is asked).
const GENERATION_MODEL: &str = "tgi";
/// The `model` field of embedding answers.
const EMBEDDING_MODEL: &str = "tei";
/// The task of an endpoint created without one (the default container's).
const DEFAULT_TASK: &str = "text-classification";
/// The words generated text is made of.
const WORDS: [&str; 16] = [
    "the", "model", "says", "hello", "and", "a", "quick", "answer", "to", "your", "question", "is",
    "here", "with", "some", "words",
];

/// The per-endpoint OpenAI routes.
pub fn router() -> Router<Store> {
    let routes = [Route::Chat, Route::Completions, Route::Embeddings];
    routes.into_iter().fold(Router::new(), |router, route| {
        let path = format!("/endpoints/{{namespace}}/{{name}}{}", route.path());
        let handler = move |store, at, headers, body| serve(route, store, at, headers, body);
        router.route(&path, post(handler))
    })
}

/// Why a container refuses an OpenAI request.
#[derive(Debug)]
enum OpenAiError {
    /// 404: the endpoint's container has no such route.
    NoRoute { task: String, path: &'static str },
    /// 400: the body is not JSON.
    Unreadable(String),
    /// 422: JSON, but fields are missing or of the wrong type.
    Invalid(String),
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let (status, error, error_type) = match self {
            Self::NoRoute { task, path } => (
                StatusCode::NOT_FOUND,
                format!("Not Found: the {task} container has no {path} route"),
                "not_found",
            ),
            Self::Unreadable(cause) => (
                StatusCode::BAD_REQUEST,
                format!("Failed to parse the request body as JSON: {cause}"),
                "validation",
            ),
            Self::Invalid(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Input validation error: {message}"),
                "validation",
            ),
        };
        (
            status,
            Json(json!({"error": error, "error_type": error_type})),
        )
            .into_response()
    }
}

/// One of the three routes.
#[derive(Debug, Clone, Copy)]
enum Route {
    Chat,
    Completions,
    Embeddings,
}

impl Route {
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
        }
    }

    /// Whether the container serving `task` has this route.
    fn served_by(self, task: &str) -> bool {
        match self {
            Self::Chat | Self::Completions => task == "text-generation",
            Self::Embeddings => matches!(task, "feature-extraction" | "sentence-embeddings"),
        }
    }
}

/// The proxy's checks (waking a scaled-to-zero endpoint, injected 500s), then the
/// container's answer.
async fn serve(
    route: Route,
    State(store): State<Store>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let task = match reach_container(&store, &ns, &name, &headers).await {
        Ok(task) => task.unwrap_or_else(|| DEFAULT_TASK.to_owned()),
        Err(refusal) => return refusal.into_response(),
    };
    answer(route, &task, &body, &store.chaos()).unwrap_or_else(IntoResponse::into_response)
}

fn answer(
    route: Route,
    task: &str,
    body: &[u8],
    chaos: &ChaosConfig,
) -> Result<Response, OpenAiError> {
    if !route.served_by(task) {
        let task = task.to_owned();
        return Err(OpenAiError::NoRoute {
            task,
            path: route.path(),
        });
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|e| OpenAiError::Unreadable(e.to_string()))?;
    let generation = match route {
        Route::Chat => Generation::chat(&body)?,
        Route::Completions => Generation::completion(&body)?,
        Route::Embeddings => return Ok(Json(embed(&Embeddings::parse(&body)?)).into_response()),
    };
    let frame = Frame::new(generation.flavour);
    Ok(if generation.stream {
        stream::response(frame, generation, chaos)
    } else {
        Json(frame.complete(&generation)).into_response()
    })
}

/// `max_tokens` words generated from `prompt`: the FNV-1a hash of the prompt seeds a
/// SplitMix64 sequence whose i-th value picks word i.
fn generate(prompt: &str, max_tokens: usize) -> impl Iterator<Item = &'static str> + use<> {
    let seed = predictions::fnv1a(prompt);
    (1..=max_tokens as u64).map(move |i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        WORDS[((z ^ (z >> 31)) % WORDS.len() as u64) as usize]
    })
}

/// The emulator's tokenizer: whitespace-separated words, at least one.
fn count_tokens(text: &str) -> usize {
    text.split_whitespace().count().max(1)
}

/// The `usage` object: every prompt is answered with exactly `max_tokens` words.
fn usage(request: &Generation) -> Value {
    let prompt: usize = request.prompts.iter().map(|p| count_tokens(p)).sum();
    let completion = request.prompts.len() * request.max_tokens;
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion})
}

/// What every answer (and chunk) of one generation shares.
#[derive(Debug, Clone)]
struct Frame {
    flavour: Flavour,
    id: String,
    created: u64,
}

impl Frame {
    fn new(flavour: Flavour) -> Self {
        let prefix = match flavour {
            Flavour::Chat => "chatcmpl",
            Flavour::Completion => "cmpl",
        };
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let id = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
        Self {
            flavour,
            id,
            created,
        }
    }

    /// The whole, non-streamed answer.
    fn complete(&self, request: &Generation) -> Value {
        let choices: Vec<Value> = (request.prompts.iter().enumerate())
            .map(|(index, prompt)| {
                let text: Vec<&str> = generate(prompt, request.max_tokens).collect();
                self.choice(index, false, text.join(" "), Some("length"))
            })
            .collect();
        let object = match self.flavour {
            Flavour::Chat => "chat.completion",
            Flavour::Completion => "text_completion",
        };
        self.envelope(object, choices, usage(request))
    }

    /// One streamed piece of text for choice `index`.
    fn chunk(&self, index: usize, text: String, last: bool) -> Value {
        let choice = self.choice(index, true, text, last.then_some("length"));
        self.envelope(self.chunk_object(), vec![choice], Value::Null)
    }

    /// The streamed usage chunk (`include_usage`).
    fn usage_chunk(&self, usage: Value) -> Value {
        self.envelope(self.chunk_object(), Vec::new(), usage)
    }

    fn chunk_object(&self) -> &'static str {
        match self.flavour {
            Flavour::Chat => "chat.completion.chunk",
            Flavour::Completion => "text_completion",
        }
    }

    fn choice(&self, index: usize, delta: bool, text: String, finish: Option<&str>) -> Value {
        let mut choice = json!({"index": index, "logprobs": null, "finish_reason": finish});
        match (self.flavour, delta) {
            (Flavour::Chat, false) => {
                choice["message"] = json!({"role": "assistant", "content": text});
            }
            (Flavour::Chat, true) => {
                choice["delta"] = json!({"role": "assistant", "content": text});
            }
            (Flavour::Completion, _) => choice["text"] = json!(text),
        }
        choice
    }

    fn envelope(&self, object: &str, choices: Vec<Value>, usage: Value) -> Value {
        json!({"id": self.id, "object": object, "created": self.created,
               "model": GENERATION_MODEL, "system_fingerprint": "emulator",
               "choices": choices, "usage": usage})
    }
}

/// The `/v1/embeddings` answer: the feature-extraction vector of each input, as `f32`.
fn embed(request: &Embeddings) -> Value {
    let data: Vec<Value> = (request.inputs.iter().enumerate())
        .map(|(index, input)| {
            let vector: Vec<f32> = (predictions::embedding(input).into_iter())
                .map(|x| x as f32)
                .collect();
            let embedding = match request.encoding {
                Encoding::Float => json!(vector),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(STANDARD.encode(bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: usize = request.inputs.iter().map(|i| count_tokens(i)).sum();
    json!({"object": "list", "data": data, "model": EMBEDDING_MODEL,
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_whitespace_separated_words_and_never_zero() {
        assert_eq!(count_tokens("Say  hello\nto me\t"), 4);
        assert_eq!(count_tokens(""), 1);
        assert_eq!(count_tokens("   "), 1);
    }

    #[test]
    fn the_generator_depends_only_on_the_prompt() {
        let first: Vec<_> = generate("What is deep learning?", 32).collect();
        let again: Vec<_> = generate("What is deep learning?", 32).collect();
        let other: Vec<_> = generate("What is shallow learning?", 32).collect();
        let prefix: Vec<_> = generate("What is deep learning?", 5).collect();

        assert_eq!(first, again);
        assert_ne!(first, other);
        assert_eq!(first[..5], prefix[..]);
        assert!(first.iter().all(|w| WORDS.contains(w)));
        assert!(first.iter().collect::<std::collections::HashSet<_>>().len() > 4);
    }

    #[test]
    fn usage_sums_prompts_and_generated_words() {
        let request = Generation::completion(&json!({"prompt": ["a b", "c"], "max_tokens": 3}));

        let counted = usage(&request.unwrap());

        assert_eq!(
            counted,
            json!({"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9})
        );
    }

    #[test]
    fn a_chat_answer_has_tgis_shape_and_a_wrong_task_has_no_route() {
        let body = br#"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}"#;
        let request = Generation::chat(&serde_json::from_slice(body).unwrap()).unwrap();

        let answer = Frame::new(Flavour::Chat).complete(&request);
        let refused = answer_for("text-classification", body);

        assert_eq!(answer["object"], "chat.completion");
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(content.split(' ').count(), 2);
        assert!(matches!(refused, Err(OpenAiError::NoRoute { .. })));
    }

    fn answer_for(task: &str, body: &[u8]) -> Result<Response, OpenAiError> {
        answer(Route::Chat, task, body, &ChaosConfig::default())
    }
}
