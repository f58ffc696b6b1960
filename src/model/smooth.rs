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

use e5embed_kernels::qgemm::{QIsa, QIsaKind};
use e5embed_kernels::{Isa, IsaKind};

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

/// Calibrates and sets `LayerWeights::smooth` for every GEMM that runs in int8, is smoothed
/// by `recipe` and still has f32 weights (a saved int8 model carries its own factors).
pub fn calibrate(
    w: &mut BertWeights,
    tokenizer: &TextTokenizer,
    qisa: QIsa,
    recipe: &Int8Recipe,
) -> Result<()> {
    recipe.validate()?;
    let wanted = |g: &str| recipe.is_int8(g) && recipe.smoothed.iter().any(|s| s == g);
    let todo: Vec<(usize, usize)> = (0..w.layers.len())
        .flat_map(|l| (0..4).map(move |g| (l, g)))
        .filter(|&(l, g)| wanted(GEMMS[g]) && matches!(w.layers[l].linear(g), Matrix::F32(_)))
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let seqs = tokenizer
        .encode_batch(CALIBRATION_TEXTS)?
        .into_iter()
        .map(|t| t.ids)
        .collect::<Vec<_>>();
    let stats = activation_absmax(w, &seqs, qisa)?;
    let alpha = recipe.alpha;
    for (l, g) in todo {
        let k = stats[l][g].len();
        let s = factors(&stats[l][g], &w.layers[l].linear(g).to_f32(), k, alpha);
        if s.len() != k {
            return Err(Error::InvalidInput(
                "smoothing: factor count mismatch".into(),
            ));
        }
        w.layers[l].smooth[g] = Some(s);
    }
    Ok(())
}
