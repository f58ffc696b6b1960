//! Vectorized exp and erf, written once against [`Simd`].
//!
//! The error bounds quoted here are *measured* by the unit tests at the bottom of
//! this file (`mod tests`), which sweep ~1M f32 inputs per function on every ISA the
//! machine has against f64 `libm`, and assert them, so a change that worsens them
//! fails. For scale: rten-vecmath documents 6.6e-7 max abs error for its
//! Abramowitz-Stegun erf; this erf measures 4.4e-7.

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
/// (8.3e-8, i.e. below 1 ulp; 1.5e-7 asserted).
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

/// `2^x` for `x <= 0` (softmax in base 2: attention folds `log2 e` into its scale):
///
/// 1. on ISAs without an exact `scalef` (AVX2, scalar), clamp `x >= -126` (results
///    below `2^-126` become that smallest normal, never NaN);
/// 2. `n = round(x)`, `f = x - n` (exact), `|f| <= 1/2`;
/// 3. `2^f ≈ P(f)`, `P` degree 5: interpolation of `2^f` at the 6 Chebyshev nodes of
///    `[-1/2, 1/2]` (within 2e-7 relative in f32 arithmetic, ~2 ulp);
/// 4. `P · 2^n` (`vscalefps` on AVX-512: any `n`, underflow to 0).
///
/// 9 vector ops on AVX-512 (Cephes `exp` above: 17). Measured max relative error vs
/// f64 over `[-126, 0]`: see `EXP2_MAX_REL_ERR` in the tests.
#[inline(always)]
pub(crate) unsafe fn exp2_nonpos<S: Simd>(x: S::V) -> S::V {
    const C0: f32 = 1.000_000_1;
    const C1: f32 = std::f32::consts::LN_2; // the fit lands on ln 2 in f32
    const C2: f32 = 0.240_221_07;
    const C3: f32 = 5.550_357e-2;
    const C4: f32 = 9.676_032e-3;
    const C5: f32 = 1.339_086_3e-3;
    let x = if S::SCALEF {
        x
    } else {
        S::max(x, S::splat(-126.0))
    };
    let n = S::round(x);
    let f = S::sub(x, n);
    let mut p = S::splat(C5);
    p = S::fma(p, f, S::splat(C4));
    p = S::fma(p, f, S::splat(C3));
    p = S::fma(p, f, S::splat(C2));
    p = S::fma(p, f, S::splat(C1));
    p = S::fma(p, f, S::splat(C0));
    S::scalef(p, n)
}

/// `erf(x)` in f32: the rational approximation used by Eigen (`generic_fast_erf_float`),
/// XLA and TVM: `erf(x) ≈ x·P(x²)/Q(x²)` on `x` clamped to `[-4, 4]` (beyond which
/// `erf` rounds to ±1 in f32), `P` degree 6 and `Q` degree 4 in `x²`.
///
/// Measured max abs error vs f64 `erf` over all inputs: see `ERF_MAX_ABS_ERR`
/// (AVX-512 4.42e-7, AVX2 3.87e-7, scalar 4.47e-7, worst near |x| = 3.9; 1.1e-7 for |x| < 0.5;
/// asserted ≤ 5e-7). The rational itself is within 6.5e-8 in f64: the rest is f32
/// rounding of P, Q and the reciprocal (`Simd::recip`: estimate + Newton, no divide).
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
    // The f32 rational can overshoot 1 by an ulp near the clamp: keep |erf| <= 1.
    // x·p/q with q's reciprocal (estimate + one Newton step): no divide, which
    // issues once per ~16 cycles and dominated the GELU epilogue of the FFN GEMM.
    let e = S::mul(S::mul(x, p), S::recip(q));
    let e = S::min(S::max(e, S::splat(-1.0)), S::splat(1.0));
    // Beyond ERF_ONE, erf(x) rounds to exactly ±1 in f32; the rational does not
    // (it is ~1e-7 short), which would leave GELU(-1e30) = 0.5·x·(1 + erf) huge.
    let one = S::splat(1.0);
    let e = S::select_gt(x, S::splat(ERF_ONE), one, e);
    S::select_gt(S::splat(-ERF_ONE), x, S::splat(-1.0), e)
}

