//! The public API: an [`Embedder`] is loaded once from a model directory and shared by any
//! number of threads (`Send + Sync`); each call tokenizes, runs the fast forward in its own
//! thread pool, pools and normalizes, and returns one vector per text in input order.

use std::path::{Path, PathBuf};

use e5embed_kernels::bgemm::{BIsa, BIsaKind};
use e5embed_kernels::qgemm::{QIsa, QIsaKind};
use e5embed_kernels::{Isa, IsaKind};

use crate::config::{ModelConfig, Pooling};
use crate::error::{Error, Result};
use crate::model::packed_cache::{self, PackKey, WeightSource};
use crate::model::{FastModel, Int8Recipe, Precision};
use crate::model::{Paths, Scratch};
use crate::pool::{l2_normalize, pool};
use crate::timing::{OpTimes, StageTimes};
use crate::tokenize::{TextTokenizer, Tokens, PASSAGE_PREFIX, QUERY_PREFIX};
use crate::turns::Turns;
use crate::weights::BertWeights;

/// Tokens per forward pass when a call holds many texts, at f32 precision. It bounds scratch
/// memory (9 KB per token at e5-small-v2's shapes: 18 MB) while keeping every GEMM's M far
/// above the size where the microkernels reach their speed.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 2048;

/// The default token budget at int8 precision. The scratch per token is the same as at f32
/// (plus 3 KB of quantized activations) while the weights are ~3x smaller, so at 2048 tokens
/// the scratch was 25 MB on a 100 MB process. Measured on e5-small-v2-shape, 2,000 mixed
/// texts, 2 threads: 1024 tokens runs as fast as 2048 (175-183 texts/s both), whereas at f32
/// 1024 was ~1% slower, so f32 keeps 2048.
pub const DEFAULT_MAX_BATCH_TOKENS_INT8: usize = 1024;

/// The default token budget for a precision.
pub fn default_max_batch_tokens(precision: Precision) -> usize {
    match precision {
        Precision::F32 | Precision::Bf16 => DEFAULT_MAX_BATCH_TOKENS,
        Precision::Int8 => DEFAULT_MAX_BATCH_TOKENS_INT8,
    }
}

/// The most worker threads an embedder takes (far above any useful count: each thread is a
/// stack and a rayon worker, and more threads than cores only add contention).
pub const MAX_THREADS: usize = 1024;

/// The largest token budget per forward (128 texts of 512 tokens; far above where larger
/// forwards stop being faster).
pub const MAX_BATCH_TOKENS: usize = 65_536;

/// The most memory one forward's scratch may take (it is allocated up front, from the token
/// budget: a budget whose scratch would exceed this is refused at load, not aborted on).
pub const MAX_SCRATCH_BYTES: usize = 4 << 30;

/// Texts tokenized on the caller's own thread (no pool, no turn): a query is tokenized at
/// once even while another caller's forward holds the pool.
const INLINE_TOKENIZE: usize = 4;

/// Texts tokenized per turn on the pool when a call has many.
const TOKENIZE_CHUNK: usize = 128;

/// Knobs for [`Embedder::load_with`]. The library reads none of them from the environment.
///
/// Built from [`EmbedderOptions::default`] with one method per knob (each sets the field to
/// `Some(value)`); the fields stay public for reading and for setting an `Option` directly.
/// `#[non_exhaustive]`, so a knob added later does not break callers.
///
/// ```
/// use e5embed::{EmbedderOptions, Precision};
/// let options = EmbedderOptions::default()
///     .precision(Precision::Int8)
///     .threads(2)
///     .normalize(true);
/// assert_eq!(options.threads, Some(2));
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct EmbedderOptions {
    /// Worker threads; default: the number of physical cores available to the process.
    pub threads: Option<usize>,
    /// Force a kernel path; default: the best this CPU has.
    pub isa: Option<IsaKind>,
    /// Tokens per forward pass; default [`default_max_batch_tokens`] of the precision (2048
    /// at f32, 1024 at int8).
    pub max_batch_tokens: Option<usize>,
    /// GEMM precision; default (`None`, the CLI's `auto`): see [`auto_precision`].
    pub precision: Option<Precision>,
    /// Force the int8 kernel path; default: derived from `isa`, else the best.
    pub qisa: Option<QIsaKind>,
    /// Force the bf16 kernel path; default: derived from `isa`, else the best.
    pub bisa: Option<BIsaKind>,
    /// L2-normalize the vectors; default: what the model's `modules.json` says (no
    /// `modules.json`: no, as sentence-transformers).
    pub normalize: Option<bool>,
    /// Pooling; default: the model's `1_Pooling/config.json`, else mean.
    pub pooling: Option<Pooling>,
    /// An experiment: a different int8 recipe than the measured default
    /// ([`Int8Recipe::default_for`]); used at int8 precision only.
    pub int8_recipe: Option<Int8Recipe>,
    /// Choose the kernel paths (and `auto`'s precision) by measurement, cached per CPU
    /// ([`crate::tune`]); default: yes, unless a path is forced (`isa`, `qisa`, `bisa`).
    /// `false`: the best path of each family by the fixed rule and `auto` = f32 (reproducible
    /// benchmarks).
    pub tune: Option<bool>,
    /// Where the tuning (and the int8 calibration) cache lives; default
    /// [`crate::tune::default_cache_dir`] (`$XDG_CACHE_HOME/e5embed`, else
    /// `~/.cache/e5embed`): a location, it changes no numerics by itself.
    pub cache_dir: Option<PathBuf>,
    /// Keep the packed weights in the cache directory (`packed/`) and map them at later loads
    /// instead of reading, converting and packing `model.safetensors` again; default: yes.
    /// The vectors are bitwise the same either way; `false` reads and packs at every load and
    /// writes nothing (reproducible runs, read-only cache directories).
    pub weight_cache: Option<bool>,
}

macro_rules! option_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl EmbedderOptions {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = Some(value);
                    self
                }
            )*
        }
    };
}

