//! The integer-exact scalar reference (also the `QIsaKind::Scalar` path): i32
//! accumulation and the same f32 epilogue arithmetic as the SIMD kernels (see the
//! module docs in `qgemm/mod.rs`), GELU in f64 `erf`.

use super::{padded_k, validate_gemm, validate_quantize, QuantizedMatrix};
use crate::gemm::{gelu_f64, Epilogue};
use crate::KernelError;

/// Quantizes one row: returns `s_a` and writes `Aq + 128` (pad bytes 128).
/// The exact arithmetic every ISA reproduces: `t = x · mul` (f32, one rounding;
/// `t = x` without `mul`), `amax = max|t|` (f32), `s_a = amax / 127`,
/// `inv = 127 / amax` (0 for a zero row), byte =
/// `clamp(round_ties_even(t · inv), -127, 127) + 128`.
#[inline]
pub(crate) fn quantize_row(x: &[f32], mul: Option<&[f32]>, out: &mut [u8]) -> f32 {
    let t = |j: usize| match mul {
        Some(c) => x[j] * c[j],
        None => x[j],
    };
    let amax = (0..x.len()).fold(0f32, |m, j| m.max(t(j).abs()));
    let (scale, inv) = row_scale(amax);
    for (j, o) in out[..x.len()].iter_mut().enumerate() {
        *o = quantize_one(t(j), inv);
    }
    for o in out[x.len()..].iter_mut() {
        *o = 128;
    }
    scale
}

/// `(s_a, 127 / amax)`, both 0 for a zero row.
#[inline(always)]
pub(crate) fn row_scale(amax: f32) -> (f32, f32) {
    if amax > 0.0 {
        (amax / 127.0, 127.0 / amax)
    } else {
        (0.0, 0.0)
    }
}

/// One activation: `clamp(round_ties_even(v · inv), -127, 127) + 128`.
#[inline(always)]
pub(crate) fn quantize_one(v: f32, inv: f32) -> u8 {
    let q = (v * inv).round_ties_even();
    (q.clamp(-127.0, 127.0) as i32 + 128) as u8
}

pub(crate) fn quantize_rows_unchecked(
    a: &[f32],
    m: usize,
    k: usize,
    mul: Option<&[f32]>,
    out: &mut [u8],
    scales: &mut [f32],
) {
    let kp = padded_k(k);
    for i in 0..m {
        scales[i] = quantize_row(&a[i * k..(i + 1) * k], mul, &mut out[i * kp..(i + 1) * kp]);
    }
}

/// The reference quantizer: `a: [m, k]` -> `out: [m, padded_k(k)]`, `scales: [m]`.
pub fn quantize_rows_reference(
    a: &[f32],
    m: usize,
    k: usize,
    out: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    validate_quantize("quantize_rows_reference", a, m, k, out, scales)?;
    quantize_rows_unchecked(a, m, k, None, out, scales);
    Ok(())
}

/// The reference of [`super::quantize_rows_smoothed`]: each row multiplied by `mul: [k]`
/// column-wise, then quantized as [`quantize_rows_reference`].
pub fn quantize_rows_smoothed_reference(
    a: &[f32],
    m: usize,
    k: usize,
    mul: &[f32],
    out: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    validate_quantize("quantize_rows_smoothed_reference", a, m, k, out, scales)?;
    super::validate_mul("quantize_rows_smoothed_reference", mul, k)?;
    quantize_rows_unchecked(a, m, k, Some(mul), out, scales);
    Ok(())
}

