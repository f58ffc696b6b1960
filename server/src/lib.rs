//! e5embed-server: an HTTP embedding server for one e5embed model.
//!
//! - `POST /v1/embeddings` (OpenAI's API; also `/embeddings`), `POST /embed` (TEI's API),
//!   `GET /health`, `GET /info`, `GET /metrics` (Prometheus), `GET /openapi.json`.
//! - Requests are tokenized concurrently (a bounded set of blocking workers), admitted against
//!   a queue capacity in tokens, and batched across requests by one scheduler thread
//!   ([`scheduler`]) into the engine's padding-free forwards.
//! - Results are bitwise the library's (`Embedder::embed` of the same text).
//!
//! ```no_run
//! # async fn demo() -> Result<(), e5embed_server::StartError> {
//! let config = e5embed_server::ServerConfig::new("intfloat/e5-small-v2");
//! e5embed_server::run(config).await // serves on 127.0.0.1:8080 until SIGTERM / SIGINT
//! # }
//! ```
//!
//! In-process (tests, `e5embed serve`): [`Server::load`], then [`Server::serve`] on any
//! listener with any shutdown future.
#![deny(unsafe_code)]

pub mod api;
pub mod config;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod scheduler;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use e5embed::{Embedder, EmbedderOptions, Precision, Tokens};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use api::*;
pub use config::ServerConfig;
use error::{ApiError, ErrorType, Flavor};
use metrics::Metrics;
use scheduler::{Job, Refused, Scheduler};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Model(#[from] e5embed::Error),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The loaded model and everything the handlers share.
pub struct AppState {
    embedder: Arc<Embedder>,
    /// The model's tokenizer configured to cut the start of over-long texts
    /// (`truncation_direction: left`); the engine's own tokenizer cuts the end.
    left_tokenizer: tokenizers::Tokenizer,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
    info: InfoResponse,
    prompts: BTreeMap<String, String>,
    default_prompt: Option<String>,
    /// Whether the model's pipeline normalizes (the engine is loaded without, see `load`).
    model_normalize: bool,
    cfg: ServerConfig,
    api_key_hash: Option<[u8; 32]>,
    tokenize_permits: Semaphore,
    request_permits: Arc<Semaphore>,
}

/// A loaded server, ready to serve.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Resolves and loads the model (blocking: seconds), warms it up and starts the scheduler.
    pub fn load(cfg: ServerConfig) -> Result<Server, StartError> {
        let dir = e5embed::hub::resolve_model(&cfg.model)?;
        let precision = match cfg.precision.as_str() {
            "auto" => None,
            p => Some(p.parse::<Precision>()?),
        };
        for (what, v) in [
            ("--max-client-batch-size", cfg.max_client_batch_size),
            ("--payload-limit", cfg.payload_limit),
            ("--max-queue-tokens", cfg.max_queue_tokens),
            ("--max-concurrent-requests", cfg.max_concurrent_requests),
        ] {
            if v == 0 {
                return Err(StartError::Config(format!("{what} must be at least 1")));
            }
        }
        // The engine returns pooled vectors; the server normalizes per request, so one loaded
        // model serves both `normalize: true` and `false` (l2_normalize is the function the
        // engine itself applies: bitwise the same vectors).
        let model_normalize = e5embed::ModelConfig::from_dir(&dir)?.normalize;
        let mut options = EmbedderOptions::default().normalize(false);
        options.threads = cfg.threads;
        options.precision = precision;
        options.max_batch_tokens = cfg.max_batch_tokens;
        let embedder = Embedder::load_with(&dir, &options)?;
        let max_len = embedder.tokenizer().max_len();
        if cfg.max_queue_tokens < max_len {
            return Err(StartError::Config(format!(
                "--max-queue-tokens {} is below the model's max input length {max_len}",
                cfg.max_queue_tokens
            )));
        }
        let left_tokenizer = left_tokenizer(&dir.join("tokenizer.json"), max_len)?;
        let (prompts, file_default) = load_prompts(&dir)?;
        let default_prompt = cfg.default_prompt_name.clone().or(file_default);
        if let Some(p) = &default_prompt {
            if !prompts.contains_key(p) {
                return Err(StartError::Config(format!(
                    "default prompt name `{p}` is not one of the prompts: {}",
                    prompts.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        // Warm-up: one forward, so the first request does not pay first-touch costs.
        embedder.embed(&["warm up"])?;

        let metrics = Arc::new(Metrics::new().map_err(|e| StartError::Config(e.to_string()))?);
        let embedder = Arc::new(embedder);
        let scheduler = Scheduler::start(embedder.clone(), cfg.max_queue_tokens, metrics.clone())?;
        let workers = cfg
            .tokenization_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let revision = cfg
            .model
            .split_once('@')
            .filter(|_| !Path::new(&cfg.model).exists())
            .map(|(_, r)| r.to_owned());
        let info = InfoResponse {
            model_id: cfg.model.clone(),
            model_revision: revision,
            model_dir: dir.display().to_string(),
            served_model_name: cfg
                .served_model_name
                .clone()
                .unwrap_or_else(|| cfg.model.clone()),
            model_type: "embedding",
            precision: embedder.precision().to_string(),
            isa: embedder.gemm_kernel_name(),
            threads: embedder.threads(),
            dimension: embedder.dim(),
            max_input_length: max_len,
            pooling: format!("{:?}", embedder.config().pooling).to_lowercase(),
            normalize: model_normalize,
            prompts: prompts.clone(),
            default_prompt_name: default_prompt.clone(),
            max_batch_tokens: embedder.max_batch_tokens(),
            max_client_batch_size: cfg.max_client_batch_size,
            max_queue_tokens: cfg.max_queue_tokens,
            max_concurrent_requests: cfg.max_concurrent_requests,
            payload_limit: cfg.payload_limit,
            request_timeout_seconds: cfg.request_timeout().as_secs_f64(),
            auto_truncate: cfg.auto_truncate,
            auth: cfg.api_key.is_some(),
            version: env!("CARGO_PKG_VERSION"),
        };
        let api_key_hash = cfg
            .api_key
            .as_ref()
            .map(|k| Sha256::digest(k.as_bytes()).into());
        Ok(Server {
            state: Arc::new(AppState {
                embedder,
                left_tokenizer,
                scheduler,
                metrics,
                info,
                prompts,
                default_prompt,
                model_normalize,
                api_key_hash,
                tokenize_permits: Semaphore::new(workers),
                request_permits: Arc::new(Semaphore::new(cfg.max_concurrent_requests)),
                cfg,
            }),
        })
    }

    /// The engine the server runs (for comparing results in tests).
    pub fn embedder(&self) -> &Arc<Embedder> {
        &self.state.embedder
    }

    /// `GET /info`'s content.
    pub fn info(&self) -> &InfoResponse {
        &self.state.info
    }

    /// The routes with their layers (auth, metrics, timeout, tracing, panic catching).
    pub fn router(&self) -> Router {
        let s = self.state.clone();
        Router::new()
            .route("/embed", post(embed))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/embeddings", post(openai_embeddings))
            .route("/health", get(health))
            .route("/info", get(info))
            .route("/metrics", get(metrics_route))
            .route("/openapi.json", get(openapi_route))
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(s.clone(), auth))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                s.cfg.request_timeout(),
            ))
            .layer(middleware::from_fn_with_state(s.clone(), track))
            .layer(tower_http::catch_panic::CatchPanicLayer::new())
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .with_state(s)
    }

    /// Serves on `listener` until `shutdown` resolves; then stops accepting, finishes the
    /// requests in progress and returns (the scheduler thread ends with the last of them).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt;
        let router = self.router();
        drop(self);
        // Replies are small and latency-bound: no Nagle delay.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Loads the model, listens on `--host:--port`, and serves until SIGTERM or SIGINT; then
/// finishes the requests in progress and returns `Ok`.
pub async fn run(cfg: ServerConfig) -> Result<(), StartError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let server = tokio::task::spawn_blocking(move || Server::load(cfg))
        .await
        .map_err(|e| StartError::Config(format!("model loading failed: {e}")))??;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let info = server.info();
    tracing::info!(
        "e5embed-server {}: model {} ({}, dim {}, max input {} tokens, {} thread(s), {}), listening on http://{local}",
        info.version, info.model_id, info.precision, info.dimension, info.max_input_length,
        info.threads, info.isa
    );
    // The line tools/test-server and tools/loadtest wait for (stdout, flushed).
    println!("listening on http://{local}");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("signal received: finishing requests in progress, accepting no new ones");
}

fn left_tokenizer(path: &Path, max_len: usize) -> Result<tokenizers::Tokenizer, StartError> {
    let err =
        |e: tokenizers::Error| StartError::Config(format!("tokenizer {}: {e}", path.display()));
    let mut t = tokenizers::Tokenizer::from_file(path).map_err(err)?;
    t.with_padding(None);
    t.with_truncation(Some(tokenizers::TruncationParams {
        max_length: max_len,
        strategy: tokenizers::TruncationStrategy::LongestFirst,
        stride: 0,
        direction: tokenizers::TruncationDirection::Left,
    }))
    .map_err(err)?;
    Ok(t)
}

/// E5's prompts, overridden and extended by the model's `config_sentence_transformers.json`
/// (`prompts`, `default_prompt_name`), as sentence-transformers reads them.
fn load_prompts(dir: &Path) -> Result<(BTreeMap<String, String>, Option<String>), StartError> {
    let mut prompts = BTreeMap::from([
        ("query".to_owned(), e5embed::QUERY_PREFIX.to_owned()),
        ("passage".to_owned(), e5embed::PASSAGE_PREFIX.to_owned()),
    ]);
    let path = dir.join("config_sentence_transformers.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok((prompts, None));
    };
    let bad = |msg: String| StartError::Config(format!("{}: {msg}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(p) = v.get("prompts").filter(|p| !p.is_null()) {
        let map = p
            .as_object()
            .ok_or_else(|| bad("`prompts` is not an object".into()))?;
        for (k, v) in map {
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("prompt `{k}` is not a string")))?;
            prompts.insert(k.clone(), s.to_owned());
        }
    }
    let default = match v.get("default_prompt_name") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("`default_prompt_name` is not a string".into())),
    };
    Ok((prompts, default))
}