option_setters! {
    /// Worker threads (`1..=`[`MAX_THREADS`]).
    threads: usize;
    /// Force an f32 kernel path (it must exist on this CPU, else loading fails).
    isa: IsaKind;
    /// Tokens per forward pass (`1..=`[`MAX_BATCH_TOKENS`]).
    max_batch_tokens: usize;
    /// GEMM precision.
    precision: Precision;
    /// Force the int8 kernel path.
    qisa: QIsaKind;
    /// Force the bf16 kernel path.
    bisa: BIsaKind;
    /// L2-normalize the vectors (or not), whatever the model's `modules.json` says.
    normalize: bool;
    /// Pooling, whatever the model's `1_Pooling/config.json` says.
    pooling: Pooling;
    /// An int8 recipe other than the measured default (an experiment).
    int8_recipe: Int8Recipe;
    /// Kernel choice by measurement, cached per CPU (`true`, the default) or the fixed rule.
    tune: bool;
    /// The tuning and calibration cache directory.
    cache_dir: PathBuf;
    /// The packed-weights cache (`true`, the default) or a full read and pack at every load.
    weight_cache: bool;
}

/// The precision `auto` picks, and why (printed by `e5embed info`).
///
/// - A model saved by `e5embed quantize` runs in int8 (that is what it was saved for).
/// - Otherwise, with a tuning ([`crate::tune`]): bf16 where its fastest path measured at
///   at least 1.2x faster than f32's on the model's GEMM shapes ([`crate::tune::BF16_MIN_GAIN`];
///   bf16's mean cosine to f32 is >= 0.9999, `tests/bf16.rs`, the accuracy taken as equal),
///   else f32. int8 is never chosen for an f32 model: its accuracy is lower.
/// - Without one (tuning off, or a forced kernel path): f32 (exact), whatever the CPU.
pub fn auto_precision(
    prequantized: bool,
    tuning: Option<&crate::tune::Tuning>,
) -> (Precision, String) {
    if prequantized {
        return (
            Precision::Int8,
            "auto: the model was saved by `e5embed quantize`".into(),
        );
    }
    match tuning.and_then(|t| Some((t.auto.parse::<Precision>().ok()?, t))) {
        Some((p @ (Precision::F32 | Precision::Bf16), t)) => (p, t.auto_reason.clone()),
        _ => (
            Precision::F32,
            "auto: no measured kernel choice (tuning off or a kernel path forced), so f32 \
             (exact)"
                .into(),
        ),
    }
}

/// The result of embedding a list of texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector of `dim` floats per text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Token count of each text after truncation, `[CLS]` and `[SEP]` included.
    pub token_counts: Vec<usize>,
    /// Indices of the texts that were cut at the model's `max_seq_length`.
    pub truncated: Vec<usize>,
}

/// What a call learned besides the vectors: per text, in input order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmbedInfo {
    /// Token count of each text after truncation, `[CLS]` and `[SEP]` included.
    pub token_counts: Vec<usize>,
    /// Indices of the texts that were cut at the model's `max_seq_length`.
    pub truncated: Vec<usize>,
}

impl Embeddings {
    fn from_flat(flat: Vec<f32>, dim: usize, info: EmbedInfo) -> Embeddings {
        Embeddings {
            vectors: flat.chunks_exact(dim.max(1)).map(|v| v.to_vec()).collect(),
            token_counts: info.token_counts,
            truncated: info.truncated,
        }
    }

    /// The vectors as one row-major `[texts, dim]` buffer.
    pub fn to_flat(&self) -> Vec<f32> {
        self.vectors.concat()
    }
}

/// `prompt` + each text.
fn prefixed<S: AsRef<str>>(prompt: &str, texts: &[S]) -> Vec<String> {
    texts
        .iter()
        .map(|t| format!("{prompt}{}", t.as_ref()))
        .collect()
}

/// A loaded embedding model.
pub struct Embedder {
    dir: PathBuf,
    config: ModelConfig,
    tokenizer: TextTokenizer,
    model: FastModel,
    pool: rayon::ThreadPool,
    threads: usize,
    max_batch_tokens: usize,
    /// Why the precision was chosen ("requested", or `auto`'s reason).
    precision_reason: String,
    /// The measured kernel choice, when tuning ran (or was read from the cache).
    tuned: Option<crate::tune::Tuned>,
    /// Forward buffers, one per concurrent call, reused across calls (flat memory).
    scratch: std::sync::Mutex<Vec<Scratch>>,
    /// Whose work is on the pool (see `turns.rs`).
    turns: Turns,
    /// Per-op timings accumulated when `E5EMBED_TIMING` is set.
    timings: std::sync::Mutex<OpTimes>,
    /// The load's stages, timed when `E5EMBED_TIMING` is set.
    load_times: StageTimes,
    weight_source: WeightSource,
    weight_cache_warnings: Vec<String>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("isa", &self.model.isa())
            .field("threads", &self.threads)
            .finish()
    }
}

/// Kernel path requests parsed from `E5EMBED_ISA` / `--isa` (`None`: derive or detect).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IsaRequest {
    pub isa: Option<IsaKind>,
    pub qisa: Option<QIsaKind>,
    pub bisa: Option<BIsaKind>,
}

