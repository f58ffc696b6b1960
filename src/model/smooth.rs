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

use e5embed_kernels::gemm::{gemm_f32, PackedMatrix};
use std::borrow::Cow;

use e5embed_kernels::qgemm::{QIsa, QIsaKind, QuantizedMatrix};
use e5embed_kernels::{attention, ew, Epilogue, Isa, IsaKind};

use super::fast::Linear;
use crate::error::{Error, Result};
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
        QIsaKind::Avx512Vnni => IsaKind::Avx512,
    };
    Isa::new(kind).unwrap_or_else(|| Isa::new(IsaKind::Scalar).expect("scalar always exists"))
}

/// Per layer, per GEMM (qkv, out, up, down): `max|X_j|` of the GEMM's input over the
/// calibration tokens (an f32 forward, single-threaded).
pub fn activation_absmax(
    w: &BertWeights,
    seqs: &[Vec<u32>],
    qisa: QIsa,
) -> Result<Vec<[Vec<f32>; 4]>> {
    let c = &w.config;
    let isa = calibration_isa(qisa);
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let (heads, d, eps) = (c.num_attention_heads, c.head_dim(), c.layer_norm_eps);
    for ids in seqs {
        super::validate_ids(c, ids)?;
    }
    let t: usize = seqs.iter().map(|s| s.len()).sum();
    let mut x = vec![0f32; t * h];
    let mut rows = x.chunks_exact_mut(h);
    for ids in seqs {
        for (pos, (&id, row)) in ids.iter().zip(rows.by_ref()).enumerate() {
            let word = &w.word_emb[id as usize * h..][..h];
            let position = &w.pos_emb[pos * h..][..h];
            for (j, o) in row.iter_mut().enumerate() {
                *o = word[j] + position[j] + w.type_emb[j];
            }
        }
    }
    ew::layernorm(isa, &mut x, h, &w.emb_ln_g, &w.emb_ln_b, eps)?;
    let absmax = |a: &[f32], k: usize| {
        let mut m = vec![0f32; k];
        for row in a.chunks_exact(k) {
            for (mj, v) in m.iter_mut().zip(row) {
                *mj = mj.max(v.abs());
            }
        }
        m
    };
    let pack = |m: &Matrix, n, k| PackedMatrix::pack(isa, &m.to_f32(), n, k);
    let mut stats = Vec::with_capacity(w.layers.len());
    let (mut qkv, mut ctx, mut x1, mut ffn) = (
        vec![0f32; t * 3 * h],
        vec![0f32; t * h],
        vec![0f32; t * h],
        vec![0f32; t * inter],
    );
    for l in &w.layers {
        let s_qkv = absmax(&x, h);
        gemm_f32(
            &x,
            t,
            &pack(&l.qkv_w, 3 * h, h)?,
            &mut qkv,
            Epilogue::Bias(&l.qkv_b),
        )?;
        let mut off = 0;
        for ids in seqs {
            let n = ids.len();
            attention::attention_f32(
                isa,
                &qkv[off * 3 * h..(off + n) * 3 * h],
                n,
                heads,
                d,
                &mut ctx[off * h..(off + n) * h],
            )?;
            off += n;
        }
        let s_out = absmax(&ctx, h);
        let epi = Epilogue::BiasResidual {
            bias: &l.attn_out_b,
            residual: &x,
        };
        gemm_f32(&ctx, t, &pack(&l.attn_out_w, h, h)?, &mut x1, epi)?;
        ew::layernorm(isa, &mut x1, h, &l.attn_ln_g, &l.attn_ln_b, eps)?;
        let s_up = absmax(&x1, h);
        let epi = Epilogue::BiasGelu(&l.ffn_up_b);
        gemm_f32(&x1, t, &pack(&l.ffn_up_w, inter, h)?, &mut ffn, epi)?;
        let s_down = absmax(&ffn, inter);
        let epi = Epilogue::BiasResidual {
            bias: &l.ffn_down_b,
            residual: &x1,
        };
        gemm_f32(&ffn, t, &pack(&l.ffn_down_w, h, inter)?, &mut x, epi)?;
        ew::layernorm(isa, &mut x, h, &l.ffn_ln_g, &l.ffn_ln_b, eps)?;
        stats.push([s_qkv, s_out, s_up, s_down]);
    }
    Ok(stats)
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

/// `1 / s` per channel (exact: `s` is a power of two).
fn inverse(s: &[f32]) -> Vec<f32> {
    s.iter().map(|&v| 1.0 / v).collect()
}

/// The int8 weights of a Linear layer `[n, k]` for `qisa`: an f32 matrix quantized from
/// `W · diag(s)` (plain `W` without factors), a saved int8 one packed as stored; with factors,
/// the matrix multiplies its input by `1 / s` when quantizing it.
pub fn quantize(
    qisa: QIsa,
    m: Matrix,
    smooth: Option<&[f32]>,
    n: usize,
    k: usize,
) -> Result<QuantizedMatrix> {
    let q = match m {
        Matrix::F32(mut w) => {
            if let Some(s) = smooth {
                check_len(s, k)?;
                for row in w.chunks_exact_mut(k) {
                    for (v, &f) in row.iter_mut().zip(s) {
                        *v *= f;
                    }
                }
            }
            QuantizedMatrix::quantize(qisa, &w, n, k)?
        }
        Matrix::Int8 { q, scales } => QuantizedMatrix::from_quantized(qisa, &q, &scales, n, k)
            .map_err(|e| {
                Error::InvalidInput(format!(
                    "the saved int8 weights cannot run on the {} int8 path ({e}); \
                     re-run `e5embed quantize` with --isa {} or load the original model",
                    qisa.name(),
                    qisa.name()
                ))
            })?,
    };
    Ok(match smooth {
        Some(s) => q.with_input_mul(inverse(s))?,
        None => q,
    })
}

/// The f32 weights `[n, k]` of a Linear layer in the original space: a saved smoothed int8
/// matrix is dequantized and divided by its factors; an f32 matrix is returned as is.
pub fn to_f32<'a>(m: &'a Matrix, smooth: Option<&[f32]>, k: usize) -> Cow<'a, [f32]> {
    match (m, smooth) {
        (Matrix::Int8 { .. }, Some(s)) if s.len() == k => {
            let inv = inverse(s);
            let mut w = m.to_f32().into_owned();
            for row in w.chunks_exact_mut(k) {
                for (v, &f) in row.iter_mut().zip(&inv) {
                    *v *= f;
                }
            }
            Cow::Owned(w)
        }
        _ => m.to_f32(),
    }
}

