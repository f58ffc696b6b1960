//! e5embed: a from-scratch CPU inference engine for BERT text-embedding models, with
//! `intfloat/e5-small-v2` as the headline model. See ARCHITECTURE.md for the data flow.
//!
//! ```
//! // Any model directory in the Hugging Face layout (here the test model that
//! // tools/fetch-models puts in ~/.cache/e5embed/models), or a hub id with
//! // `Embedder::from_pretrained("intfloat/e5-small-v2")`.
//! let embedder = e5embed::Embedder::load(e5embed::models_dir().join("all-MiniLM-L6-v2"))?;
//! let q = embedder.embed_queries(&["how much protein should a female eat"])?;
//! let p = embedder.embed_passages(&[
//!     "The CDC recommends 46 grams of protein a day for women.",
//!     "The river flows north through the valley.",
//! ])?;
//! assert_eq!(q.vectors[0].len(), embedder.dim());
//! let scores: Vec<f64> = p.vectors.iter().map(|v| e5embed::pool::cosine(&q.vectors[0], v)).collect();
//! assert!(scores[0] > scores[1]);
//!
//! // Straight into a caller's [texts, dim] buffer (e.g. a numpy array's memory):
//! let mut flat = vec![0f32; 2 * embedder.dim()];
//! let info = embedder.embed_into(&["first text", "second text"], &mut flat)?;
//! assert_eq!(info.token_counts.len(), 2);
//! # Ok::<(), e5embed::Error>(())
//! ```
//!
//! The API: [`Embedder`] (load, embed, prompts, `embed_into`), [`EmbedderOptions`],
//! [`Embeddings`] / [`EmbedInfo`], [`Error`], the pooling helpers in [`pool`], the hub
//! resolver in [`hub`], int8 saving in [`quantize`], the configuration types in [`config`], the kernel choice by
//! measurement in [`tune`].
#![forbid(unsafe_code)]

pub mod config;
pub mod embedder;
pub mod error;
pub mod hub;
pub mod pool;
pub mod quantize;
pub mod tokenize;
pub mod tune;
mod turns;

/// The engine's insides (src/internals.rs): not a stable API, users need none of it.
#[doc(hidden)]
pub mod internals;
pub(crate) use internals::{model, timing, weights};

pub use config::{BertConfig, ModelConfig, Pooling};
pub use e5embed_kernels::{Isa, IsaKind};
pub use embedder::{EmbedInfo, Embedder, EmbedderOptions, Embeddings};
pub use error::{Error, Result};
pub use model::packed_cache::WeightSource;
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
