//! SmoothQuant (Xiao et al. 2022) for the int8 GEMMs: per input channel `j` a factor
//! `s_j = max|X_j|^α / max|W_j|^(1-α)`, rounded to a power of two; the weights are quantized
//! from `W · diag(s)` and the activations are multiplied by `1 / s` inside the per-token
//! quantization step (`QuantizedMatrix::quantize_input`, `qgemm::quantize_rows_smoothed`), so
//! `(X · diag(1/s)) · (W · diag(s))ᵀ = X · Wᵀ`. It moves the activations' outlier channels
//! (the LayerNorm outputs of post-LN BERT carry a few channels 10-50x larger than the rest,
//! which per-token scales cannot absorb) into the weights, whose per-output-channel scales
//! absorb them better. Powers of two make both multiplications exact in f32.
//!
//! `max|X_j|` comes from a calibration: an f32 forward over [`CALIBRATION_TEXTS`] (fixed,
//! built in) with the f32 kernels of the int8 path's ISA family, so the factors are a
//! deterministic function of the model and the int8 path: `e5embed quantize` stores them
//! (`<weight>_smooth`, `[in]` f32) and a saved model loads bitwise equal to quantizing at load.

use std::path::Path;
use std::time::UNIX_EPOCH;

use e5embed_kernels::qgemm::{QIsa, QIsaKind};
use e5embed_kernels::{Isa, IsaKind};
use serde::{Deserialize, Serialize};

use super::forward::{self, FastLayer};
use super::scratch::Scratch;
use crate::error::{Error, Result};
use crate::timing::OpTimes;
use crate::tokenize::TextTokenizer;
use crate::weights::{BertWeights, Matrix};

/// Migration strength α (0: all the difficulty stays in the activations, 1: all moves to the
/// weights). Measured on all-MiniLM-L6-v2 (see README "int8").
pub const ALPHA: f32 = 0.6;

/// Texts whose activations set `max|X_j|`: short and long, queries and prose, digits and
/// punctuation. Changing them changes every smoothed model (and saved models then differ).
pub const CALIBRATION_TEXTS: &[&str] = &[
    "hello",
    "what is the capital of france?",
    "how do I reset my password",
    "Python 3.12 release notes",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street while people walk by.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The meeting was moved to Thursday at 3:30 pm because the room was unavailable.",
    "In 1969, Apollo 11 landed on the Moon and Neil Armstrong became the first person to walk on its surface.",
    "Returns a new list containing all items from the iterable in ascending order; a custom key function can be supplied to customize the sort order.",
    "The central bank raised interest rates by 0.25 percentage points to curb inflation, which reached 4.1% last quarter.",
    "She didn't know whether to laugh or cry!",
    "Error: connection refused (errno 111) while opening socket to 127.0.0.1:8080",
    "best pizza near me open now",
    "Machine learning models can be evaluated with cross-validation, which splits the data into several folds and trains on all but one of them each time.",
    "The river flows north through the valley before it turns east towards the sea, passing three small villages and an old stone bridge.",
];

/// Which GEMM of a layer (the order of `LayerWeights::smooth`).
pub const GEMMS: [&str; 4] = ["qkv", "out", "up", "down"];

/// The f32 kernels of the int8 path's ISA family (what the calibration forward runs on, so
/// the factors depend only on the int8 path).
fn calibration_isa(qisa: QIsa) -> Isa {
    let kind = match qisa.kind() {
        QIsaKind::Scalar => IsaKind::Scalar,
        QIsaKind::Avx2 | QIsaKind::AvxVnni => IsaKind::Avx2,
        QIsaKind::Avx512Vnni | QIsaKind::Amx => IsaKind::Avx512,
        QIsaKind::NeonDot | QIsaKind::NeonI8mm => IsaKind::Neon,
    };
    Isa::new(kind).unwrap_or_else(|| Isa::new(IsaKind::Scalar).expect("scalar always exists"))
}

