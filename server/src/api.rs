//! Wire types of the routes (their OpenAPI schemas are generated from these definitions).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The inputs of a request: a string, an array of strings, an array of token ids, or an array
/// of arrays of token ids. Token ids are used as given: pass what the model's tokenizer
/// produces, `[CLS]` and `[SEP]` included.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Input {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One text as token ids.
    Ids(Vec<u32>),
    /// Several texts as token ids.
    IdBatch(Vec<Vec<u32>>),
}

/// One input, after the request's shape is resolved.
#[derive(Debug, Clone)]
pub enum Item {
    Text(String),
    Ids(Vec<u32>),
}

impl Input {
    /// The inputs one by one, in request order.
    pub fn into_items(self) -> Vec<Item> {
        match self {
            Input::Text(s) => vec![Item::Text(s)],
            Input::Texts(v) => v.into_iter().map(Item::Text).collect(),
            Input::Ids(v) if v.is_empty() => Vec::new(),
            Input::Ids(v) => vec![Item::Ids(v)],
            Input::IdBatch(v) => v.into_iter().map(Item::Ids).collect(),
        }
    }
}

/// Which end of an over-long input is cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub enum TruncationDirection {
    /// Keep the end of the text.
    #[serde(alias = "left")]
    Left,
    /// Keep the start of the text (the default, as sentence-transformers).
    #[default]
    #[serde(alias = "right")]
    Right,
}

/// `POST /embed` (TEI).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub inputs: Input,
    /// L2-normalize the vectors (default true, as TEI; `false` gives the pooled vector).
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Cut inputs longer than the model's max_seq_length (default: the server's
    /// --auto-truncate); `false` makes such an input a 422.
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub truncation_direction: Option<TruncationDirection>,
    /// A prompt prepended to every text input: `query`, `passage`, or one of the model's
    /// config_sentence_transformers.json prompts (see GET /info).
    #[serde(default)]
    pub prompt_name: Option<String>,
    /// Keep the first `dimensions` components (Matryoshka), before normalizing.
    #[serde(default)]
    pub dimensions: Option<usize>,
}

/// `encoding_format` of `/v1/embeddings`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    /// The little-endian float32 bytes of each vector, standard base64.
    Base64,
}

/// `POST /v1/embeddings` (OpenAI).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiRequest {
    pub input: Input,
    /// Accepted and not checked (one model is served); the reply names the served model.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Keep the first `dimensions` components (Matryoshka), before normalizing.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted and ignored.
    #[serde(default)]
    pub user: Option<String>,
    /// An extension: a prompt prepended to every text input, as on `/embed`.
    #[serde(default)]
    pub prompt_name: Option<String>,
}

/// One vector of `/v1/embeddings`: floats, or a base64 string.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EmbeddingObject {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

/// The reply of `/v1/embeddings`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OpenAiResponse {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: Usage,
}

/// The reply of `GET /info`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InfoResponse {
    /// `--model` as given (a directory or a hub repo id).
    pub model_id: String,
    /// The revision of a hub model (`owner/name@revision`), else null.
    pub model_revision: Option<String>,
    /// The local directory the model was loaded from.
    pub model_dir: String,
    pub served_model_name: String,
    pub model_type: &'static str,
    pub precision: String,
    pub isa: String,
    pub threads: usize,
    pub dimension: usize,
    pub max_input_length: usize,
    pub pooling: String,
    /// Whether the model's pipeline normalizes (what `/v1/embeddings` returns).
    pub normalize: bool,
    pub prompts: BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
    pub max_batch_tokens: usize,
    pub max_client_batch_size: usize,
    pub max_queue_tokens: usize,
    pub max_concurrent_requests: usize,
    pub payload_limit: usize,
    pub request_timeout_seconds: f64,
    pub auto_truncate: bool,
    pub auth: bool,
    pub version: &'static str,
}

/// The reply of `GET /health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok`, or `unhealthy`.
    pub status: &'static str,
}