/// Picks the f32, int8 and bf16 kernel paths: the requested ones (see [`parse_isa_spec`]:
/// a forced f32 path also picks the matching int8 / bf16 paths: scalar, the AVX2 non-VNNI
/// int8 path with the scalar bf16 one, the best AVX-512 or NEON ones), else the best of each
/// this CPU has. Nothing is read from the environment (the CLI maps `E5EMBED_ISA` to `--isa`).
pub fn resolve_paths(
    isa: Option<IsaKind>,
    qisa: Option<QIsaKind>,
    bisa: Option<BIsaKind>,
) -> Result<Paths> {
    let unsupported = |what: String| {
        Error::Kernel(e5embed_kernels::KernelError::UnsupportedIsa(format!(
            "{what} (requested)"
        )))
    };
    let f32_path = match isa {
        Some(k) => Isa::new(k).ok_or_else(|| unsupported(k.name().to_string()))?,
        None => Isa::best(),
    };
    let q_path = match qisa {
        Some(k) => QIsa::new(k).ok_or_else(|| unsupported(format!("int8 path {}", k.name())))?,
        None => match f32_path.kind() {
            IsaKind::Scalar => QIsa::scalar(),
            IsaKind::Avx2 => QIsa::new(QIsaKind::Avx2).unwrap_or_else(QIsa::scalar),
            _ => QIsa::best(),
        },
    };
    let b_path = match bisa {
        Some(k) => BIsa::new(k).ok_or_else(|| unsupported(format!("bf16 path {}", k.name())))?,
        None => match f32_path.kind() {
            // The best bf16 path of the f32 path's instruction set: on AVX-512 `vdpbf16ps` or
            // the widening one, on aarch64 `bfmmla` (FEAT_BF16) or the NEON widening one.
            IsaKind::Avx512 | IsaKind::Neon => BIsa::best(),
            _ => BIsa::scalar(),
        },
    };
    Ok(Paths {
        isa: f32_path,
        qisa: q_path,
        bisa: b_path,
    })
}

/// Parses an `--isa` value into kernel path requests.
pub fn parse_isa_spec(spec: &str) -> Result<IsaRequest> {
    let s = spec.trim().to_ascii_lowercase();
    let req = |isa, qisa, bisa| {
        Ok(IsaRequest {
            isa: Some(isa),
            qisa,
            bisa,
        })
    };
    match s.as_str() {
        "vnni" | "avx512vnni" => req(IsaKind::Avx512, Some(QIsaKind::Avx512Vnni), None),
        "avxvnni" => req(IsaKind::Avx2, Some(QIsaKind::AvxVnni), None),
        "avx512bf16" => req(IsaKind::Avx512, None, Some(BIsaKind::Avx512Bf16)),
        "avx512widen" => req(IsaKind::Avx512, None, Some(BIsaKind::Avx512Widen)),
        "neonbf16" | "bfmmla" => req(IsaKind::Neon, None, Some(BIsaKind::NeonBf16)),
        "neonwiden" => req(IsaKind::Neon, None, Some(BIsaKind::NeonWiden)),
        "amx" => {
            // The AMX int8 / bf16 paths (tdpbusd / tdpbf16ps tiles) with the AVX-512 f32
            // path; refused with the reason where the CPU, OS or Linux lack AMX.
            let status = e5embed_kernels::amx::status();
            if !status.is_available() {
                return Err(Error::InvalidInput(format!(
                    "--isa amx: {status}; use avx512, vnni or avx512bf16"
                )));
            }
            let q = QIsa::new(QIsaKind::Amx).map(|q| q.kind());
            let b = BIsa::new(BIsaKind::Amx).map(|b| b.kind());
            req(IsaKind::Avx512, q, b)
        }
        other => other
            .parse::<IsaKind>()
            .map(|k| IsaRequest {
                isa: Some(k),
                ..Default::default()
            })
            .map_err(|_| {
                Error::InvalidInput(format!(
                    "unknown ISA `{spec}`: use scalar, avx2, avxvnni, avx512, vnni, avx512bf16, \
                     avx512widen, amx, neon, neonbf16 or neonwiden"
                ))
            }),
    }
}

impl Embedder {
    /// Loads a model by Hugging Face hub id (`owner/name` or `owner/name@revision`, downloaded
    /// once into the cache: see [`crate::hub`]) or by local directory, with default options.
    ///
    /// ```no_run
    /// let e = e5embed::Embedder::from_pretrained("intfloat/e5-small-v2")?;
    /// let q = e.embed_queries(&["how much protein should a female eat"])?;
    /// # Ok::<(), e5embed::Error>(())
    /// ```
    pub fn from_pretrained(spec: &str) -> Result<Self> {
        Self::from_pretrained_with(spec, &EmbedderOptions::default())
    }

    /// [`from_pretrained`](Self::from_pretrained) with options.
    pub fn from_pretrained_with(spec: &str, opts: &EmbedderOptions) -> Result<Self> {
        let local = Path::new(spec);
        let dir = if local.is_dir() {
            local.to_owned()
        } else {
            crate::hub::resolve_model(spec)?
        };
        Self::load_with(dir, opts)
    }