/// Per layer, per GEMM (qkv, out, up, down): `max|X_j|` of the GEMM's input over the
/// calibration tokens: the engine's own forward steps at f32 on one thread
/// (`forward::layer_step` with an observer), one layer packed at a time.
pub fn activation_absmax(
    w: &BertWeights,
    seqs: &[Vec<u32>],
    qisa: QIsa,
) -> Result<Vec<[Vec<f32>; 4]>> {
    let c = &w.config;
    let isa = calibration_isa(qisa);
    for ids in seqs {
        super::validate_ids(c, ids)?;
    }
    let seqs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let t: usize = seqs.iter().map(|s| s.len()).sum();
    let mut scratch = Scratch::default();
    scratch.ensure(t, c.hidden_size, forward::work_width(c));
    let mut timing = OpTimes::default();
    let tables = forward::Tables {
        word: &w.word_emb,
        pos: &w.pos_emb,
        token_type: &w.type_emb,
        ln_g: &w.emb_ln_g,
        ln_b: &w.emb_ln_b,
    };
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))?;
    one_thread.install(|| {
        forward::embed_step(c, isa, &tables, &seqs, t, &mut scratch, &mut timing)?;
        let cx = forward::StepCx {
            config: c,
            isa,
            attn_bf16: None,
            seqs: &seqs,
            t,
        };
        let mut stats = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let layer = FastLayer::f32_view(l, c, isa)?;
            let mut s: [Vec<f32>; 4] = Default::default();
            let mut observe = |g: usize, input: &[f32], k: usize| {
                let mut m = vec![0f32; k];
                for row in input.chunks_exact(k) {
                    for (mj, v) in m.iter_mut().zip(row) {
                        *mj = mj.max(v.abs());
                    }
                }
                s[g] = m;
            };
            for op in 0..forward::LAYER_STEPS {
                forward::layer_step(
                    &cx,
                    &layer,
                    op,
                    &mut scratch,
                    &mut timing,
                    Some(&mut observe),
                )?;
            }
            stats.push(s);
        }
        Ok(stats)
    })
}

/// SmoothQuant factors for one GEMM: `s_j = 2^round(log2(max|X_j|^α / max_n |W[n, j]|^(1-α)))`
/// (1 where either maximum is 0), clamped to `[2^-20, 2^20]`.
pub fn factors(act_absmax: &[f32], w: &[f32], k: usize, alpha: f32) -> Vec<f32> {
    let mut wmax = vec![0f32; k];
    for row in w.chunks_exact(k) {
        for (m, v) in wmax.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    act_absmax
        .iter()
        .zip(&wmax)
        .map(|(&a, &wm)| {
            if !(a > 0.0 && wm > 0.0) {
                return 1.0;
            }
            let s = (a as f64).powf(alpha as f64) / (wm as f64).powf(1.0 - alpha as f64);
            let e = s.log2().round().clamp(-20.0, 20.0);
            (e as f32).exp2()
        })
        .collect()
}

/// GEMMs smoothed by default: the two whose input is a LayerNorm output (measured on
/// all-MiniLM-L6-v2, 3,000 sentences, every GEMM int8: smoothing qkv: mean 0.99751 ->
/// 0.99861, up: -> 0.99783, down (the GELU output): -> 0.99711, worse).
pub const DEFAULT_SMOOTH: [&str; 2] = ["qkv", "up"];

/// How the int8 precision quantizes a model. The library's numerics come from its options and
/// the model files only: [`Int8Recipe::default_for`] is the measured recipe every user gets;
/// anything else is an experiment, asked for explicitly (`EmbedderOptions::int8_recipe`, the
/// CLI's hidden `--int8-gemms`), never read from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Recipe {
    /// The GEMMs (`qkv`, `out`, `up`, `down`) that run in int8; the others stay f32.
    pub gemms: Vec<String>,
    /// The int8 GEMMs whose input channels get SmoothQuant factors.
    pub smoothed: Vec<String>,
    /// SmoothQuant's migration strength α.
    pub alpha: f32,
    /// Whether the FFN down projection quantizes its (GELU) input unsigned.
    pub unsigned_down: bool,
}

impl Int8Recipe {
    /// The measured default for the int8 path `qisa`: every GEMM int8, QKV and FFN up
    /// smoothed; on the AVX2 (7-bit weight) path QKV stays f32 and nothing is smoothed (its
    /// 7-bit weights lose more than the activations gain: measured, see `FastModel::new`).
    pub fn default_for(qisa: QIsa) -> Int8Recipe {
        let avx2 = qisa.kind() == QIsaKind::Avx2;
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Int8Recipe {
            gemms: if avx2 {
                list(&["out", "up", "down"])
            } else {
                list(&GEMMS)
            },
            smoothed: if avx2 {
                Vec::new()
            } else {
                list(&DEFAULT_SMOOTH)
            },
            alpha: ALPHA,
            unsigned_down: true,
        }
    }

    /// Parses a comma list of GEMM names (`qkv,out,up,down`, or `none`); unknown names are
    /// errors, not ignored.
    pub fn parse_gemms(list: &str) -> Result<Vec<String>> {
        let list = list.trim();
        if list.eq_ignore_ascii_case("none") {
            return Ok(Vec::new());
        }
        list.split(',')
            .map(|s| {
                let s = s.trim().to_ascii_lowercase();
                if GEMMS.contains(&s.as_str()) {
                    Ok(s)
                } else {
                    Err(Error::InvalidInput(format!(
                        "unknown GEMM `{s}` in `{list}`: use a comma list of qkv, out, up, down \
                         (or none)"
                    )))
                }
            })
            .collect()
    }

