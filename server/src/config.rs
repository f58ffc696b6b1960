//! The server's command line, which is also its library configuration ([`ServerConfig`]):
//! `e5embed-server --model ...` and `e5embed serve --model ...` take the same flags.

use std::time::Duration;

use clap::Parser;

/// Default inputs per request: OpenAI's own limit for `/v1/embeddings` (an array of at most
/// 2048 inputs), so an OpenAI client's batch is never refused for its size.
pub const DEFAULT_MAX_CLIENT_BATCH_SIZE: usize = 2048;
/// Default request body limit: TEI's `--payload-limit`.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 2_000_000;
/// Default queue capacity in tokens: four full requests of 2048 inputs at 256 tokens. Queued
/// tokens cost 4 bytes each (ids) plus the request's strings, so this is ~8 MB of ids.
pub const DEFAULT_MAX_QUEUE_TOKENS: usize = 2_097_152;
/// Default requests in progress at once (TEI's `--max-concurrent-requests`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

/// `e5embed-server`: an HTTP embedding server (OpenAI `/v1/embeddings`, TEI `/embed`) for one
/// BERT embedding model, with dynamic batching across requests.
#[derive(Debug, Clone, Parser)]
#[command(name = "e5embed-server", version, about)]
pub struct ServerConfig {
    /// Model: a local directory (Hugging Face layout) or a hub repo id `owner/name[@revision]`.
    #[arg(long, env = "E5EMBED_MODEL")]
    pub model: String,

    /// Address to listen on. The default is loopback only: pass 0.0.0.0 (and set --api-key) to
    /// serve other machines.
    #[arg(long, default_value = "127.0.0.1", env = "E5EMBED_HOST")]
    pub host: String,

    /// Port to listen on (0: any free port, printed at startup).
    #[arg(long, default_value_t = 8080, env = "E5EMBED_PORT")]
    pub port: u16,

    /// GEMM precision: f32, int8, bf16, or auto (the engine's choice, see `e5embed info`).
    #[arg(long, default_value = "auto")]
    pub precision: String,

    /// Engine worker threads (default: physical cores).
    #[arg(long)]
    pub threads: Option<usize>,

    /// Tokens per forward pass; the scheduler packs waiting inputs of all requests into
    /// forwards of at most this many tokens (default: the engine's, 2048 at f32, 1024 at int8).
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,

    /// Most inputs in one request (more: 422).
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENT_BATCH_SIZE)]
    pub max_client_batch_size: usize,

    /// Request body limit in bytes (more: 413).
    #[arg(long, default_value_t = DEFAULT_PAYLOAD_LIMIT)]
    pub payload_limit: usize,

    /// Queue capacity in tokens not yet embedded, all requests together: a request that would
    /// overflow it gets 429 (retry later); one larger than the whole capacity gets 413.
    #[arg(long, default_value_t = DEFAULT_MAX_QUEUE_TOKENS)]
    pub max_queue_tokens: usize,

    /// Requests in progress at once (more: 429).
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,

    /// Truncate inputs longer than the model's max_seq_length when the request does not say
    /// (`truncate` on /embed); with `false` such inputs get 422.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_truncate: bool,

    /// Seconds a request may take, from its first byte to its reply (more: 408, and its
    /// queued work is dropped).
    #[arg(long, default_value_t = 60.0)]
    pub request_timeout: f64,

    /// Require `Authorization: Bearer <KEY>` on every route but /health (compared in constant
    /// time).
    #[arg(long, env = "E5EMBED_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Prompt applied when a request names none: `query`, `passage`, or a prompt of the
    /// model's config_sentence_transformers.json (default: that file's default_prompt_name,
    /// else none).
    #[arg(long)]
    pub default_prompt_name: Option<String>,

    /// The model name in /v1/embeddings replies and /info (default: --model as given).
    #[arg(long)]
    pub served_model_name: Option<String>,

    /// Threads that tokenize requests (default: available cores).
    #[arg(long)]
    pub tokenization_workers: Option<usize>,
}

impl ServerConfig {
    /// A configuration with every default, for `model` (a directory or hub id).
    pub fn new(model: impl Into<String>) -> Self {
        let mut c = ServerConfig::parse_from(["e5embed-server", "--model", "x"]);
        c.model = model.into();
        c
    }

    /// The request timeout as a duration (at least 1 ms).
    pub fn request_timeout(&self) -> Duration {
        if self.request_timeout.is_finite() && self.request_timeout > 0.001 {
            Duration::from_secs_f64(self.request_timeout.min(1e6))
        } else {
            Duration::from_millis(1)
        }
    }
}