type S = State<Arc<AppState>>;

/// Reads the body (at most `--payload-limit` bytes) and parses it: 413 over the limit, 400 for
/// malformed JSON or invalid UTF-8, 422 for a well-formed body of the wrong shape.
async fn parse_body<T: serde::de::DeserializeOwned>(
    state: &AppState,
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(body, state.cfg.payload_limit).await?;
    // serde would also read a struct from a JSON array (its fields in order): refuse
    // anything but an object, telling malformed JSON (400) from another JSON value (422).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                Ok(_) => ApiError::validation("the body must be a JSON object"),
                Err(e) => ApiError::new(ErrorType::InvalidJson, format!("invalid JSON: {e}")),
            },
        );
    }
    serde_json::from_slice::<T>(&bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            // A data error can come before a syntax error further on (e.g. an unknown field,
            // then a trailing comma): malformed JSON is a 400 whatever serde met first.
            Category::Data if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() => {
                let msg = e.to_string();
                let msg = if msg.contains("untagged enum Input") {
                    format!(
                        "the input must be a string, an array of strings, an array of token ids \
                         (integers 0 to 4294967295) or an array of arrays of token ids{}",
                        msg.split_once(" at line")
                            .map(|(_, at)| format!(" (at line{at})"))
                            .unwrap_or_default()
                    )
                } else {
                    msg
                };
                ApiError::validation(msg)
            }
            _ => ApiError::new(ErrorType::InvalidJson, format!("invalid JSON: {e}")),
        }
    })
}