    /// Checks the values (names, α in [0, 1]).
    pub fn validate(&self) -> Result<()> {
        for g in self.gemms.iter().chain(&self.smoothed) {
            Self::parse_gemms(g)?;
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(Error::InvalidInput(format!(
                "SmoothQuant alpha {} is outside [0, 1]",
                self.alpha
            )));
        }
        Ok(())
    }

    /// Whether GEMM `g` runs in int8.
    pub fn is_int8(&self, g: &str) -> bool {
        self.gemms.iter().any(|s| s == g)
    }
}

/// Sets the SmoothQuant factors of `w`'s f32 Linear layers that `recipe` smooths, from a
/// calibration forward (see the module docs); a saved smoothed model has its factors already.
pub fn calibrate(
    w: &mut BertWeights,
    tokenizer: &TextTokenizer,
    qisa: QIsa,
    recipe: &Int8Recipe,
) -> Result<()> {
    calibrate_cached(w, tokenizer, qisa, recipe, None, &mut Vec::new()).map(|_| ())
}

/// The (layer, GEMM) pairs a calibration sets: smoothed int8 GEMMs whose weights are f32.
fn calibration_todo(w: &BertWeights, recipe: &Int8Recipe) -> Vec<(usize, usize)> {
    let wanted = |g: &str| recipe.is_int8(g) && recipe.smoothed.iter().any(|s| s == g);
    (0..w.layers.len())
        .flat_map(|l| (0..4).map(move |g| (l, g)))
        .filter(|&(l, g)| wanted(GEMMS[g]) && matches!(w.layers[l].linear(g), Matrix::F32(_)))
        .collect()
}

/// The factors of each pair of `todo`, from the calibration forward.
fn compute_factors(
    w: &BertWeights,
    tokenizer: &TextTokenizer,
    qisa: QIsa,
    recipe: &Int8Recipe,
    todo: &[(usize, usize)],
) -> Result<Vec<Vec<f32>>> {
    let seqs = tokenizer
        .encode_batch(CALIBRATION_TEXTS)?
        .into_iter()
        .map(|t| t.ids)
        .collect::<Vec<_>>();
    let stats = activation_absmax(w, &seqs, qisa)?;
    todo.iter()
        .map(|&(l, g)| {
            let k = stats[l][g].len();
            let s = factors(
                &stats[l][g],
                &w.layers[l].linear(g).to_f32(),
                k,
                recipe.alpha,
            );
            if s.len() != k {
                return Err(Error::InvalidInput(
                    "smoothing: factor count mismatch".into(),
                ));
            }
            Ok(s)
        })
        .collect()
}

fn apply(w: &mut BertWeights, todo: &[(usize, usize)], factors: Vec<Vec<f32>>) {
    for (&(l, g), s) in todo.iter().zip(factors) {
        w.layers[l].smooth[g] = Some(s);
    }
}

/// Bumped whenever the calibration (its texts, statistics or factor rule) changes: a cached
/// calibration of another version is computed again.
pub const CALIBRATION_VERSION: u32 = 1;

/// The cache's subdirectory (in the tuning cache directory, `crate::tune::default_cache_dir`).
pub const CALIBRATION_DIR: &str = "calibration";

/// What a cached calibration is valid for: the model and tokenizer files (path, size,
/// modification time), the int8 path, the recipe and [`CALIBRATION_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalibrationKey {
    pub model: String,
    pub model_size: u64,
    pub model_mtime_ns: u128,
    pub tokenizer_size: u64,
    pub tokenizer_mtime_ns: u128,
    pub int8_path: String,
    pub recipe: String,
    pub version: u32,
}

impl CalibrationKey {
    /// The key of a model directory's files (`None` when their metadata cannot be read:
    /// nothing is cached then).
    pub fn of(model_dir: &Path, qisa: QIsa, recipe: &Int8Recipe) -> Option<CalibrationKey> {
        let stat = |name: &str| -> Option<(u64, u128)> {
            let m = std::fs::metadata(model_dir.join(name)).ok()?;
            let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
            Some((m.len(), t.as_nanos()))
        };
        let (model_size, model_mtime_ns) = stat("model.safetensors")?;
        let (tokenizer_size, tokenizer_mtime_ns) = stat("tokenizer.json")?;
        let model = std::fs::canonicalize(model_dir.join("model.safetensors")).ok()?;
        Some(CalibrationKey {
            model: model.to_string_lossy().into_owned(),
            model_size,
            model_mtime_ns,
            tokenizer_size,
            tokenizer_mtime_ns,
            int8_path: qisa.name().to_owned(),
            recipe: format!("{recipe:?}"),
            version: CALIBRATION_VERSION,
        })
    }