/// Smallest x with `1 - erf(x) < 2^-25` (half an ulp below 1): f32 erf is ±1 beyond.
const ERF_ONE: f32 = 3.919_206;

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

/// Test-only per-ISA entry points that map `erf` / `exp` over a slice, so the unit
/// tests can measure each ISA's instantiation (FMA vs separate mul/add rounding).
#[cfg(test)]
pub(crate) mod testing {
    use crate::isa::{Isa, IsaKind};
    use crate::simd::{Scalar, Simd};

    #[inline(always)]
    unsafe fn map<S: Simd, const F: u8>(x: &mut [f32]) {
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i < x.len() {
            let n = (x.len() - i).min(S::LANES);
            let v = S::load_n(p.add(i), n);
            let y = match F {
                ERF => super::erf::<S>(v),
                EXP => super::exp::<S>(v),
                _ => super::exp2_nonpos::<S>(v),
            };
            S::store_n(p.add(i), y, n);
            i += S::LANES;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn map_avx2<const F: u8>(x: &mut [f32]) {
        map::<crate::simd::avx2::Avx2, F>(x)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    unsafe fn map_avx512<const F: u8>(x: &mut [f32]) {
        map::<crate::simd::avx512::Avx512, F>(x)
    }

    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "neon")]
    unsafe fn map_neon<const F: u8>(x: &mut [f32]) {
        map::<crate::simd::neon::Neon, F>(x)
    }

    const ERF: u8 = 0;
    const EXP: u8 = 1;
    const EXP2: u8 = 2;

    fn apply<const F: u8>(isa: Isa, x: &mut [f32]) {
        // SAFETY: the token proves the ISA; any length is valid.
        unsafe {
            match isa.kind() {
                IsaKind::Scalar => map::<Scalar, F>(x),
                #[cfg(target_arch = "x86_64")]
                IsaKind::Avx2 => map_avx2::<F>(x),
                #[cfg(target_arch = "x86_64")]
                IsaKind::Avx512 => map_avx512::<F>(x),
                #[cfg(target_arch = "aarch64")]
                IsaKind::Neon => map_neon::<F>(x),
                #[allow(unreachable_patterns)]
                _ => map::<Scalar, F>(x),
            }
        }
    }

    pub(crate) fn erf_slice(isa: Isa, x: &mut [f32]) {
        apply::<ERF>(isa, x)
    }

    pub(crate) fn exp_slice(isa: Isa, x: &mut [f32]) {
        apply::<EXP>(isa, x)
    }

    pub(crate) fn exp2_nonpos_slice(isa: Isa, x: &mut [f32]) {
        apply::<EXP2>(isa, x)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{erf_slice, exp2_nonpos_slice, exp_slice};
    use crate::isa::Isa;

    /// Max |erf_f32(x) - erf(x)| over all inputs. Measured (1M-point sweep of
    /// [-6, 6] + tiny values): 4.42e-7 with FMA (AVX2/AVX-512, worst near |x| = 3.9),
    /// 4.49e-7 scalar (separate mul/add); 1.1e-7 for |x| < 0.5.
    const ERF_MAX_ABS_ERR: f64 = 5e-7;
    /// Max |exp_f32(x) - exp(x)| / exp(x) over [-87, 88]. Measured: 8.3e-8 (FMA),
    /// 8.0e-8 (scalar), i.e. below 1 ulp.
    const EXP_MAX_REL_ERR: f64 = 1.5e-7;
    /// Max |exp2_f32(x) - 2^x| / 2^x over [-126, 0]. Measured: 2.15e-7 (FMA), 2.37e-7
    /// (scalar), ~2 ulp.
    const EXP2_MAX_REL_ERR: f64 = 3e-7;

    /// Dense sweep: `count` evenly spaced points in [lo, hi] plus the f32 grid
    /// around 0 (every float of magnitude 2^-40 .. 2^-10 step through exponents).
    fn sweep(lo: f32, hi: f32, count: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..count)
            .map(|i| lo + (hi - lo) * (i as f32 / (count - 1) as f32))
            .collect();
        for e in -40..-10 {
            let base = 2f32.powi(e);
            for j in 0..64 {
                let x = base * (1.0 + j as f32 / 64.0);
                v.push(x);
                v.push(-x);
            }
        }
        v.extend_from_slice(&[0.0, -0.0, 3.9999, 4.0, 4.0001, 10.0, -10.0, 1e30, -1e30]);
        v
    }

    #[test]
    fn erf_error_bound_every_isa() {
        let xs = sweep(-6.0, 6.0, 1_000_003);
        for isa in Isa::available() {
            let mut y = xs.clone();
            erf_slice(isa, &mut y);
            let mut worst = (0.0f64, 0.0f32);
            for (&x, &e) in xs.iter().zip(&y) {
                let err = (e as f64 - libm::erf(x as f64)).abs();
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            for lo in [0.0f32, 1.0, 2.0, 3.0, 3.5, 3.8, 3.9, 4.0] {
                let w = xs
                    .iter()
                    .zip(&y)
                    .filter(|(x, _)| x.abs() >= lo && x.abs() < lo + 0.5)
                    .map(|(&x, &e)| (e as f64 - libm::erf(x as f64)).abs())
                    .fold(0.0, f64::max);
                println!("  {isa} |x| in [{lo}, {}): {w:.3e}", lo + 0.5);
            }
            println!("erf {isa}: max abs err {:.3e} at x = {}", worst.0, worst.1);
            assert!(
                worst.0 <= ERF_MAX_ABS_ERR,
                "erf {isa}: max abs err {:.3e} at x = {} exceeds {ERF_MAX_ABS_ERR:e}",
                worst.0,
                worst.1
            );
            // erf is odd and bounded.
            assert!(y.iter().all(|v| v.abs() <= 1.0));
        }
    }

    #[test]
    fn exp_error_bound_every_isa() {
        let xs = sweep(-87.0, 88.0, 1_000_003);
        for isa in Isa::available() {
            let mut y = xs.clone();
            exp_slice(isa, &mut y);
            let mut worst = (0.0f64, 0.0f32);
            for (&x, &e) in xs.iter().zip(&y) {
                if x.abs() > 88.0 {
                    continue;
                }
                let r = (x as f64).exp();
                let err = (e as f64 - r).abs() / r;
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            println!("exp {isa}: max rel err {:.3e} at x = {}", worst.0, worst.1);
            assert!(
                worst.0 <= EXP_MAX_REL_ERR,
                "exp {isa}: max rel err {:.3e} at x = {} exceeds {EXP_MAX_REL_ERR:e}",
                worst.0,
                worst.1
            );
            // Clamping: very negative inputs give a tiny non-negative value, never NaN.
            let mut z = vec![-1e30f32, -100.0, -88.0, f32::NEG_INFINITY];
            exp_slice(isa, &mut z);
            assert!(z.iter().all(|v| (0.0..1.2e-38).contains(v)), "{z:?}");
        }
    }

    #[test]
    fn exp2_nonpos_error_bound_every_isa() {
        let mut xs = sweep(-126.0, 0.0, 1_000_003);
        xs.retain(|&x| (-126.0..=0.0).contains(&x));
        for isa in Isa::available() {
            let mut y = xs.clone();
            exp2_nonpos_slice(isa, &mut y);
            let mut worst = (0.0f64, 0.0f32);
            for (&x, &e) in xs.iter().zip(&y) {
                let r = (x as f64).exp2();
                let err = (e as f64 - r).abs() / r;
                if err > worst.0 {
                    worst = (err, x);
                }
            }
            println!("exp2 {isa}: max rel err {:.3e} at x = {}", worst.0, worst.1);
            assert!(
                worst.0 <= EXP2_MAX_REL_ERR,
                "exp2 {isa}: max rel err {:.3e} at x = {} exceeds {EXP2_MAX_REL_ERR:e}",
                worst.0,
                worst.1
            );
            // Far below the range: tiny and non-negative, never NaN.
            let mut z = vec![-1e30f32, -200.0, -127.0];
            exp2_nonpos_slice(isa, &mut z);
            assert!(z.iter().all(|v| (0.0..=1.2e-38).contains(v)), "{z:?}");
        }
    }
}