/// How much of an oversized body is read and dropped before the 413 is sent: a reply sent
/// while the client is still sending makes the server close a connection with unread data,
/// which clients see as a reset instead of the 413. Bodies announced larger than the limit plus
/// this are refused at once.
const DRAIN_EXTRA: usize = 8 << 20;

/// Reads a body of at most `limit` bytes (413 above it).
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use axum::body::HttpBody;
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::new(
            ErrorType::PayloadTooLarge,
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    };
    let drain_max = limit.saturating_add(DRAIN_EXTRA);
    if body.size_hint().lower() as usize > drain_max {
        return Err(too_large());
    }
    let mut buf = Vec::with_capacity((body.size_hint().lower() as usize).min(limit));
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(ErrorType::InvalidJson, format!("cannot read the body: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > drain_max {
                break;
            }
        }
    }
    if total > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

/// What a request asks for, beyond its inputs.
#[derive(Clone)]
struct Params {
    truncate: bool,
    direction: TruncationDirection,
    prompt: Option<String>,
    /// Whether an explicit prompt was given (it is an error with token-id inputs; the server's
    /// default prompt is not applied to them).
    explicit_prompt: bool,
    dimensions: Option<usize>,
    normalize: bool,
}

/// Requests of at most this many inputs and bytes are tokenized on the async thread.
const INLINE_TOKENIZE_INPUTS: usize = 2;
const INLINE_TOKENIZE_BYTES: usize = 1024;

