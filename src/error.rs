//! The engine's typed errors. The library never panics on user input or on a bad model file:
//! every failure is one of these values, naming the file, tensor or input that caused it.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or embedding text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A required file of the model directory is missing.
    #[error("model directory {dir}: missing {file}{hint}")]
    MissingFile {
        dir: PathBuf,
        file: String,
        hint: String,
    },
    /// A JSON configuration file is malformed or holds invalid values.
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    /// The configuration describes a model this engine does not run.
    #[error("{path}: unsupported model: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    /// The safetensors file is malformed, truncated or inconsistent.
    #[error("{path}: invalid safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },
    /// A tensor the model needs is not in the weights file.
    #[error("{path}: missing tensor `{name}` (also looked for `bert.{name}`)")]
    MissingTensor { path: PathBuf, name: String },
    /// A tensor has the wrong shape for the configuration.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        got: Vec<usize>,
        expected: Vec<usize>,
    },
    /// A tensor has a dtype the engine cannot convert (only f32, f16 and bf16 are accepted).
    #[error("{path}: tensor `{name}` has dtype {dtype}, expected F32, F16 or BF16")]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// A weight is NaN or infinite.
    #[error("{path}: tensor `{name}` holds a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f32,
    },
    /// The tokenizer file could not be loaded or a text could not be tokenized.
    #[error("tokenizer {path}: {msg}")]
    Tokenizer { path: PathBuf, msg: String },
    /// An embed call was given no texts.
    #[error("empty input: no texts were given")]
    EmptyInput,
    /// A caller-supplied argument is out of range (token ids, lengths, options).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A kernel refused its arguments (a bug in the engine if it ever shows) or the ISA request.
    #[error("kernel: {0}")]
    Kernel(#[from] e5embed_kernels::KernelError),
    /// A knob is above the engine's limit (threads, tokens per forward, scratch memory).
    #[error("{what} = {value} is above the limit of {max}{why}")]
    Limit {
        what: String,
        value: usize,
        max: usize,
        why: String,
    },
    /// A text's embedding came out NaN or infinite (the model's weights overflow f32 on it):
    /// an error naming the text rather than a vector that silently poisons a search index.
    #[error("the embedding of text {index} ({text}) is not finite (NaN or infinite): the model overflows f32 on it")]
    NonFiniteOutput { index: usize, text: String },
    /// The thread pool could not be built.
    #[error("thread pool: {0}")]
    ThreadPool(String),
    /// A model was named by something that is neither an existing directory nor a Hugging Face
    /// hub repo id (`owner/name` or `owner/name@revision`).
    #[error("model `{spec}`: {msg}")]
    ModelSpec { spec: String, msg: String },
    /// A Hugging Face hub download failed, or the snapshot is needed but not cached while
    /// offline. `url` is the file's hub URL; `kind` says what went wrong.
    #[error("{url}: {msg}")]
    Hub {
        url: String,
        kind: HubErrorKind,
        msg: String,
    },
}

/// What went wrong in an [`Error::Hub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubErrorKind {
    /// 401 or 403: the repo is gated or private (a token is missing or lacks access), or does
    /// not exist (the hub answers 401 for unknown repos too).
    Unauthorized,
    /// 404: the repo, the revision or a required file does not exist.
    NotFound,
    /// The server could not be reached, or the connection failed mid-download.
    Connection,
    /// Any other unexpected HTTP status or malformed response (e.g. a redirect without a
    /// Location).
    Status,
    /// The downloaded file's size or sha256 differs from what the server announced.
    Integrity,
    /// Offline mode (`HF_HUB_OFFLINE`) and the snapshot is not in the cache.
    Offline,
}

/// Short alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
