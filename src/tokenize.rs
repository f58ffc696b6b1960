//! Tokenization exactly as sentence-transformers does it: the model's `tokenizer.json` with its
//! own truncation and padding settings removed (all-MiniLM-L6-v2's file carries truncation 128
//! and fixed padding 128, which sentence-transformers overrides), special tokens added, and
//! truncation at `max_seq_length` (longest-first, right side: the text's tokens are cut so that
//! `[CLS] ... [SEP]` fits). Truncation is reported per text, never silent.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// The E5 prefix for queries (and for symmetric tasks).
pub const QUERY_PREFIX: &str = "query: ";
/// The E5 prefix for passages (documents).
pub const PASSAGE_PREFIX: &str = "passage: ";

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// Token ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<u32>,
    /// Whether the text was cut at the model's `max_seq_length`.
    pub truncated: bool,
}

/// A tokenizer configured for one model.
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_len: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("max_len", &self.max_len)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and configures truncation at `max_len` tokens (specials included).
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let err = |msg: String| Error::Tokenizer {
            path: path.to_owned(),
            msg,
        };
        if !path.is_file() {
            return Err(Error::MissingFile {
                dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
                file: "tokenizer.json".into(),
                hint: String::new(),
            });
        }
        let mut inner = no_panic(|| Tokenizer::from_file(path))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(err)?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| err(e.to_string()))?;
        Ok(TextTokenizer {
            inner,
            path: path.to_owned(),
            max_len,
        })
    }

    /// The token limit per text, specials included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenizes one text (any text, the empty string included: it gives `[CLS] [SEP]`).
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let enc = no_panic(|| self.inner.encode(text, true))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                msg: format!("cannot tokenize text: {e}"),
            })?;
        Ok(Tokens {
            ids: enc.get_ids().to_vec(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// Tokenizes many texts in parallel (on the caller's rayon pool), in input order.
    ///
    /// Each text's `Encoding` (ids plus type ids, token strings, offsets, masks and the
    /// overflowing tail of a cut text: ~80 bytes per token) is reduced to its ids as soon as it
    /// is made, so at most one `Encoding` per thread is alive; `tokenizers`' own
    /// `encode_batch` would hold all of them until the whole batch is done.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Tokens>> {
        use rayon::prelude::*;
        texts.par_iter().map(|t| self.encode(t.as_ref())).collect()
    }

    /// The largest token id the tokenizer can produce from its vocabulary and added tokens.
    pub fn max_vocab_id(&self) -> Option<u32> {
        self.inner.get_vocab(true).into_values().max()
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id of a special token such as `[CLS]`, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Runs a call into the `tokenizers` library, turning a panic into an error message: some
/// malformed `tokenizer.json` files make it panic instead of returning an error (found by
/// the `tokenizer_json` fuzz target: a syntax error inside `"decoder"` hits an `expect` in
/// its decoder deserializer, an invalid `Precompiled` normalizer another), and the engine
/// never panics on a bad model file.
fn no_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("the tokenizers library failed on this file ({what})")
    })
}
