//! The integer-exact scalar reference (also the `QIsaKind::Scalar` path): i32
//! accumulation and the same f32 epilogue arithmetic as the SIMD kernels (see the
//! module docs in `qgemm/mod.rs`), GELU in f64 `erf`.

use super::{padded_k, validate_gemm, validate_quantize, QuantizedMatrix};
use crate::epilogue::Epilogue;
use crate::KernelError;

/// How a matrix's input rows are quantized: an optional per-column multiplier `mul`
/// (SmoothQuant) and, for inputs bounded below by `-offset`, the unsigned mode.
#[derive(Clone, Copy, Default)]
pub(crate) struct InputMode<'a> {
    pub mul: Option<&'a [f32]>,
    pub offset: Option<f32>,
}

impl InputMode<'_> {
    /// The largest quantized value: 255 unsigned, 127 signed.
    #[inline(always)]
    pub(crate) fn qmax(self) -> f32 {
        if self.offset.is_some() {
            255.0
        } else {
            127.0
        }
    }

    /// The value quantized for element `x` of column `j`: `x · mul[j]` (or `x`), then in
    /// the unsigned mode `max(· + offset, 0)`.
    #[inline(always)]
    pub(crate) fn t(self, x: f32, j: usize) -> f32 {
        let v = match self.mul {
            Some(c) => x * c[j],
            None => x,
        };
        match self.offset {
            Some(o) => (v + o).max(0.0),
            None => v,
        }
    }

    /// One byte: signed `clamp(round_ties_even(t · inv), -127, 127) + 128`, unsigned
    /// `clamp(round_ties_even(t · inv), 0, 255)`.
    #[inline(always)]
    pub(crate) fn byte(self, t: f32, inv: f32) -> u8 {
        if self.offset.is_some() {
            (t * inv).round_ties_even().clamp(0.0, 255.0) as u8
        } else {
            quantize_one(t, inv)
        }
    }

    /// The pad byte (past k; the packed weights are 0 there): the quantized 0.
    #[inline(always)]
    pub(crate) fn pad(self) -> u8 {
        if self.offset.is_some() {
            0
        } else {
            128
        }
    }
}

/// Quantizes one row: returns `s_a` and writes the bytes (pad bytes: the quantized 0).
/// The exact arithmetic every ISA reproduces: `t = mode.t(x)` (`x · mul` in f32, one
/// rounding, then unsigned `max(t + offset, 0)`), `amax = max|t|` (f32),
/// `s_a = amax / Q`, `inv = Q / amax` (0 for a zero row; `Q` = 127 signed, 255
/// unsigned), byte = signed `clamp(round_ties_even(t · inv), -127, 127) + 128`,
/// unsigned `clamp(round_ties_even(t · inv), 0, 255)`.
#[inline]
pub(crate) fn quantize_row(x: &[f32], mode: InputMode, out: &mut [u8]) -> f32 {
    let amax = x
        .iter()
        .enumerate()
        .fold(0f32, |m, (j, &v)| m.max(mode.t(v, j).abs()));
    let (scale, inv) = row_scale_q(amax, mode.qmax());
    for (j, o) in out[..x.len()].iter_mut().enumerate() {
        *o = mode.byte(mode.t(x[j], j), inv);
    }
    for o in out[x.len()..].iter_mut() {
        *o = mode.pad();
    }
    scale
}

/// `(amax / q, q / amax)`, both 0 for a zero row.
#[inline(always)]
pub(crate) fn row_scale_q(amax: f32, q: f32) -> (f32, f32) {
    if amax > 0.0 {
        (amax / q, q / amax)
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
    mode: InputMode,
    out: &mut [u8],
    scales: &mut [f32],
) {
    let kp = padded_k(k);
    for i in 0..m {
        scales[i] = quantize_row(&a[i * k..(i + 1) * k], mode, &mut out[i * kp..(i + 1) * kp]);
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
    quantize_rows_unchecked(a, m, k, InputMode::default(), out, scales);
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
    let mode = InputMode {
        mul: Some(mul),
        offset: None,
    };
    quantize_rows_unchecked(a, m, k, mode, out, scales);
    Ok(())
}

/// The reference of [`super::QuantizedMatrix::quantize_input`] for a matrix with the
/// given input multipliers and unsigned-input offset (see
/// [`super::QuantizedMatrix::with_unsigned_input`]).
pub fn quantize_input_reference(
    a: &[f32],
    m: usize,
    k: usize,
    mul: Option<&[f32]>,
    offset: Option<f32>,
    out: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    validate_quantize("quantize_input_reference", a, m, k, out, scales)?;
    if let Some(mul) = mul {
        super::validate_mul("quantize_input_reference", mul, k)?;
    }
    if let Some(o) = offset {
        super::validate_offset("quantize_input_reference", o)?;
    }
    quantize_rows_unchecked(a, m, k, InputMode { mul, offset }, out, scales);
    Ok(())
}

pub(crate) enum Out<'a, 'e> {
    F32(&'a mut [f32], &'a [f32], Epilogue<'e>),
    I32(&'a mut [i32]),
}

/// The dequantization and f32 epilogue of one element, in the order the SIMD kernels
/// use.
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
    // y = (s_a · s_w) · x: two roundings, as the kernels; then the shared epilogue.
    let y = (sa * sw) * x as f32;
    e.apply(y, i, j, n)
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