    /// The file name: a 64-bit FNV-1a hash of the key (stable across builds); the file holds
    /// the whole key, which is compared on reading.
    pub fn file_name(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}.json")
    }
}

/// A cached calibration: the key and each smoothed GEMM's factors as f32 bits (exact).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CalibrationFile {
    key: CalibrationKey,
    factors: Vec<CachedFactors>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedFactors {
    layer: usize,
    gemm: usize,
    bits: Vec<u32>,
}

/// Where a load's SmoothQuant factors came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationSource {
    /// Nothing to calibrate (the recipe smooths nothing, or the model was saved smoothed).
    NotNeeded,
    /// Read from the cache.
    Cached,
    /// Computed at this load (and written to the cache where there is one).
    Computed,
}

/// [`calibrate`] through a cache: `cache` is the cache directory and the model directory.
/// The factors are a deterministic function of what the key holds, so a cached calibration
/// loads bitwise equal to computing it. A corrupt, unreadable or mismatching file is a
/// warning (pushed to `warnings`) and a new calibration; a failed write is a warning.
pub fn calibrate_cached(
    w: &mut BertWeights,
    tokenizer: &TextTokenizer,
    qisa: QIsa,
    recipe: &Int8Recipe,
    cache: Option<(&Path, &Path)>,
    warnings: &mut Vec<String>,
) -> Result<CalibrationSource> {
    recipe.validate()?;
    let todo = calibration_todo(w, recipe);
    if todo.is_empty() {
        return Ok(CalibrationSource::NotNeeded);
    }
    let key = cache.and_then(|(_, model_dir)| CalibrationKey::of(model_dir, qisa, recipe));
    let file = match (cache, &key) {
        (Some((dir, _)), Some(k)) => Some(dir.join(CALIBRATION_DIR).join(k.file_name())),
        _ => None,
    };
    if let (Some(path), Some(key)) = (&file, &key) {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<CalibrationFile>(&bytes) {
                Ok(f) if f.key == *key => match cached_factors(w, &todo, &f) {
                    Some(factors) => {
                        apply(w, &todo, factors);
                        return Ok(CalibrationSource::Cached);
                    }
                    None => warnings.push(format!(
                        "the cached calibration {} does not fit the model; calibrating again",
                        path.display()
                    )),
                },
                Ok(_) => {} // a hash collision or an edited file: computed again, replaced
                Err(e) => warnings.push(format!(
                    "the cached calibration {} is unreadable ({e}); calibrating again",
                    path.display()
                )),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warnings.push(format!(
                "the cached calibration {} cannot be read ({e}); calibrating again",
                path.display()
            )),
        }
    }
    let factors = compute_factors(w, tokenizer, qisa, recipe, &todo)?;
    if let (Some(path), Some(key)) = (&file, key) {
        let f = CalibrationFile {
            key,
            factors: todo
                .iter()
                .zip(&factors)
                .map(|(&(layer, gemm), s)| CachedFactors {
                    layer,
                    gemm,
                    bits: s.iter().map(|v| v.to_bits()).collect(),
                })
                .collect(),
        };
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })
            .and_then(|()| {
                let json = serde_json::to_vec(&f)
                    .map_err(|e| Error::InvalidInput(format!("calibration cache: {e}")))?;
                crate::hub::write_atomic(path, &json)
            });
        if let Err(e) = written {
            warnings.push(format!("the calibration cache could not be written: {e}"));
        }
    }
    apply(w, &todo, factors);
    Ok(CalibrationSource::Computed)
}

/// The cached factors in `todo`'s order, if the file has exactly those GEMMs with the right
/// lengths and finite, positive values.
fn cached_factors(
    w: &BertWeights,
    todo: &[(usize, usize)],
    f: &CalibrationFile,
) -> Option<Vec<Vec<f32>>> {
    if f.factors.len() != todo.len() {
        return None;
    }
    todo.iter()
        .zip(&f.factors)
        .map(|(&(l, g), c)| {
            let k = if g == 3 {
                w.config.intermediate_size
            } else {
                w.config.hidden_size
            };
            let s: Vec<f32> = c.bits.iter().map(|&b| f32::from_bits(b)).collect();
            let ok = (c.layer, c.gemm) == (l, g)
                && s.len() == k
                && s.iter().all(|v| v.is_finite() && *v > 0.0);
            ok.then_some(s)
        })
        .collect()
}
