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
    /// The model vocabulary's largest id, when the fast reader saw it (else computed).
    model_max_id: Option<u32>,
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
        let json = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        // The fast reader first (a WordPiece model: every BERT); anything it does not take,
        // or a panic in it, goes to the `tokenizers` crate's own reader, whose answer (a
        // tokenizer or an error) is then the one given.
        let fast = no_panic(|| fast::read(&json)).ok().flatten();
        let (mut inner, model_max_id) = match fast {
            Some((t, max)) => (t, max),
            None => {
                let t = no_panic(|| json.parse::<Tokenizer>())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map_err(err)?;
                (t, None)
            }
        };
        drop(json);
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
            model_max_id,
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
        match self.model_max_id {
            // The added tokens' ids (a borrowed map) and the model's, seen while reading.
            Some(m) => {
                let added = self.inner.get_added_vocabulary().get_vocab().values().max();
                Some(added.map_or(m, |&a| a.max(m)))
            }
            // `get_vocab` clones the whole vocabulary (10 ms for BERT's 30,522 entries).
            None => self.inner.get_vocab(true).into_values().max(),
        }
    }

    /// Whether the fast reader (rather than the `tokenizers` crate's own) read the file (with
    /// a non-empty vocabulary).
    pub fn read_fast(&self) -> bool {
        self.model_max_id.is_some()
    }

    /// The tokenizer as JSON, as the `tokenizers` crate writes it (tests compare the fast
    /// reader's result with the crate's through it).
    pub fn to_json(&self) -> Option<String> {
        self.inner.to_string(false).ok()
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

/// A faster reader of `tokenizer.json` for the files whose model is WordPiece (BERT's): the
/// `tokenizers` crate reads the model through an untagged enum, buffering the 30,522-entry
/// vocabulary as serde content, then as a `serde_json::Value` map, then into the model: 30-40
/// ms of a 60 ms cold start (kernels/PERF.md). Here the top level is split into raw JSON
/// values (`serde_json::value::RawValue`, no copies), the vocabulary is read once, straight
/// into the model's map, and everything else is read by the crate's own deserializers and
/// assembled exactly as its `Tokenizer` deserializer does (`TokenizerBuilder`, then the added
/// tokens). `tests/tokenizer_fast.rs` holds the result to the crate's (same JSON out, same ids
/// for every test text). Anything unexpected (another model type, a missing or duplicate
/// field, a version other than 1.0) returns `None`, and the caller uses the crate's reader.
mod fast {
    use serde::Deserialize;
    use serde_json::value::RawValue;
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::{
        AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
        PreTokenizerWrapper, Tokenizer, TokenizerBuilder,
    };

    #[derive(Deserialize)]
    struct Parts<'a> {
        version: Option<String>,
        #[serde(borrow)]
        truncation: Option<&'a RawValue>,
        #[serde(borrow)]
        padding: Option<&'a RawValue>,
        #[serde(borrow)]
        added_tokens: Option<&'a RawValue>,
        #[serde(borrow)]
        normalizer: Option<&'a RawValue>,
        #[serde(borrow)]
        pre_tokenizer: Option<&'a RawValue>,
        #[serde(borrow)]
        post_processor: Option<&'a RawValue>,
        #[serde(borrow)]
        decoder: Option<&'a RawValue>,
        #[serde(borrow)]
        model: &'a RawValue,
    }

    #[derive(Deserialize)]
    struct WordPieceJson {
        #[serde(rename = "type")]
        kind: String,
        unk_token: String,
        continuing_subword_prefix: String,
        max_input_chars_per_word: usize,
        vocab: ahash::AHashMap<String, u32>,
    }

    /// An added token as the file lists it (`tokenizers`' `AddedTokenWithId`: its id is only
    /// checked against the vocabulary there, with a warning).
    #[derive(Deserialize)]
    struct AddedTokenJson {
        #[allow(dead_code)]
        id: u32,
        #[serde(flatten)]
        token: AddedToken,
    }

    /// A JSON value the crate reads as `Option<T>` (absent and `null` are `None`).
    fn opt<'de, T: Deserialize<'de>>(raw: Option<&'de RawValue>) -> Option<Option<T>> {
        match raw {
            None => Some(None),
            Some(r) => serde_json::from_str::<Option<T>>(r.get()).ok(),
        }
    }

    /// The tokenizer and its model vocabulary's largest id, or `None` (use the crate's reader).
    pub(super) fn read(json: &str) -> Option<(Tokenizer, Option<u32>)> {
        let parts: Parts<'_> = serde_json::from_str(json).ok()?;
        if parts.version.as_deref().is_some_and(|v| v != "1.0") {
            return None;
        }
        let wp: WordPieceJson = serde_json::from_str(parts.model.get()).ok()?;
        if wp.kind != "WordPiece" {
            return None;
        }
        let max_id = wp.vocab.values().copied().max();
        let model = WordPiece::builder()
            .vocab(wp.vocab)
            .unk_token(wp.unk_token)
            .continuing_subword_prefix(wp.continuing_subword_prefix)
            .max_input_chars_per_word(wp.max_input_chars_per_word)
            .build()
            .ok()?;
        let added: Vec<AddedTokenJson> = match parts.added_tokens {
            None => Vec::new(),
            Some(r) => serde_json::from_str(r.get()).ok()?,
        };
        let built = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_truncation(opt(parts.truncation)?)
        .with_padding(opt(parts.padding)?)
        .with_normalizer(opt(parts.normalizer)?)
        .with_pre_tokenizer(opt(parts.pre_tokenizer)?)
        .with_post_processor(opt(parts.post_processor)?)
        .with_decoder(opt(parts.decoder)?)
        .with_model(ModelWrapper::WordPiece(model))
        .build()
        .ok()?;
        let mut tokenizer = Tokenizer::from(built);
        let tokens: Vec<AddedToken> = added.into_iter().map(|t| t.token).collect();
        tokenizer.add_tokens(&tokens);
        // An empty vocabulary has no largest id: `max_vocab_id` then asks the tokenizer.
        Some((tokenizer, max_id))
    }
}
