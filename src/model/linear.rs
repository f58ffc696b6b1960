//! A Linear layer's weights packed for the precision's kernels (f32 panels, int8 VNNI
//! layout with per-channel scales, bf16 pairs), and the int8 preparation that goes with it:
//! SmoothQuant factors folded into the weights (`quantize`), a saved int8 model's weights back
//! in the original space (`to_f32`), and the FFN down projection's unsigned input mode.

use std::borrow::Cow;

use e5embed_kernels::bgemm::{BIsa, Bf16Matrix};
use e5embed_kernels::gemm::PackedMatrix;
use e5embed_kernels::qgemm::{QIsa, QuantizedMatrix};
use e5embed_kernels::Isa;

use super::Precision;
use crate::error::{Error, Result};
use crate::weights::Matrix;

/// A Linear layer's weights packed for one kernel family.
pub enum Linear {
    /// f32 weights for the f32 GEMM microkernels.
    F32(PackedMatrix),
    /// int8 weights (symmetric per output channel) for the u8 x s8 kernels; activations are
    /// quantized per token right before the GEMM (see `kernels/src/qgemm/mod.rs`).
    Int8(QuantizedMatrix),
    /// bf16 weights for the bf16 kernels (f32 accumulation; activations rounded to bf16 inside
    /// the GEMM, see `kernels/src/bgemm/mod.rs`).
    Bf16(Bf16Matrix),
}

impl Linear {
    /// `smooth`: the SmoothQuant factors of the weights' input channels (see `smooth`).
    pub(crate) fn new(
        m: Matrix,
        smooth: Option<&[f32]>,
        n: usize,
        k: usize,
        paths: Paths,
        precision: Precision,
    ) -> Result<Self> {
        let Paths { isa, qisa, bisa } = paths;
        Ok(match precision {
            Precision::F32 => Linear::F32(PackedMatrix::pack(isa, &to_f32(&m, smooth, k), n, k)?),
            // bf16 weights stored in the file were widened to f32 exactly at load, so this
            // rounding gives them back bit for bit.
            Precision::Bf16 => {
                Linear::Bf16(Bf16Matrix::from_f32(bisa, &to_f32(&m, smooth, k), n, k)?)
            }
            Precision::Int8 => Linear::Int8(quantize(qisa, m, smooth, n, k)?),
        })
    }

    /// Rows up to which the parallel GEMM of this format splits its output by columns
    /// (a query: each thread streams its share of the weights), above which by rows.
    pub(crate) fn column_split_max_m(&self) -> usize {
        match self {
            Linear::F32(_) => e5embed_kernels::gemm::COLUMN_SPLIT_MAX_M,
            Linear::Int8(_) => e5embed_kernels::qgemm::INT8_COLUMN_SPLIT_MAX_M,
            Linear::Bf16(_) => e5embed_kernels::bgemm::BF16_COLUMN_SPLIT_MAX_M,
        }
    }

    pub fn kernel_name(&self) -> &'static str {
        match self {
            Linear::F32(w) => w.kernel_name(),
            Linear::Int8(w) => w.kernel_name(),
            Linear::Bf16(w) => w.kernel_name(),
        }
    }

    /// The int8 weights and scales (for saving a quantized model).
    pub fn int8_parts(&self) -> Option<(Vec<i8>, Vec<f32>)> {
        match self {
            Linear::Int8(w) => Some((w.unpack_weights(), w.scales()[..w.n()].to_vec())),
            Linear::F32(_) | Linear::Bf16(_) => None,
        }
    }
}

/// The kernel path of each precision: f32 GEMM / LayerNorm / attention, int8 GEMM, bf16 GEMM.
#[derive(Debug, Clone, Copy)]
pub struct Paths {
    pub isa: Isa,
    pub qisa: QIsa,
    pub bisa: BIsa,
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