/// Embeds a request's inputs: validation, tokenization, admission, the scheduler; returns
/// the vectors (cut and normalized as asked) and the token count.
async fn embed_items(
    state: &Arc<AppState>,
    input: Input,
    prompt_name: Option<String>,
    dimensions: Option<usize>,
    truncate: Option<bool>,
    direction: Option<TruncationDirection>,
    normalize: bool,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let _permit = state
        .request_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                ErrorType::Overloaded,
                format!(
                    "the server is handling its maximum of {} requests; retry later",
                    state.cfg.max_concurrent_requests
                ),
            )
        })?;
    let items = input.into_items();
    if items.is_empty() {
        return Err(ApiError::new(ErrorType::Empty, "the request has no inputs"));
    }
    if items.len() > state.cfg.max_client_batch_size {
        return Err(ApiError::validation(format!(
            "the request has {} inputs; the limit is {} (--max-client-batch-size)",
            items.len(),
            state.cfg.max_client_batch_size
        )));
    }
    let dim = state.embedder.dim();
    if let Some(d) = dimensions {
        if d == 0 || d > dim {
            return Err(ApiError::validation(format!(
                "dimensions must be between 1 and the model's {dim}, got {d}"
            )));
        }
    }
    let explicit_prompt = prompt_name.is_some();
    let prompt = match prompt_name.or_else(|| state.default_prompt.clone()) {
        None => None,
        Some(name) => Some(state.prompts.get(&name).cloned().ok_or_else(|| {
            ApiError::validation(format!(
                "unknown prompt_name `{name}`; this model's prompts are: {}",
                state.prompts.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?),
    };
    let params = Params {
        truncate: truncate.unwrap_or(state.cfg.auto_truncate),
        direction: direction.unwrap_or_default(),
        prompt,
        explicit_prompt,
        dimensions,
        normalize,
    };

    // A small request (a query or two) is tokenized right here: that takes tens of
    // microseconds, less than handing it to a blocking worker and back (measured: the hop
    // was ~0.15 ms of a lone query's latency). Anything bigger goes to a blocking worker
    // (bounded: --tokenization-workers at once), off the async threads.
    let start = Instant::now();
    let inline_bytes: usize = items
        .iter()
        .map(|i| match i {
            Item::Text(t) => t.len(),
            Item::Ids(ids) => ids.len() * 4,
        })
        .sum();
    let tokens = if items.len() <= INLINE_TOKENIZE_INPUTS && inline_bytes <= INLINE_TOKENIZE_BYTES {
        tokenize_items(state, items, &params)?
    } else {
        let tok_permit = state
            .tokenize_permits
            .acquire()
            .await
            .map_err(|_| ApiError::new(ErrorType::Unhealthy, "the server is shutting down"))?;
        let st = state.clone();
        let p = params.clone();
        let tokens = tokio::task::spawn_blocking(move || tokenize_items(&st, items, &p))
            .await
            .map_err(|e| {
                ApiError::new(ErrorType::Backend, format!("tokenization failed: {e}"))
            })??;
        drop(tok_permit);
        tokens
    };
    state
        .metrics
        .tokenization_seconds
        .observe(start.elapsed().as_secs_f64());
    let total_tokens: usize = tokens.iter().map(|t| t.ids.len()).sum();
    let truncated = tokens.iter().filter(|t| t.truncated).count();

    let (job, rx) = Job::new(tokens);
    state.scheduler.queue().submit(job).map_err(|r| match r {
        Refused::TooLarge { tokens, capacity } => ApiError::new(
            ErrorType::PayloadTooLarge,
            format!(
                "the request has {tokens} tokens, more than the queue holds ({capacity}, \
                 --max-queue-tokens): split it"
            ),
        ),
        Refused::Full {
            tokens,
            queued,
            capacity,
        } => ApiError::new(
            ErrorType::Overloaded,
            format!(
                "the queue is full ({queued} of {capacity} tokens queued, this request has \
                 {tokens}); retry later"
            ),
        ),
        Refused::Stopped => ApiError::new(ErrorType::Unhealthy, "the server is shutting down"),
    })?;
    // If this future is dropped (client gone, timeout), `rx` is dropped with it and the
    // scheduler drops the job's queued inputs.
    let vectors = rx
        .await
        .map_err(|_| ApiError::new(ErrorType::Unhealthy, "the scheduler stopped"))?
        .map_err(|e| error::from_engine(&e))?;
    state.metrics.inputs.inc_by(vectors.len() as u64);
    state.metrics.tokens.inc_by(total_tokens as u64);
    state.metrics.truncated_inputs.inc_by(truncated as u64);

    let vectors = vectors
        .into_iter()
        .map(|mut v| {
            if let Some(d) = params.dimensions {
                v.truncate(d);
            }
            if params.normalize {
                e5embed::pool::l2_normalize(&mut v);
            }
            v
        })
        .collect();
    Ok((vectors, total_tokens))
}

/// Tokenizes every input (prompt first), applying the request's truncation; token-id inputs
/// are checked against the vocabulary and the length limit.
fn tokenize_items(state: &AppState, items: Vec<Item>, p: &Params) -> Result<Vec<Tokens>, ApiError> {
    let max_len = state.embedder.tokenizer().max_len();
    let vocab = state.embedder.config().bert.vocab_size;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let t = match item {
            Item::Text(text) => {
                if text.is_empty() {
                    return Err(ApiError::validation(format!(
                        "input {i} is an empty string"
                    )));
                }
                let text = match &p.prompt {
                    Some(prefix) => format!("{prefix}{text}"),
                    None => text,
                };
                let t = match p.direction {
                    TruncationDirection::Right => state
                        .embedder
                        .tokenizer()
                        .encode(&text)
                        .map_err(|e| error::from_engine(&e))?,
                    TruncationDirection::Left => {
                        let enc =
                            state
                                .left_tokenizer
                                .encode(text.as_str(), true)
                                .map_err(|e| {
                                    ApiError::new(
                                        ErrorType::Tokenizer,
                                        format!("cannot tokenize input {i}: {e}"),
                                    )
                                })?;
                        Tokens {
                            ids: enc.get_ids().to_vec(),
                            truncated: !enc.get_overflowing().is_empty(),
                        }
                    }
                };
                if t.truncated && !p.truncate {
                    return Err(ApiError::validation(format!(
                        "input {i} is longer than the model's maximum of {max_len} tokens \
                         (send `truncate: true` to cut it)"
                    )));
                }
                t
            }
            Item::Ids(mut ids) => {
                if p.explicit_prompt {
                    return Err(ApiError::validation(
                        "prompt_name applies to text inputs, not to token ids",
                    ));
                }
                if ids.is_empty() {
                    return Err(ApiError::validation(format!(
                        "input {i} is an empty array of token ids"
                    )));
                }
                if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
                    return Err(ApiError::validation(format!(
                        "input {i}: token id {bad} is outside the vocabulary (size {vocab})"
                    )));
                }
                let truncated = ids.len() > max_len;
                if truncated {
                    if !p.truncate {
                        return Err(ApiError::validation(format!(
                            "input {i} has {} token ids; the model's maximum is {max_len} \
                             (send `truncate: true` to cut it)",
                            ids.len()
                        )));
                    }
                    match p.direction {
                        TruncationDirection::Right => ids.truncate(max_len),
                        TruncationDirection::Left => {
                            ids.drain(..ids.len() - max_len);
                        }
                    }
                }
                Tokens { ids, truncated }
            }
        };
        out.push(t);
    }
    Ok(out)
}

fn compute_headers(resp: &mut Response, tokens: usize, start: Instant) {
    let h = resp.headers_mut();
    h.insert("x-compute-tokens", HeaderValue::from(tokens));
    if let Ok(v) = HeaderValue::from_str(&format!("{}", start.elapsed().as_micros())) {
        h.insert("x-total-time-us", v);
    }
}

/// TEI's `/embed`: a bare array of vectors.
#[utoipa::path(
    post, path = "/embed", tag = "TEI",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One vector per input, in input order", body = Vec<Vec<f32>>),
        (status = 400, description = "No inputs, or malformed JSON", body = error::TeiErrorBody),
        (status = 401, description = "Missing or wrong API key (empty body)"),
        (status = 408, description = "The request took longer than --request-timeout (empty body)"),
        (status = 413, description = "Body over --payload-limit, or more tokens than the queue holds", body = error::TeiErrorBody),
        (status = 422, description = "Validation: types, unknown fields, too many inputs, too long without truncation, empty text, bad token ids, unknown prompt", body = error::TeiErrorBody),
        (status = 424, description = "The engine failed on an input", body = error::TeiErrorBody),
        (status = 429, description = "Queue or request slots full: retry later", body = error::TeiErrorBody),
        (status = 503, description = "Shutting down", body = error::TeiErrorBody),
    )
)]
pub async fn embed(State(state): S, body: Body) -> Response {
    let start = Instant::now();
    let run = async {
        let req: EmbedRequest = parse_body(&state, body).await?;
        embed_items(
            &state,
            req.inputs,
            req.prompt_name,
            req.dimensions,
            req.truncate,
            req.truncation_direction,
            req.normalize.unwrap_or(true),
        )
        .await
    };
    match run.await {
        Ok((vectors, tokens)) => {
            let mut resp = axum::Json(vectors).into_response();
            compute_headers(&mut resp, tokens, start);
            resp
        }
        Err(e) => e.with_flavor(Flavor::Tei).into_response(),
    }
}

