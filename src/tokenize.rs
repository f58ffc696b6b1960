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
    /// The exact shortcut for ASCII text, when this tokenizer is one it reproduces.
    ascii: Option<ascii::AsciiWordPiece>,
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
        let mut t = TextTokenizer {
            inner,
            path: path.to_owned(),
            max_len,
            model_max_id,
            ascii: None,
        };
        // A file that cannot tokenize even the empty text is refused here, with the reason,
        // rather than failing every text later: e.g. a `TemplateProcessing` post-processor
        // whose template names a special token its `special_tokens` map lacks, on which the
        // `tokenizers` crate panics at every encode (found by the `tokenizer_json` fuzz target).
        let empty = t.encode_with_crate("").map_err(|e| {
            let why = match e {
                Error::Tokenizer { msg, .. } => msg,
                other => other.to_string(),
            };
            err(format!(
                "this tokenizer cannot tokenize the empty text, so no text ({why})"
            ))
        })?;
        t.ascii = ascii::AsciiWordPiece::new(&t.inner, &empty.ids, max_len).filter(|fast| {
            ascii::agrees_on_probes(fast, &t.inner, |text| t.encode_with_crate(text))
        });
        Ok(t)
    }

    /// The token limit per text, specials included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokenizes one text (any text, the empty string included: it gives `[CLS] [SEP]`).
    /// ASCII text takes the exact shortcut where this tokenizer has one ([`Self::ascii_fast`]),
    /// everything else the `tokenizers` crate.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        if let Some(fast) = &self.ascii {
            if let Some(t) = fast.encode(&self.inner, text) {
                return Ok(t);
            }
        }
        self.encode_with_crate(text)
    }

    /// Whether ASCII texts take the shortcut (`ascii` module): a BERT WordPiece tokenizer
    /// (BERT normalizer with text cleaning, BERT pre-tokenizer, WordPiece, specials around
    /// the text) whose answers equalled the crate's on the probe texts at load.
    pub fn ascii_fast(&self) -> bool {
        self.ascii.is_some()
    }

    /// Tokenizes one text with the `tokenizers` crate alone (what [`Self::encode`] does for
    /// text the shortcut does not take; tests hold the shortcut to it).
    pub fn encode_with_crate(&self, text: &str) -> Result<Tokens> {
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
    /// Puts the flag back as it was however the call ends (a guarded call inside another
    /// leaves it raised for the rest of the outer one).
    struct Guard(bool);
    impl Drop for Guard {
        fn drop(&mut self) {
            IN_GUARD.with(|g| g.set(self.0));
        }
    }
    let _guard = Guard(IN_GUARD.with(|g| g.replace(true)));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("the tokenizers library failed on this file ({what})")
    })
}

thread_local! {
    /// Set while this thread runs a `tokenizers` call under [`no_panic`].
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// For programs (the CLI, the server): installs a panic hook that stays silent for the
/// `tokenizers` panics the engine catches and turns into errors (a malformed
/// `tokenizer.json`), so the user reads the engine's error alone instead of a panic message
/// before it; every other panic goes to the hook that was installed before. A library does
/// not change the process's hook by itself: the caller decides.
pub fn quiet_caught_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_GUARD.with(|g| g.get()) {
            previous(info);
        }
    }));
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