    /// Loads a model directory with default options.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_with(dir, &EmbedderOptions::default())
    }

    /// Loads a model directory (Hugging Face layout: config.json, model.safetensors,
    /// tokenizer.json, and the sentence-transformers files when present).
    pub fn load_with(dir: impl AsRef<Path>, opts: &EmbedderOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let mut stages = StageTimes::from_env();
        let threads = match opts.threads {
            Some(0) => return Err(Error::InvalidInput("threads must be at least 1".into())),
            Some(t) if t > MAX_THREADS => {
                return Err(Error::Limit {
                    what: "threads".into(),
                    value: t,
                    max: MAX_THREADS,
                    why: String::new(),
                })
            }
            Some(t) => t,
            None => physical_cores(),
        };
        if let Some(b) = opts.max_batch_tokens.filter(|&b| b > MAX_BATCH_TOKENS) {
            return Err(Error::Limit {
                what: "max_batch_tokens".into(),
                value: b,
                max: MAX_BATCH_TOKENS,
                why: String::new(),
            });
        }
        let mut config = ModelConfig::from_dir(dir)?;
        if let Some(n) = opts.normalize {
            config.normalize = n;
        }
        if let Some(p) = opts.pooling {
            config.pooling = p;
        }
        stages.lap("config files");
        // The tokenizer (parsing tokenizer.json is the longest step of a cached load) is read
        // on a thread of its own while the weights are mapped or read; its errors still come
        // first, as when it was read first. A tuning measurement waits for it (quiet core).
        let tok_path = dir.join("tokenizer.json");
        let (tokenizer, prepared) = std::thread::scope(|s| {
            let config = &config;
            let handle = s.spawn(move || {
                let t0 = std::time::Instant::now();
                let tok = TextTokenizer::from_file(&tok_path, config.max_seq_length)
                    .and_then(|t| validate_tokenizer(&t, config).map(|()| t));
                (tok, t0.elapsed())
            });
            let mut tok = Pending::new(handle);
            let prepared = prepare(dir, opts, config, threads, &mut tok, &mut stages);
            (tok.wait(), prepared)
        });
        let (tokenizer, tok_time) = tokenizer;
        stages.record_parallel("tokenizer.json parse + validation", tok_time);
        stages.lap("waiting for the tokenizer");
        let tokenizer = tokenizer?;
        let Prepared {
            tuned,
            paths,
            pool,
            precision,
            precision_reason,
            recipe,
            cache_dir,
            loaded,
            mut warnings,
        } = prepared?;
        let max_batch_tokens = opts
            .max_batch_tokens
            .unwrap_or_else(|| default_max_batch_tokens(precision));
        if max_batch_tokens < config.max_seq_length {
            return Err(Error::InvalidInput(format!(
                "max_batch_tokens {max_batch_tokens} is below the model's max_seq_length {}",
                config.max_seq_length
            )));
        }
        let (model, weight_source) = match loaded {
            Loaded::Cached(model, path) => (model, WeightSource::Cache(path)),
            Loaded::Weights(mut weights, key) => {
                if precision == Precision::Int8 {
                    // Cached beside the tuning (a deterministic function of the files, the
                    // int8 path and the recipe: a cached calibration loads bitwise equal to
                    // computing it).
                    let mut warnings = Vec::new();
                    crate::model::smooth::calibrate_cached(
                        &mut weights,
                        &tokenizer,
                        paths.qisa,
                        &recipe,
                        cache_dir.as_deref().map(|c| (c, dir)),
                        &mut warnings,
                    )?;
                    for w in warnings {
                        eprintln!("e5embed: warning: {w}");
                    }
                    stages.lap("int8 calibration (cache)");
                }
                let model = pool.install(|| FastModel::new(*weights, paths, precision, &recipe))?;
                stages.lap("convert + pack");
                // Into one buffer on huge pages, laid out as the cache file's data
                // (packed_cache::rehome); the file is then written from that buffer.
                let rehomed = pool.install(|| packed_cache::rehome(&model, paths, &recipe));
                let (model, image) = match rehomed {
                    Ok((m, image)) => {
                        drop(model);
                        // The safetensors copy and the heap-packed buffers are free now: give
                        // them back (a load that packed kept ~130 MB more than a cached one
                        // otherwise), before the cache write.
                        e5embed_kernels::hugepage::release_free_memory();
                        (m, Some(image))
                    }
                    Err(why) => {
                        warnings.push(format!(
                            "the packed weights stay where they are (and are not cached): {why}"
                        ));
                        (model, None)
                    }
                };
                stages.lap("packed weights onto huge pages");
                let mut saved = None;
                if let (Some(key), Some(cache), Some(image)) = (key, cache_dir.as_deref(), image) {
                    let path = key.path_in(cache);
                    match pool.install(|| image.save(&path, &key)) {
                        Ok(()) => saved = Some(path),
                        Err(e) => warnings.push(format!(
                            "the packed-weights cache could not be written: {e}"
                        )),
                    }
                    stages.lap("packed-weights cache write");
                }
                (model, WeightSource::Packed { saved })
            }
        };
        for w in &warnings {
            eprintln!("e5embed: warning: {w}");
        }
        Ok(Embedder {
            dir: dir.to_owned(),
            config,
            tokenizer,
            model,
            pool,
            threads,
            max_batch_tokens,
            precision_reason,
            tuned,
            scratch: std::sync::Mutex::new(Vec::new()),
            turns: Turns::default(),
            timings: std::sync::Mutex::new(OpTimes::from_env()),
            load_times: stages,
            weight_source,
            weight_cache_warnings: warnings,
        })
    }

    /// Where the packed weights came from: the packed-weights cache, or packed at this load
    /// (and the cache file then written, if any).
    pub fn weight_source(&self) -> &WeightSource {
        &self.weight_source
    }

    /// The packed-weights cache's warnings at load (a corrupt, truncated or stale file, a
    /// failed write), also printed on stderr.
    pub fn weight_cache_warnings(&self) -> &[String] {
        &self.weight_cache_warnings
    }

    /// The load's stages and their wall times (empty unless `E5EMBED_TIMING=1`).
    pub fn load_timings(&self) -> &StageTimes {
        &self.load_times
    }

    /// Embedding width (the model's hidden size: 384 for e5-small-v2).
    pub fn dim(&self) -> usize {
        self.config.bert.hidden_size
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    pub fn isa(&self) -> Isa {
        self.model.isa()
    }

    /// The int8 kernel path (used when the precision is int8).
    pub fn qisa(&self) -> QIsa {
        self.model.qisa()
    }

    /// The bf16 kernel path (used when the precision is bf16).
    pub fn bisa(&self) -> BIsa {
        self.model.bisa()
    }

    pub fn precision(&self) -> Precision {
        self.model.precision()
    }

    /// Why this precision: `requested`, or the reason `auto` gave ([`auto_precision`]).
    pub fn precision_reason(&self) -> &str {
        &self.precision_reason
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on one of this embedder's pool threads; the embedder calls `f` makes then
    /// start their forwards right there instead of handing each one to a pool thread and
    /// waiting for it. For a long-lived caller of many small calls (the server's scheduler
    /// loop): the hand-off costs a sleeping pool thread's wake-up per call (an empty
    /// `install` measured 25 us back to back and 68-78 us after an idle gap of 0.3-1 ms on a
    /// 2-core Xeon VM). `f` holds that pool thread until it returns, also while it blocks;
    /// the pool's other threads keep serving the forwards' parallel parts and other callers.
    pub fn run_on_pool<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// The measured kernel choice and where it came from (`None`: tuning off, or a kernel
    /// path forced).
    pub fn tuning(&self) -> Option<&crate::tune::Tuned> {
        self.tuned.as_ref()
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The GEMM microkernel in use.
    pub fn gemm_kernel_name(&self) -> String {
        self.model.gemm_kernel_name()
    }

    /// The attention kernel in use (bf16 models on the `vdpbf16ps` path: the bf16 one).
    pub fn attention_kernel_name(&self) -> &'static str {
        self.model.attention_kernel_name()
    }

    /// Embeds texts: one vector per text, in input order. An empty list gives an empty
    /// result. The texts are used as given, except that a model whose
    /// `config_sentence_transformers.json` names a `default_prompt_name` gets that prompt
    /// prepended, as sentence-transformers' `encode` does.
    ///
    /// ```
    /// # let dir = e5embed::models_dir().join("all-MiniLM-L6-v2");
    /// let e = e5embed::Embedder::load(dir)?;
    /// let out = e.embed(&["query: how much protein should a female eat", ""])?;
    /// assert_eq!(out.vectors.len(), 2);
    /// assert_eq!(out.vectors[0].len(), e.dim());
    /// assert_eq!(out.token_counts[1], 2); // the empty text is [CLS] [SEP]
    /// assert!(e.embed(&[] as &[&str])?.vectors.is_empty());
    /// # Ok::<(), e5embed::Error>(())
    /// ```
    pub fn embed<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings> {
        match self.config.default_prompt_name.as_deref() {
            Some(name) => self.embed_with_prompt_name(texts, name),
            None => self.embed_as_given(texts),
        }
    }

    /// Embeds texts exactly as given (no prompt, not even the model's default).
    pub fn embed_as_given<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings> {
        let n = texts.len();
        let mut flat = vec![0f32; n * self.dim()];
        let info = self.embed_into_as_given(texts, &mut flat)?;
        Ok(Embeddings::from_flat(flat, self.dim(), info))
    }

    /// Embeds texts into `out`, a row-major `[texts.len(), dim]` buffer (e.g. a numpy array's
    /// memory), with no per-vector allocation; the model's default prompt applies as in
    /// [`embed`](Self::embed). Returns each text's token count and which were truncated.
    pub fn embed_into<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<EmbedInfo> {
        match self.config.default_prompt_name.as_deref() {
            Some(name) => {
                let prompt = self.prompt_or_err(name)?.to_owned();
                self.embed_into_as_given(&prefixed(&prompt, texts), out)
            }
            None => self.embed_into_as_given(texts, out),
        }
    }

    fn embed_into_as_given<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        out: &mut [f32],
    ) -> Result<EmbedInfo> {
        let tokens = self.tokenize(texts)?;
        self.embed_tokens_into(&tokens, out).map_err(|e| match e {
            Error::NonFiniteOutput { index, .. } => Error::NonFiniteOutput {
                index,
                text: preview(texts[index].as_ref()),
            },
            e => e,
        })
    }

    /// The prompt (a prefix) called `name`: the model's own prompts
    /// (`config_sentence_transformers.json`) first, then E5's `query` (`"query: "`) and
    /// `passage` (`"passage: "`).
    pub fn prompt(&self, name: &str) -> Option<&str> {
        self.config
            .prompts
            .get(name)
            .map(|s| s.as_str())
            .or(match name {
                "query" => Some(QUERY_PREFIX),
                "passage" => Some(PASSAGE_PREFIX),
                _ => None,
            })
    }

    /// The names [`prompt`](Self::prompt) knows.
    pub fn prompt_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.config.prompts.keys().cloned().collect();
        for n in ["query", "passage"] {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_owned());
            }
        }
        names
    }

    fn prompt_or_err(&self, name: &str) -> Result<&str> {
        self.prompt(name).ok_or_else(|| {
            Error::InvalidInput(format!(
                "unknown prompt name `{name}`; this model knows: {}",
                self.prompt_names().join(", ")
            ))
        })
    }

    /// Embeds texts with the prompt called `name` prepended (see [`prompt`](Self::prompt)).
    pub fn embed_with_prompt_name<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        name: &str,
    ) -> Result<Embeddings> {
        let prompt = self.prompt_or_err(name)?.to_owned();
        self.embed_with_prompt(texts, &prompt)
    }

    /// Embeds texts with `prompt` prepended to each (sentence-transformers' `prompt=`).
    pub fn embed_with_prompt<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        prompt: &str,
    ) -> Result<Embeddings> {
        self.embed_as_given(&prefixed(prompt, texts))
    }

    /// Tokenizes texts as `embed` does: a few on the calling thread, many in chunks on this
    /// embedder's pool (no oversubscription), taking turns with other callers.
    pub fn tokenize<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Vec<Tokens>> {
        if texts.len() <= INLINE_TOKENIZE {
            return texts
                .iter()
                .map(|t| self.tokenizer.encode(t.as_ref()))
                .collect();
        }
        // Priority among callers: the bytes still to tokenize, about 4 per token.
        let mut left: usize = texts.iter().map(|t| t.as_ref().len() / 4 + 2).sum();
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(TOKENIZE_CHUNK) {
            let turn = self.turns.take(left);
            out.extend(self.pool.install(|| self.tokenizer.encode_batch(chunk))?);
            drop(turn);
            left -= chunk
                .iter()
                .map(|t| t.as_ref().len() / 4 + 2)
                .sum::<usize>();
        }
        Ok(out)
    }

    /// Embeds E5 queries: each text gets the `query` prompt (`"query: "` unless the model
    /// defines its own).
    pub fn embed_queries<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings> {
        self.embed_with_prompt_name(texts, "query")
    }

    /// Embeds E5 passages: each text gets the `passage` prompt (`"passage: "` unless the
    /// model defines its own).
    pub fn embed_passages<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Result<Embeddings> {
        self.embed_with_prompt_name(texts, "passage")
    }

    /// Embeds already tokenized texts (ids with `[CLS]`/`[SEP]`, at most `max_seq_length` each).
    ///
    /// Texts are sorted by length and packed into forwards of at most `max_batch_tokens`
    /// tokens (no padding); results come back in input order. A text's vector is bitwise the
    /// same whatever else is in the call, its position, or the thread count.
    pub fn embed_tokens(&self, tokens: &[Tokens]) -> Result<Embeddings> {
        let mut flat = vec![0f32; tokens.len() * self.dim()];
        let info = self.embed_tokens_into(tokens, &mut flat)?;
        Ok(Embeddings::from_flat(flat, self.dim(), info))
    }

    /// [`embed_tokens`](Self::embed_tokens) into a row-major `[tokens.len(), dim]` buffer.
    pub fn embed_tokens_into(&self, tokens: &[Tokens], out: &mut [f32]) -> Result<EmbedInfo> {
        let dim = self.dim();
        if out.len() != tokens.len() * dim {
            return Err(Error::InvalidInput(format!(
                "the output buffer holds {} floats; {} texts x {dim} need {}",
                out.len(),
                tokens.len(),
                tokens.len() * dim
            )));
        }
        for t in tokens {
            crate::model::validate_ids(&self.config.bert, &t.ids)?;
        }
        let mut order: Vec<usize> = (0..tokens.len()).collect();
        order.sort_by_key(|&i| tokens[i].ids.len());
        let largest = budget_batches(&order, |i| tokens[i].ids.len(), self.max_batch_tokens)
            .map(|b| b.iter().map(|&i| tokens[i].ids.len()).sum::<usize>())
            .max()
            .unwrap_or(0);
        let mut scratch = self.take_scratch(largest);
        // The switch was read from the environment once, at load.
        let mut times = self
            .timings
            .lock()
            .map(|t| t.empty_like())
            .unwrap_or_default();
        let mut left: usize = tokens.iter().map(|t| t.ids.len()).sum();
        let mut run = || -> Result<()> {
            for batch in budget_batches(&order, |i| tokens[i].ids.len(), self.max_batch_tokens) {
                let seqs: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].ids.as_slice()).collect();
                let total: usize = seqs.iter().map(|s| s.len()).sum();
                self.run_forward(&seqs, left, &mut scratch, &mut times)?;
                left -= total;
                let hidden = scratch.hidden(total, dim);
                let mut off = 0;
                for (&i, ids) in batch.iter().zip(&seqs) {
                    let rows = &hidden[off * dim..(off + ids.len()) * dim];
                    let v = &mut out[i * dim..(i + 1) * dim];
                    pool(rows, dim, self.config.pooling, v);
                    if self.config.normalize {
                        l2_normalize(v);
                    }
                    if !v.iter().all(|x| x.is_finite()) {
                        return Err(Error::NonFiniteOutput {
                            index: i,
                            text: format!("{} token ids", ids.len()),
                        });
                    }
                    off += ids.len();
                }
            }
            Ok(())
        };
        let result = run();
        self.put_scratch(scratch, &times);
        result?;
        Ok(EmbedInfo {
            token_counts: tokens.iter().map(|t| t.ids.len()).collect(),
            truncated: tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| t.truncated)
                .map(|(i, _)| i)
                .collect(),
        })
    }

    /// Runs the encoder on all `seqs` in one forward and returns each text's last hidden state
    /// `[tokens, dim]` (no pooling): what ONNX Runtime's `last_hidden_state` holds for the
    /// text's real tokens. For tests and diagnostics.
    pub fn last_hidden_states(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let dim = self.dim();
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        if total > self.max_batch_tokens {
            return Err(Error::InvalidInput(format!(
                "{total} tokens in one forward; this embedder's budget is {} \
                 (max_batch_tokens)",
                self.max_batch_tokens
            )));
        }
        let mut scratch = Scratch::default();
        let mut times = OpTimes::default();
        self.run_forward(seqs, total, &mut scratch, &mut times)?;
        let hidden = scratch.hidden(total, dim);
        let mut out = Vec::with_capacity(seqs.len());
        let mut off = 0;
        for s in seqs {
            out.push(hidden[off * dim..(off + s.len()) * dim].to_vec());
            off += s.len();
        }
        Ok(out)
    }

    /// One forward of `seqs` into `scratch` on the pool, in turns with other callers: it
    /// pauses between steps when `Turn::should_yield` says so (a smaller call waits, or this
    /// call's quantum is over) and carries on when it has the turn again. `left`: the tokens
    /// this call still has to run, this forward's included (its priority).
    fn run_forward(
        &self,
        seqs: &[&[u32]],
        left: usize,
        scratch: &mut Scratch,
        times: &mut OpTimes,
    ) -> Result<()> {
        let mut from = 0;
        loop {
            let turn = self.turns.take(left);
            let next = self.pool.install(|| {
                let pause = || turn.should_yield();
                self.model.forward_steps(seqs, scratch, times, from, &pause)
            })?;
            drop(turn);
            match next {
                None => return Ok(()),
                Some(step) => from = step,
            }
        }
    }

    /// A scratch arena for one call whose largest forward has `tokens` tokens: reused from an
    /// earlier call when one is free, else new; grown (never shrunk) to hold `tokens` rounded
    /// up to a power of two (at least 64), at most the token budget. So an arena reaches the
    /// budget's size only when calls need it (a lone query's cold start zeroes 0.6 MB, not the
    /// budget's 19 MB), in a few steps, and then stays flat.
    fn take_scratch(&self, tokens: usize) -> Scratch {
        let reused = self.scratch.lock().ok().and_then(|mut v| v.pop());
        let mut s = reused.unwrap_or_default();
        let rows = tokens
            .max(64)
            .next_power_of_two()
            .min(self.max_batch_tokens);
        self.model.reserve(&mut s, rows.max(tokens));
        s
    }

    fn put_scratch(&self, s: Scratch, times: &OpTimes) {
        if let Ok(mut v) = self.scratch.lock() {
            v.push(s);
        }
        if times.enabled() {
            if let Ok(mut t) = self.timings.lock() {
                t.merge(times);
            }
        }
    }

    /// Prepares for a long job (many texts, e.g. a file): grows one scratch arena to the full
    /// token budget and reads in the word-embedding table where it is mapped from the model
    /// file, so the memory such a job reaches is resident, and claimed, before its first text
    /// rather than along the way; from here the resident memory stays flat. A lone query does
    /// not need it (the arena grows to need, the table's pages are read as rows are used).
    /// `e5embed embed` calls it for `--input` files and stdin.
    pub fn prepare_for_bulk(&self) {
        let s = self.take_scratch(self.max_batch_tokens);
        self.put_scratch(s, &OpTimes::default());
        self.model.read_in_word_table();
    }

    /// Per-op timings accumulated since load (empty unless `E5EMBED_TIMING=1`).
    pub fn timings(&self) -> OpTimes {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The token budget per forward.
    pub fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    /// Bytes held by the scratch arenas (flat after the first call).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch
            .lock()
            .map(|v| v.iter().map(|s| s.bytes()).sum())
            .unwrap_or(0)
    }

    /// Pooling mode in use.
    pub fn pooling(&self) -> Pooling {
        self.config.pooling
    }
}

