//! The bit-exact scalar model of `vdpbf16ps` (the reference, also the
//! `BIsaKind::Scalar` path): bf16 inputs rounded as `vcvtne2ps2bf16`, products
//! accumulated in f32 in the hardware's order and rounding (odd element of each
//! pair first, RNE, DAZ/FTZ), the f32 epilogue in the kernels' order, GELU in f64.
//! See the module docs in `bgemm/mod.rs`.

use super::{bf16_to_f32, f32_to_bf16, padded_k, Bf16Matrix};
use crate::epilogue::{validate as validate_epilogue, Epilogue};
use crate::{shape_err, KernelError};

/// A bf16 input as `vdpbf16ps` reads it: subnormals are (signed) zero (DAZ).
#[inline(always)]
fn daz(h: u16) -> f64 {
    if h & 0x7f80 == 0 {
        if h & 0x8000 != 0 {
            -0.0
        } else {
            0.0
        }
    } else {
        bf16_to_f32(h) as f64
    }
}

/// An f32 as `vdpbf16ps` treats it: subnormals become signed zero (DAZ on the
/// accumulator input, FTZ on every rounded sum).
#[inline(always)]
pub(crate) fn flush(x: f32) -> f32 {
    if x.is_subnormal() {
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// One half-step of `vdpbf16ps`: `flush(rne_f32(acc + x·y))`. The product of two
/// bf16 (8 significant bits each) is exact in f64 (and has f64's exponent range, as
/// in the hardware: no intermediate overflow); the f64 sum rounded to f32 is the
/// correctly rounded f32 sum (double rounding is innocuous for a sum of an f32 and
/// a 16-bit-significand value: 53 >= 2·24 + 2).
#[inline(always)]
pub(crate) fn dot_step(acc: f32, x: u16, y: u16) -> f32 {
    let p = daz(x) * daz(y);
    flush((flush(acc) as f64 + p) as f32)
}

/// `Σ` over the pairs of `a` and `w` (both `kp` = even bf16 elements) exactly as a
/// chain of `vdpbf16ps` from +0.0: per pair, the odd element first.
#[inline]
pub(crate) fn dot_pairs(a: &[u16], w: &[u16]) -> f32 {
    debug_assert!(a.len() == w.len() && a.len().is_multiple_of(2));
    let mut acc = 0.0f32;
    for (x, y) in a.chunks_exact(2).zip(w.chunks_exact(2)) {
        acc = dot_step(acc, x[1], y[1]);
        acc = dot_step(acc, x[0], y[0]);
    }
    acc
}

/// `a: [m, k]` -> `out: [m, padded_k(k)]` (pad 0), validated by the caller.
pub(crate) fn convert_rows_unchecked(a: &[f32], m: usize, k: usize, out: &mut [u16]) {
    let kp = padded_k(k);
    for i in 0..m {
        let o = &mut out[i * kp..(i + 1) * kp];
        for (d, &x) in o.iter_mut().zip(&a[i * k..(i + 1) * k]) {
            *d = f32_to_bf16(x);
        }
        o[k..].fill(0);
    }
}

/// The Scalar path of `gemm_bf16` / `gemm_bf16_cols` (and `k = 0` on any path:
/// `C = epilogue(0)`).
///
/// # Safety
/// As `bgemm::call`: `c` valid for `m` rows of `cols.len()` floats at stride `ldc`,
/// the other operands validated. `b` is Scalar-packed (NR = 1) unless `b.k == 0`.
pub(crate) unsafe fn gemm_unchecked(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    cols: std::ops::Range<usize>,
    c: *mut f32,
    ldc: usize,
    epilogue: Epilogue,
) {
    let (n, k, kp) = (b.n, b.k, b.kp);
    debug_assert!(k == 0 || b.nr == 1);
    let w = b.elems();
    let mut arow = vec![0u16; kp];
    for i in 0..m {
        convert_rows_unchecked(&a[i * k..(i + 1) * k], 1, k, &mut arow);
        for (jj, j) in cols.clone().enumerate() {
            let acc = if k == 0 {
                0.0
            } else {
                dot_pairs(&arow, &w[j * kp..(j + 1) * kp])
            };
            *c.add(i * ldc + jj) = epilogue.apply(acc, i, j, n);
        }
    }
}

/// The reference bf16 GEMM: `C[m, n] = epilogue(Σ_q bf16(A[i, q])·bf16(W[j, q]))`,
/// `w: [n, k]` f32 rounded with [`f32_to_bf16`] like the kernels' conversion,
/// accumulated in **f32** exactly as `vdpbf16ps` does (order and rounding: the
/// module docs), epilogue in f32 in the kernels' order, GELU in f64. The AVX-512
/// kernel equals it bitwise except for GELU.
pub fn gemm_bf16_reference(
    a: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    if w.len() != crate::checked_len("gemm_bf16_reference w", &[n, k])? {
        return shape_err!(
            "gemm_bf16_reference: w has {} floats, expected n*k = {n}*{k}",
            w.len()
        );
    }
    let wb: Vec<u16> = w.iter().map(|&x| f32_to_bf16(x)).collect();
    gemm_bf16_reference_bits(a, m, &wb, n, k, c, epilogue)
}

/// [`gemm_bf16_reference`] with the weights given as bf16 bits `w: [n, k]` (as
/// [`Bf16Matrix::from_bf16_bits`] takes them).
pub fn gemm_bf16_reference_bits(
    a: &[f32],
    m: usize,
    w: &[u16],
    n: usize,
    k: usize,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    crate::gemm::validate_dense("gemm_bf16_reference", a.len(), w.len(), c.len(), m, n, k)?;
    validate_epilogue(&epilogue, m, n)?;
    let kp = padded_k(k);
    // Rows padded to even with a zero element, as the packed layout.
    let mut wp = vec![0u16; n * kp];
    for j in 0..n {
        wp[j * kp..j * kp + k].copy_from_slice(&w[j * k..(j + 1) * k]);
    }
    let mut arow = vec![0u16; kp];
    for i in 0..m {
        convert_rows_unchecked(&a[i * k..(i + 1) * k], 1, k, &mut arow);
        for j in 0..n {
            let acc = dot_pairs(&arow, &wp[j * kp..(j + 1) * kp]);
            c[i * n + j] = epilogue.apply(acc, i, j, n);
        }
    }
    Ok(())
}

// ---- The scalar model of `bfmmla` (the NeonBf16 path's arithmetic) ----
//
// Arm ARM, BFMMLA / BFDOT without FEAT_EBF16 (or with FPCR.EBF = 0, Linux's default): per
// output element and k-group of 4, two `BFDotAdd` steps, pair (k0, k1) then (k2, k3):
// `sum = RO(sum + RO(RO(a0·w0) + RO(a1·w1)))`, where RO is **round to odd** (truncate,
// then set bit 0 if inexact; an overflow becomes ±inf), bf16 inputs and every f32 input
// and result are flushed to zero when denormal (FPCR ignored), and a NaN result is the
// default NaN. The products of two bf16 are exact in f32 unless they leave the normal
// range (then flushed or ±inf).

/// Round to odd of the exact value `s + err` (`s` the f64 sum, `err` its exact error:
/// `|err| <= ulp(s) / 2`), then the BF16 arithmetic's flush of a result below 2^-126 and
/// its overflow to ±inf at 2^128.
fn round_odd(s: f64, err: f64) -> f32 {
    if s.is_nan() {
        return f32::NAN;
    }
    if s == 0.0 || s.is_infinite() {
        // An exact zero (err is 0 then) keeps the f64 sum's sign, which is round to
        // odd's (+0 unless both operands are -0).
        return s as f32;
    }
    let neg = s < 0.0;
    // The magnitude `a + e` of the exact value.
    let (a, e) = if neg { (-s, -err) } else { (s, err) };
    if a >= 2f64.powi(128) {
        return if neg {
            f32::NEG_INFINITY
        } else {
            f32::INFINITY
        };
    }
    // t = a truncated to f32 (toward zero).
    let mut t = a as f32;
    if t as f64 > a {
        t = f32::from_bits(t.to_bits() - 1);
    }
    let mut bits = t.to_bits();
    if t as f64 == a {
        // a is an f32: the exact value is below it (e < 0), at it, or above it.
        if e < 0.0 {
            bits = (bits - 1) | 1;
        } else if e > 0.0 {
            bits |= 1;
        }
    } else {
        // Strictly between two f32 (and `e` cannot cross either: both are f64 values at
        // least one f64 ulp of `a` away, `|e|` at most half of one): truncated, inexact.
        bits |= 1;
    }
    if bits < 0x0080_0000 {
        // Below the f32 normal range (tininess before rounding): flushed.
        bits = 0;
    }
    let r = f32::from_bits(bits);
    if neg {
        -r
    } else {
        r
    }
}

/// `BFAdd`: `RO(x + y)` with denormal inputs flushed (the exact sum through TwoSum in f64).
fn bf_add(x: f32, y: f32) -> f32 {
    let (x, y) = (flush(x) as f64, flush(y) as f64);
    let s = x + y;
    let bb = s - x;
    let err = (x - (s - bb)) + (y - bb);
    round_odd(s, if err.is_finite() { err } else { 0.0 })
}

/// `BFMul`: the product of two bf16 (denormal inputs as signed zero), exact in f64, then
/// rounded to odd (flushed below 2^-126, ±inf from 2^128).
fn bf_mul(x: u16, y: u16) -> f32 {
    round_odd(daz(x) * daz(y), 0.0)
}

/// `Σ` over `a` and `w` (both `kp4` bf16 elements, a multiple of 4) exactly as a chain of
/// `bfmmla` from +0.0: per k-group of 4, the pair (0, 1) then the pair (2, 3), each pair's
/// two products summed (rounded to odd) and then added to the accumulator (rounded to odd).
pub(crate) fn dot_bfmmla(a: &[u16], w: &[u16]) -> f32 {
    debug_assert!(a.len() == w.len() && a.len().is_multiple_of(4));
    let mut acc = 0.0f32;
    for (x, y) in a.chunks_exact(2).zip(w.chunks_exact(2)) {
        let pair = bf_add(bf_mul(x[0], y[0]), bf_mul(x[1], y[1]));
        acc = bf_add(acc, pair);
    }
    acc
}