/// An exact shortcut through a BERT WordPiece tokenizer for ASCII text.
///
/// The `tokenizers` crate's pipeline (added-token split, normalizer, pre-tokenizer, model,
/// post-processor, each step tracking byte alignments in a `NormalizedString`) takes 18-36 us
/// for a 10-token query even with every cache hot, 42-96 us right after a forward, the
/// shortcut ~25x and ~11x less (Intel Xeon, `examples/tok_probe.rs`, kernels/PERF.md): it was
/// the largest per-request cost of the server besides the forward.
/// For ASCII text the BERT pipeline is simple enough to do directly on bytes, with the same
/// vocabulary lookups (the crate's own WordPiece model answers them):
///
/// - normalizer (`BertNormalizer`, `clean_text` on): control characters are dropped (every
///   byte below 0x20 but `\t` `\n` `\r`, and 0x7f; the crate filters before mapping, so
///   0x0b and 0x0c vanish rather than split), `\t` `\n` `\r` become spaces; lowercase when
///   the model lowercases. Chinese characters, NFD and accent stripping do not touch ASCII.
/// - pre-tokenizer (`BertPreTokenizer`): words are the runs between spaces, each ASCII
///   punctuation character a word of its own.
/// - WordPiece: a word longer than `max_input_chars_per_word` is the unknown token; else
///   greedy longest-prefix matching, later pieces with the `##` prefix, and a word with an
///   unmatchable rest is the unknown token as a whole.
/// - post-processor and truncation: `[CLS] pieces [SEP]`, the pieces cut to `max_len - 2`
///   (longest-first with one sequence).
///
/// Text the shortcut does not take goes to the crate: non-ASCII text, and text with `[`
/// (added tokens such as `[MASK]` are matched in the raw text before normalization; the
/// shortcut is only built when every added token starts with `[`). It is only built for a
/// tokenizer with exactly these components, and kept only if it gives the crate's answer on
/// the probe texts at load ([`agrees_on_probes`]); `tests/tokenizer_ascii.rs` compares the two
/// on every fixture text and tens of thousands of random ASCII texts per test model.
mod ascii {
    use tokenizers::{Model, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, Tokenizer};

    use super::Tokens;

    #[derive(Debug)]
    pub(super) struct AsciiWordPiece {
        lowercase: bool,
        prefix: String,
        max_chars: usize,
        unk: u32,
        cls: u32,
        sep: u32,
        /// Pieces kept per text (`max_len - 2`).
        max_pieces: usize,
    }

    impl AsciiWordPiece {
        /// The shortcut for `t`, if `t` is a tokenizer it reproduces (before the probe check);
        /// `empty` is `t`'s ids for the empty text (the specials it puts around a text).
        pub(super) fn new(t: &Tokenizer, empty: &[u32], max_len: usize) -> Option<AsciiWordPiece> {
            let lowercase = match t.get_normalizer()? {
                NormalizerWrapper::BertNormalizer(n) if n.clean_text => n.lowercase,
                _ => return None,
            };
            if !matches!(
                t.get_pre_tokenizer()?,
                PreTokenizerWrapper::BertPreTokenizer(_)
            ) {
                return None;
            }
            let ModelWrapper::WordPiece(wp) = t.get_model() else {
                return None;
            };
            let unk = wp.token_to_id(&wp.unk_token)?;
            if t.get_added_tokens_decoder()
                .values()
                .any(|a| !a.content.starts_with('['))
            {
                return None;
            }
            let &[cls, sep] = empty else {
                return None;
            };
            Some(AsciiWordPiece {
                lowercase,
                prefix: wp.continuing_subword_prefix.clone(),
                max_chars: wp.max_input_chars_per_word,
                unk,
                cls,
                sep,
                max_pieces: max_len.checked_sub(2).filter(|&m| m > 0)?,
            })
        }