/// A value computed on a scoped thread, waited for once.
struct Pending<'scope, T> {
    handle: Option<std::thread::ScopedJoinHandle<'scope, T>>,
    result: Option<std::thread::Result<T>>,
}

impl<'scope, T> Pending<'scope, T> {
    fn new(handle: std::thread::ScopedJoinHandle<'scope, T>) -> Self {
        Pending {
            handle: Some(handle),
            result: None,
        }
    }

    /// Waits for the thread (once; later calls return at once).
    fn join(&mut self) {
        if let Some(h) = self.handle.take() {
            self.result = Some(h.join());
        }
    }
}

impl Pending<'_, (Result<TextTokenizer>, std::time::Duration)> {
    /// The tokenizer (a panic of its thread, which `tokenize.rs` guards against, is an error).
    fn wait(mut self) -> (Result<TextTokenizer>, std::time::Duration) {
        self.join();
        match self.result {
            Some(Ok(r)) => r,
            _ => (
                Err(Error::InvalidInput(
                    "the tokenizer thread panicked while reading tokenizer.json".into(),
                )),
                std::time::Duration::ZERO,
            ),
        }
    }
}

/// What the load has once the weights are in hand (on the main thread, while the tokenizer is
/// read on its own).
struct Prepared {
    tuned: Option<crate::tune::Tuned>,
    paths: Paths,
    pool: rayon::ThreadPool,
    precision: Precision,
    precision_reason: String,
    recipe: Int8Recipe,
    cache_dir: Option<PathBuf>,
    loaded: Loaded,
    /// The packed-weights cache's warnings so far.
    warnings: Vec<String>,
}

