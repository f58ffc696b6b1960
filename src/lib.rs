//! e5embed: a from-scratch CPU inference engine for BERT text-embedding models, with
//! `intfloat/e5-small-v2` as the headline model. See ARCHITECTURE.md for the data flow.
//!
//! ```no_run
//! let embedder = e5embed::Embedder::load("models/e5-small-v2")?;
//! let out = embedder.embed_queries(&["how much protein should a female eat"])?;
//! assert_eq!(out.vectors[0].len(), embedder.dim());
//! # Ok::<(), e5embed::Error>(())
//! ```
#![deny(unsafe_code)]

pub mod config;
pub mod embedder;
pub mod error;
pub mod hub;
pub mod input;
pub mod mem;
pub mod model;
pub mod npy;
pub mod pool;
pub mod quantize;
pub mod timing;
pub mod tokenize;
mod turns;
pub mod weights;

pub use config::{BertConfig, ModelConfig, Pooling};
pub use e5embed_kernels::{Isa, IsaKind};
pub use embedder::{EmbedInfo, Embedder, EmbedderOptions, Embeddings};
pub use error::{Error, Result};
pub use model::{Int8Recipe, Precision};
pub use tokenize::{Tokens, PASSAGE_PREFIX, QUERY_PREFIX};

/// Where test models live: `$E5EMBED_MODELS`, else `~/.cache/e5embed/models`
/// (`tools/fetch-models` puts them there).
pub fn models_dir() -> std::path::PathBuf {
    if let Some(d) = std::env::var_os("E5EMBED_MODELS").filter(|d| !d.is_empty()) {
        return d.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    std::path::Path::new(&home).join(".cache/e5embed/models")
}