/// OpenAI's `/v1/embeddings` (also served as `/embeddings`).
#[utoipa::path(
    post, path = "/v1/embeddings", tag = "OpenAI",
    request_body = OpenAiRequest,
    responses(
        (status = 200, description = "The vectors, as the model's pipeline gives them (normalized if it normalizes)", body = OpenAiResponse),
        (status = 400, description = "No inputs, or malformed JSON", body = error::OpenAiErrorBody),
        (status = 401, description = "Missing or wrong API key (empty body)"),
        (status = 408, description = "The request took longer than --request-timeout (empty body)"),
        (status = 413, description = "Body over --payload-limit, or more tokens than the queue holds", body = error::OpenAiErrorBody),
        (status = 422, description = "Validation error", body = error::OpenAiErrorBody),
        (status = 424, description = "The engine failed on an input", body = error::OpenAiErrorBody),
        (status = 429, description = "Queue or request slots full: retry later", body = error::OpenAiErrorBody),
        (status = 503, description = "Shutting down", body = error::OpenAiErrorBody),
    )
)]
pub async fn openai_embeddings(State(state): S, body: Body) -> Response {
    let start = Instant::now();
    let run = async {
        let req: OpenAiRequest = parse_body(&state, body).await?;
        let format = req.encoding_format.unwrap_or_default();
        let (vectors, tokens) = embed_items(
            &state,
            req.input,
            req.prompt_name,
            req.dimensions,
            None,
            None,
            state.model_normalize,
        )
        .await?;
        let data = vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingObject {
                object: "embedding",
                index,
                embedding: match format {
                    EncodingFormat::Float => EmbeddingValue::Float(v),
                    EncodingFormat::Base64 => {
                        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                        EmbeddingValue::Base64(
                            base64::engine::general_purpose::STANDARD.encode(bytes),
                        )
                    }
                },
            })
            .collect();
        Ok::<_, ApiError>((
            OpenAiResponse {
                object: "list",
                data,
                model: state.info.served_model_name.clone(),
                usage: Usage {
                    prompt_tokens: tokens,
                    total_tokens: tokens,
                },
            },
            tokens,
        ))
    };
    match run.await {
        Ok((body, tokens)) => {
            let mut resp = axum::Json(body).into_response();
            compute_headers(&mut resp, tokens, start);
            resp
        }
        Err(e) => e.with_flavor(Flavor::OpenAi).into_response(),
    }
}