/// The model from the packed-weights cache (and its file), or the weights to pack (and the
/// cache key to save them under).
enum Loaded {
    Cached(FastModel, PathBuf),
    Weights(Box<BertWeights>, Option<PackKey>),
}

/// The load's steps that need no tokenizer: the budget check, the kernel choice, the pool,
/// `model.safetensors`' header (which says whether the model is int8), the precision, then the
/// packed weights from the cache or the weights from the file. `tok` is waited for before a
/// tuning measurement.
fn prepare(
    dir: &Path,
    opts: &EmbedderOptions,
    config: &ModelConfig,
    threads: usize,
    tok: &mut Pending<'_, (Result<TextTokenizer>, std::time::Duration)>,
    stages: &mut StageTimes,
) -> Result<Prepared> {
    // Before the weights are read: the largest budget this load can end up with.
    check_scratch_bytes(
        config,
        opts.max_batch_tokens.unwrap_or(DEFAULT_MAX_BATCH_TOKENS),
    )?;
    let forced = opts.isa.is_some() || opts.qisa.is_some() || opts.bisa.is_some();
    let cache_dir = opts
        .cache_dir
        .clone()
        .or_else(crate::tune::default_cache_dir);
    let tuned = if opts.tune.unwrap_or(true) && !forced {
        tune_or_warn(cache_dir.as_deref(), &config.bert, &mut || tok.join())
    } else {
        None
    };
    let paths = match tuned.as_ref().and_then(|t| t.tuning.choice()) {
        Some(c) => Paths {
            isa: c.isa,
            qisa: c.qisa,
            bisa: c.bisa,
        },
        None => resolve_paths(opts.isa, opts.qisa, opts.bisa)?,
    };
    stages.lap("tuning (cache lookup)");
    // The pool first: loading converts and packs the layers in parallel on it.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("e5embed-{i}"))
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    stages.lap("thread pool");
    let path = dir.join("model.safetensors");
    if !path.is_file() {
        return Err(Error::MissingFile {
            dir: dir.to_owned(),
            file: "model.safetensors".into(),
            hint: crate::config::hint_for(dir),
        });
    }
    let map = crate::weights::map_file(&path)?;
    let st = crate::weights::parse_header(map.bytes(), &path)?;
    let prequantized = crate::weights::file_is_prequantized(&st);
    let (precision, precision_reason) = match opts.precision {
        Some(p) => (p, "requested".to_owned()),
        None => auto_precision(prequantized, tuned.as_ref().map(|t| &t.tuning)),
    };
    let recipe = opts
        .int8_recipe
        .clone()
        .unwrap_or_else(|| Int8Recipe::default_for(paths.qisa));
    if precision == Precision::Int8 {
        recipe.validate()?;
    }
    stages.lap("safetensors map + header");
    // The packed-weights cache: on by default; off when asked, when a kernel path is forced
    // (an experiment, as for tuning), without a cache directory, and for models so small
    // that packing them costs less than mapping and checking a file.
    let use_cache =
        opts.weight_cache.unwrap_or(true) && !forced && map.len() >= packed_cache::MIN_MODEL_BYTES;
    let key = match &cache_dir {
        Some(_) if use_cache => PackKey::of(dir, precision, paths, &recipe),
        _ => None,
    };
    let mut warnings = Vec::new();
    if let (Some(key), Some(cache)) = (&key, &cache_dir) {
        let table = || crate::weights::mapped_table(&map, &st, &config.bert);
        let path = key.path_in(cache);
        let cached = pool.install(|| {
            packed_cache::load(
                &path,
                key,
                &config.bert,
                paths,
                precision,
                &recipe,
                &table,
                &mut warnings,
            )
        });
        stages.lap("packed-weights cache (map, checksum)");
        if let Some(model) = cached {
            return Ok(Prepared {
                tuned,
                paths,
                pool,
                precision,
                precision_reason,
                recipe,
                cache_dir,
                loaded: Loaded::Cached(model, path),
                warnings,
            });
        }
    }
    let weights = pool.install(|| BertWeights::from_mapped(&map, st, &path, &config.bert))?;
    stages.lap("safetensors read + convert");
    Ok(Prepared {
        tuned,
        paths,
        pool,
        precision,
        precision_reason,
        recipe,
        cache_dir,
        loaded: Loaded::Weights(Box::new(weights), key),
        warnings,
    })
}