        /// `text`'s tokens, or `None` when the shortcut does not take it.
        pub(super) fn encode(&self, t: &Tokenizer, text: &str) -> Option<Tokens> {
            let bytes = text.as_bytes();
            if !bytes.is_ascii() || bytes.contains(&b'[') {
                return None;
            }
            let ModelWrapper::WordPiece(wp) = t.get_model() else {
                return None;
            };
            // The normalized text: control bytes dropped, `\t\n\r` as spaces, lowercased.
            let norm: Vec<u8> = bytes
                .iter()
                .filter(|&&b| !((b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f))
                .map(|&b| match b {
                    b'\t' | b'\n' | b'\r' => b' ',
                    b if self.lowercase => b.to_ascii_lowercase(),
                    b => b,
                })
                .collect();
            // [CLS], the pieces kept, and one more to know that the text was truncated: the
            // words after it cannot change the pieces before, so a long text stops there.
            let full = self.max_pieces.saturating_add(2);
            let mut ids = Vec::with_capacity((norm.len() / 3 + 3).min(full));
            ids.push(self.cls);
            let mut key = String::with_capacity(self.prefix.len() + 32);
            'runs: for run in norm.split(|&b| b == b' ') {
                // Each punctuation byte a word of its own, the runs between them words too.
                let mut start = 0;
                for i in 0..=run.len() {
                    let punct = i < run.len() && run[i].is_ascii_punctuation();
                    if i == run.len() || punct {
                        if i > start {
                            self.word(wp, &run[start..i], &mut key, &mut ids);
                        }
                        if punct {
                            self.word(wp, &run[i..=i], &mut key, &mut ids);
                        }
                        if ids.len() >= full {
                            break 'runs;
                        }
                        start = i + 1;
                    }
                }
            }
            // Longest-first truncation of one sequence: the first `max_pieces` pieces.
            let truncated = ids.len() - 1 > self.max_pieces;
            ids.truncate(self.max_pieces + 1);
            ids.push(self.sep);
            Some(Tokens { ids, truncated })
        }

        /// WordPiece on one word (ASCII, non-empty), its ids appended to `ids`.
        fn word(
            &self,
            wp: &tokenizers::models::wordpiece::WordPiece,
            word: &[u8],
            key: &mut String,
            ids: &mut Vec<u32>,
        ) {
            if word.len() > self.max_chars {
                return ids.push(self.unk);
            }
            // ASCII, so every byte boundary is a char boundary.
            let word = std::str::from_utf8(word).unwrap_or_default();
            let mark = ids.len();
            let mut start = 0;
            while start < word.len() {
                let found = (start + 1..=word.len()).rev().find_map(|end| {
                    let id = if start == 0 {
                        wp.token_to_id(&word[..end])
                    } else {
                        key.clear();
                        key.push_str(&self.prefix);
                        key.push_str(&word[start..end]);
                        wp.token_to_id(key)
                    };
                    id.map(|id| (id, end))
                });
                let Some((id, end)) = found else {
                    // An unmatchable rest: the whole word is the unknown token.
                    ids.truncate(mark);
                    return ids.push(self.unk);
                };
                ids.push(id);
                start = end;
            }
        }
    }

    /// Five texts that exercise each rule (cleaning, case, punctuation, long words, unknown
    /// pieces); the shortcut is kept only if it gives the crate's tokens for every one. No
    /// probe reaches the token limit: truncation is the engine's own setting, not the file's
    /// (longest-first from the right, the post-processor's two specials kept, as the empty
    /// text's probe shows), a long probe through the crate costs milliseconds at every load,
    /// and `tests/tokenizer_ascii.rs` checks it at two limits.
    pub(super) fn agrees_on_probes(
        fast: &AsciiWordPiece,
        t: &Tokenizer,
        reference: impl Fn(&str) -> crate::error::Result<Tokens>,
    ) -> bool {
        // A word over WordPiece's limit, one at it, unknown pieces and `##` in the text.
        let words = format!(
            "supercalifragilisticexpialidocious zzqxjv ##ing ## # {} {}",
            "x".repeat(fast.max_chars + 1),
            "y".repeat(fast.max_chars)
        );
        let probes = [
            "",
            "Query: How much PROTEIN should a female eat?",
            "  a\tb\nc\rd\x0be\x0cf\x7fg\x00h\x1fi  ",
            "don't stop-believing (1999) #1 $5.00... <b>&amp;</b> ~`!@^*_+={}|\\:;\"'<>,.?/",
            words.as_str(),
        ];
        probes
            .iter()
            .all(|p| match (fast.encode(t, p), reference(p)) {
                (Some(a), Ok(b)) => a == b,
                _ => false,
            })
    }
}