/// 200 when the server can embed (its scheduler runs), else 503.
#[utoipa::path(get, path = "/health", tag = "Server",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
pub async fn health(State(state): S) -> Response {
    if state.scheduler.queue().is_alive() {
        axum::Json(HealthResponse { status: "ok" }).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(HealthResponse {
                status: "unhealthy",
            }),
        )
            .into_response()
    }
}

/// The model, its engine settings and the server's limits.
#[utoipa::path(get, path = "/info", tag = "Server",
    responses((status = 200, body = InfoResponse), (status = 401, description = "Missing or wrong API key")))]
pub async fn info(State(state): S) -> axum::Json<InfoResponse> {
    axum::Json(state.info.clone())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "Server",
    responses((status = 200, body = String, content_type = "text/plain"), (status = 401, description = "Missing or wrong API key")))]
pub async fn metrics_route(State(state): S) -> Response {
    state
        .metrics
        .queue_tokens
        .set(state.scheduler.queue().queued() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// This API's OpenAPI 3 description.
#[utoipa::path(get, path = "/openapi.json", tag = "Server",
    responses((status = 200, description = "OpenAPI document"), (status = 401, description = "Missing or wrong API key")))]
pub async fn openapi_route() -> Response {
    axum::Json(openapi::spec()).into_response()
}

async fn not_found() -> Response {
    let mut resp = ApiError::validation("no such route").into_response();
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// `--api-key`: every route but /health needs `Authorization: Bearer <key>`; 401 otherwise.
/// Both sides are hashed first, so the comparison is constant-time in content and length.
async fn auth(State(state): S, req: Request, next: Next) -> Response {
    let Some(want) = &state.api_key_hash else {
        return next.run(req).await;
    };
    if req.uri().path() == "/health" {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(|k| -> [u8; 32] { Sha256::digest(k).into() });
    match given {
        Some(g) if bool::from(g.ct_eq(want)) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response(),
    }
}

/// Counts requests by route and status, and times them.
async fn track(State(state): S, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let start = Instant::now();
    state.metrics.in_flight.inc();
    // Decremented even if the client goes away and this future is dropped.
    struct InFlight<'a>(&'a Metrics);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.in_flight.dec();
        }
    }
    let _guard = InFlight(&state.metrics);
    let resp = next.run(req).await;
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .inc();
    state
        .metrics
        .request_seconds
        .with_label_values(&[route.as_str()])
        .observe(start.elapsed().as_secs_f64());
    resp
}