/// The tuning for `c` from the cache in `dir`, or measured now. Its warnings (a corrupt
/// cache, a failed write) go to stderr; a failed measurement is a warning too, and the fixed
/// rule then chooses: tuning never stops a model from loading.
/// `before_measuring` runs before a measurement (not before a cache hit).
fn tune_or_warn(
    dir: Option<&Path>,
    c: &crate::config::BertConfig,
    before_measuring: &mut dyn FnMut(),
) -> Option<crate::tune::Tuned> {
    let mut measure = |shapes: &crate::tune::Shapes| {
        before_measuring();
        crate::tune::measure(shapes)
    };
    let key = crate::tune::MachineKey::current();
    let shapes = crate::tune::Shapes::of(c);
    match crate::tune::load_or_measure_with(dir, &key, &shapes, false, &mut measure) {
        Ok(t) => {
            for w in &t.warnings {
                eprintln!("e5embed: warning: {w}");
            }
            Some(t)
        }
        Err(e) => {
            eprintln!("e5embed: warning: kernel tuning failed ({e}); using the fixed choice");
            None
        }
    }
}

/// A short form of a text for error messages: its first 60 characters, quoted.
fn preview(text: &str) -> String {
    let mut p: String = text.chars().take(60).collect();
    if p.len() < text.len() {
        p.push('…');
    }
    format!("{p:?}")
}