fn check_len(s: &[f32], k: usize) -> Result<()> {
    if s.len() != k {
        return Err(Error::InvalidInput(format!(
            "smoothing factors: {} values for {k} input channels",
            s.len()
        )));
    }
    Ok(())
}

/// The offset of the FFN down projection's unsigned input mode: erf-GELU's minimum is
/// `-0.16997` (at `x ≈ -0.75`), so `GELU(x) + 0.17 >= 0`.
pub const GELU_OFFSET: f32 = 0.17;

/// The FFN down projection as the int8 path runs it: its GELU input (`>= -0.17`, one-sided)
/// quantized unsigned over the full u8 range (`QuantizedMatrix::with_unsigned_input`, twice
/// the resolution of the signed range), and its bias corrected for the offset the GEMM then
/// adds (`b - 0.17 · Σ_k Ŵ[n, k]`). An f32 layer, or `unsigned: false`, returns it unchanged.
pub fn unsigned_gelu_input(
    w: Linear,
    bias: Vec<f32>,
    unsigned: bool,
) -> Result<(Linear, Vec<f32>)> {
    match w {
        Linear::Int8(q) if unsigned => {
            let q = q.with_unsigned_input(GELU_OFFSET)?;
            let corr = q.offset_correction();
            let bias = bias.iter().zip(&corr).map(|(b, c)| b - c).collect();
            Ok((Linear::Int8(q), bias))
        }
        w => Ok((w, bias)),
    }
}