pub(crate) enum Out<'a, 'e> {
    F32(&'a mut [f32], &'a [f32], Epilogue<'e>),
    I32(&'a mut [i32]),
}

/// The f32 epilogue of one element, in the order the SIMD kernels use.
#[inline(always)]
pub(crate) fn epilogue_one(
    x: i32,
    sa: f32,
    sw: f32,
    e: &Epilogue,
    i: usize,
    j: usize,
    n: usize,
) -> f32 {
    let y = (sa * sw) * x as f32;
    match *e {
        Epilogue::None => y,
        Epilogue::Bias(b) => y + b[j],
        Epilogue::BiasGelu(b) => gelu_f64((y + b[j]) as f64) as f32,
        Epilogue::BiasResidual { bias, residual } => (y + bias[j]) + residual[i * n + j],
    }
}

/// The weights as `[n]` rows of stride `ld`: the packed buffer itself for the
/// scalar packing (NR = 1: a column's `kp` bytes are contiguous, so the scalar
/// fallback path allocates nothing), else an unpacked copy (the reference for the
/// SIMD packings, used by tests only).
fn weight_rows(b: &QuantizedMatrix) -> (std::borrow::Cow<'_, [i8]>, usize) {
    if b.nr == 1 {
        (std::borrow::Cow::Borrowed(b.bytes()), b.kp)
    } else {
        (std::borrow::Cow::Owned(b.unpack_weights()), b.k)
    }
}

/// Reference GEMM on validated operands (any QIsa's packing).
pub(crate) fn gemm_unchecked(a: &[u8], m: usize, b: &QuantizedMatrix, mut out: Out) {
    let (n, k, kp) = (b.n, b.k, b.kp);
    let (w, ld) = weight_rows(b);
    for j in 0..n {
        let wj = &w[j * ld..j * ld + k];
        for i in 0..m {
            let ai = &a[i * kp..i * kp + k];
            // acc = Σ (Aq + 128)·Wq over the u8 bytes, exact in i32 (k <= QK_MAX).
            let acc: i32 = ai.iter().zip(wj).map(|(&x, &y)| x as i32 * y as i32).sum();
            // Compensation: Σ Aq·Wq = acc − 128·colsum[j].
            let x = acc - b.comp[j];
            match &mut out {
                Out::I32(c) => c[i * n + j] = x,
                Out::F32(c, sa, e) => {
                    c[i * n + j] = epilogue_one(x, sa[i], b.scales[j], e, i, j, n)
                }
            }
        }
    }
}

/// Integer-exact reference of [`super::gemm_u8s8`] (same arguments and contract):
/// i32 accumulation, then the same f32 epilogue arithmetic; GELU via f64 erf.
pub fn gemm_u8s8_reference(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    validate_gemm(
        "gemm_u8s8_reference",
        a,
        Some(scales),
        m,
        b,
        Some(c.len()),
        &epilogue,
    )?;
    gemm_unchecked(a, m, b, Out::F32(c, scales, epilogue));
    Ok(())
}

/// Reference of [`super::gemm_u8s8_i32`]: `C = Σ_k Aq·Wq` in i32.
pub fn gemm_u8s8_i32_reference(
    a: &[u8],
    m: usize,
    b: &QuantizedMatrix,
    c: &mut [i32],
) -> Result<(), KernelError> {
    validate_gemm(
        "gemm_u8s8_i32_reference",
        a,
        None,
        m,
        b,
        Some(c.len()),
        &Epilogue::None,
    )?;
    gemm_unchecked(a, m, b, Out::I32(c));
    Ok(())
}

/// Columns `cols` of the reference GEMM into `c_block: [m, cols.len()]` (validated
/// operands; the scalar path of `gemm_u8s8_cols`).
pub(crate) fn gemm_cols_unchecked(
    a: &[u8],
    sa: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    cols: std::ops::Range<usize>,
    c_block: &mut [f32],
    e: Epilogue,
) {
    let (n, k, kp, w) = (b.n, b.k, b.kp, cols.len());
    let (wq, ld) = weight_rows(b);
    for (jj, j) in cols.enumerate() {
        let wj = &wq[j * ld..j * ld + k];
        for i in 0..m {
            let acc: i32 = a[i * kp..i * kp + k]
                .iter()
                .zip(wj)
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            // Compensation: Σ Aq·Wq = acc − 128·colsum[j].
            c_block[i * w + jj] = epilogue_one(acc - b.comp[j], sa[i], b.scales[j], &e, i, j, n);
        }
    }
}