/// Refuses a tokenizer that can produce ids the embedding table has no row for, or whose
/// special tokens (`[CLS]`, `[SEP]`) are missing, out of range or longer than the text limit.
fn validate_tokenizer(tok: &TextTokenizer, config: &ModelConfig) -> Result<()> {
    let vocab = config.bert.vocab_size;
    let err = |msg: String| Error::Tokenizer {
        path: tok.path().to_owned(),
        msg,
    };
    if let Some(max) = tok.max_vocab_id().filter(|&m| m as usize >= vocab) {
        return Err(err(format!(
            "it has token id {max}, but the model's embedding table (vocab_size in \
             config.json) has {vocab} rows: tokenizer and model do not match"
        )));
    }
    let specials = tok.encode("")?.ids;
    if specials.is_empty() {
        return Err(err(
            "it adds no special tokens ([CLS] ... [SEP]) to a text: a BERT tokenizer's \
             post-processor is missing"
                .into(),
        ));
    }
    if let Some(&bad) = specials.iter().find(|&&id| id as usize >= vocab) {
        return Err(err(format!(
            "its special token id {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    if specials.len() >= config.max_seq_length {
        return Err(err(format!(
            "its {} special tokens leave no room for text within max_seq_length {}",
            specials.len(),
            config.max_seq_length
        )));
    }
    Ok(())
}

/// Refuses a token budget whose forward scratch (allocated up front) would exceed
/// [`MAX_SCRATCH_BYTES`], with checked products (a corrupt config cannot overflow them).
fn check_scratch_bytes(config: &ModelConfig, tokens: usize) -> Result<()> {
    let c = &config.bert;
    // x and x1 [t, h], the work area [t, max(4h, inter)] (f32), and the int8 activations
    // (one byte per input column of the two quantized GEMM inputs, plus padding; counted at
    // every precision).
    let per_token = c
        .hidden_size
        .checked_mul(2)
        .and_then(|v| v.checked_add(c.intermediate_size.max(c.hidden_size.checked_mul(4)?)))
        .and_then(|f| f.checked_mul(4))
        .and_then(|b| b.checked_add(c.hidden_size.max(c.intermediate_size)))
        .and_then(|b| b.checked_add(c.intermediate_size + 256));
    let bytes = per_token.and_then(|b| b.checked_mul(tokens));
    match bytes {
        Some(b) if b <= MAX_SCRATCH_BYTES => Ok(()),
        _ => Err(Error::Limit {
            what: "forward scratch bytes".into(),
            value: bytes.unwrap_or(usize::MAX),
            max: MAX_SCRATCH_BYTES,
            why: format!(
                " (max_batch_tokens {tokens} at hidden_size {}, intermediate_size {}): \
                 lower max_batch_tokens",
                c.hidden_size, c.intermediate_size
            ),
        }),
    }
}

/// Splits `order` into consecutive groups whose total length stays within `budget`.
fn budget_batches<'a>(
    order: &'a [usize],
    len: impl Fn(usize) -> usize + 'a,
    budget: usize,
) -> impl Iterator<Item = &'a [usize]> + 'a {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= order.len() {
            return None;
        }
        let mut end = start;
        let mut sum = 0;
        while end < order.len() && (end == start || sum + len(order[end]) <= budget) {
            sum += len(order[end]);
            end += 1;
        }
        let group = &order[start..end];
        start = end;
        Some(group)
    })
}

/// Physical cores available to this process: distinct (package, core) pairs among the online
/// CPUs in Linux sysfs, capped by what the process may use (affinity, cgroup quota). Falls
/// back to the logical CPU count where sysfs says nothing.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cores = std::collections::HashSet::new();
    if let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name
                .strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                continue;
            }
            let topo = e.path().join("topology");
            let read = |f: &str| {
                std::fs::read_to_string(topo.join(f))
                    .ok()
                    .map(|s| s.trim().to_owned())
            };
            if let (Some(pkg), Some(core)) = (read("physical_package_id"), read("core_id")) {
                cores.insert((pkg, core));
            }
        }
    }
    match cores.len() {
        0 => logical,
        n => n.min(logical),
    }
}
