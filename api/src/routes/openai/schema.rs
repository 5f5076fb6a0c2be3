//! The OpenAPI schemas of the OpenAI-compatible routes. Requests and answers pass through to
//! the model's container (TGI, TEI) with only `model` changed, so the request and answer types
//! here name the fields clients rely on and say that the rest passes through; the model list
//! is ours and is served from [`ModelList`] itself.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/chat/completions`. Every other field of OpenAI's request (`max_tokens`,
/// `temperature`, `tools`, ...) passes to the container unchanged.
#[derive(ToSchema)]
#[schema(as = OpenAiChatCompletionRequest)]
#[allow(dead_code)] // the schema of a body passed through, never built
pub struct ChatCompletionRequest {
    /// The Hokusai model id (under `/api/v1/models/{model_id}/v1/` the path names the model
    /// and this may be anything).
    #[schema(example = "support-chat")]
    model: String,
    /// The conversation.
    messages: Vec<ChatMessage>,
    /// `true` answers Server-Sent Events chunk by chunk; must be a boolean.
    stream: Option<bool>,
    /// The most tokens to generate.
    max_tokens: Option<u32>,
}

/// One message of a conversation.
#[derive(ToSchema)]
#[schema(as = OpenAiChatMessage)]
#[allow(dead_code)] // the schema of a body passed through, never built
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    #[schema(example = "user")]
    role: String,
    /// The text.
    #[schema(example = "Where is my parcel?")]
    content: String,
}

/// `POST /v1/completions`. Every other field of OpenAI's request passes through unchanged.
#[derive(ToSchema)]
#[schema(as = OpenAiCompletionRequest)]
#[allow(dead_code)] // the schema of a body passed through, never built
pub struct CompletionRequest {
    /// The Hokusai model id.
    #[schema(example = "support-chat")]
    model: String,
    /// The prompt: a string or a list of strings.
    #[schema(value_type = Object)]
    prompt: Value,
    /// `true` answers Server-Sent Events chunk by chunk; must be a boolean.
    stream: Option<bool>,
    /// The most tokens to generate.
    max_tokens: Option<u32>,
}

/// `POST /v1/embeddings`. Every other field passes through unchanged.
#[derive(ToSchema)]
#[schema(as = OpenAiEmbeddingRequest)]
#[allow(dead_code)] // the schema of a body passed through, never built
pub struct EmbeddingRequest {
    /// The Hokusai model id.
    #[schema(example = "doc-embedder")]
    model: String,
    /// The text: a string or a list of strings.
    #[schema(value_type = Object)]
    input: Value,
    /// `float` (the default) or `base64` (little-endian float32, what the official Python
    /// client asks for).
    #[schema(example = "float")]
    encoding_format: Option<String>,
}

/// A chat or text completion as the container answers it, with `model` set to the Hokusai
/// model id. Streamed, the same objects arrive as `data:` events (`chat.completion.chunk`,
/// `delta` instead of `message`), the last one carrying `usage`, then `data: [DONE]`; a stream
/// cut upstream ends with a `data:` event holding an `error` object.
#[derive(ToSchema)]
#[schema(as = OpenAiCompletion)]
#[allow(dead_code)] // the schema of an answer passed through, never built
pub struct Completion {
    /// The container's id of the answer.
    id: String,
    /// `chat.completion` or `text_completion`.
    #[schema(example = "chat.completion")]
    object: String,
    /// Unix seconds.
    created: i64,
    /// The Hokusai model id.
    #[schema(example = "support-chat")]
    model: String,
    /// The generated choices (`message` for chat, `text` for completions) with their
    /// `finish_reason`.
    #[schema(value_type = Vec<Object>)]
    choices: Vec<Value>,
    /// Token counts (they feed `hokusai_tokens_total`).
    usage: Option<Usage>,
}

/// Token counts of an answer.
#[derive(ToSchema)]
#[schema(as = OpenAiUsage)]
#[allow(dead_code)] // the schema of an answer passed through, never built
pub struct Usage {
    /// Tokens of the prompt.
    prompt_tokens: u64,
    /// Tokens generated.
    completion_tokens: Option<u64>,
    /// Both.
    total_tokens: u64,
}

/// The answer of `POST /v1/embeddings` as the container gives it, with our `model`.
#[derive(ToSchema)]
#[schema(as = OpenAiEmbeddingList)]
#[allow(dead_code)] // the schema of an answer passed through, never built
pub struct EmbeddingList {
    /// `list`.
    #[schema(example = "list")]
    object: String,
    /// One embedding per input, each `{"object": "embedding", "index", "embedding"}` where
    /// `embedding` is a list of numbers, or a base64 string when asked.
    #[schema(value_type = Vec<Object>)]
    data: Vec<Value>,
    /// The Hokusai model id.
    #[schema(example = "doc-embedder")]
    model: String,
    /// Token counts.
    usage: Option<Usage>,
}

/// `GET /v1/models`.
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiModelList)]
pub struct ModelList {
    /// `list`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// The models with an active deployment the key may call.
    pub data: Vec<ModelCard>,
}

/// One model of [`ModelList`].
#[derive(Serialize, ToSchema)]
#[schema(as = OpenAiModel)]
pub struct ModelCard {
    /// The Hokusai model id: the `model` to send.
    #[schema(example = "support-chat")]
    pub id: String,
    /// `model`.
    #[schema(example = "model")]
    pub object: &'static str,
    /// When the serving deployment was created (Unix seconds).
    pub created: i64,
    /// `hokusai`.
    #[schema(example = "hokusai")]
    pub owned_by: &'static str,
}
