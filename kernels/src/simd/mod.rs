//! One small vector trait, implemented per ISA.
//!
//! Every fast kernel (GEMM microkernel, exp/erf, LayerNorm, softmax, GELU) is written
//! once against [`Simd`] with `#[inline(always)]`, and instantiated inside a
//! `#[target_feature(enable = ...)]` wrapper per ISA, so LLVM compiles the inlined body
//! with that ISA's instructions.
//!
//! # Safety contract
//! All methods are `unsafe`: they may only run on a CPU with the implementing ISA
//! (the caller holds the matching [`crate::Isa`] token), and pointer arguments must be
//! valid for the stated number of lanes. They are meant to be inlined into a function
//! compiled with the ISA's target features.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// Hints the CPU to bring the cache line holding `p` into L2 (`prefetcht1`; no fault,
/// no effect on results, never dereferenced).
#[inline(always)]
pub(crate) fn prefetch_l2(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT1 (SSE, baseline on x86-64) never faults and reads nothing
    // architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast())
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM never faults and reads nothing architecturally.
    unsafe {
        std::arch::asm!("prfm pldl2keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// Hints the CPU to bring the cache line holding `p` into L1 (no fault, no effect on
/// results; `p` may point anywhere, it is never dereferenced).
#[inline(always)]
pub(crate) fn prefetch_l1(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, baseline on x86-64) never faults and reads nothing
    // architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast())
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM never faults and reads nothing architecturally.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = p;
}

/// A vector of `LANES` f32 and the operations the kernels need.
pub(crate) trait Simd: Copy {
    type V: Copy;
    const LANES: usize;

    unsafe fn splat(x: f32) -> Self::V;
    /// Loads `LANES` f32 from `p` (no alignment requirement).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` f32 to `p` (no alignment requirement).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Loads lanes `[0, n)` from `p`, other lanes 0; `n < LANES`; only `n` floats
    /// are touched (masked: no fault past them).
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// Stores lanes `[0, n)` to `p`; `n < LANES`; only `n` floats are written.
    unsafe fn store_partial(p: *mut f32, v: Self::V, n: usize);
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Exact quotient (unused since erf moved to [`Simd::recip`]; kept for kernels
    /// that need a correctly rounded division).
    #[allow(dead_code)]
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// `1 / a` for finite, normal, nonzero `a`, without a divide: the hardware
    /// reciprocal estimate refined by Newton-Raphson steps `r·(2 − a·r)` (AVX-512
    /// `vrcp14ps`, 2^-14, one step; AVX2 `vrcpps`, 1.5·2^-12, two steps). A divide (`vdivps zmm`) issues once per ~16 cycles; this
    /// is 3 instructions on pipelined ports. Scalar: the exact division.
    unsafe fn recip(a: Self::V) -> Self::V;
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c` with a single rounding.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn reduce_add(v: Self::V) -> f32;
    unsafe fn reduce_max(v: Self::V) -> f32;
    /// Round to nearest integer, ties to even.
    unsafe fn round(v: Self::V) -> Self::V;
    /// `2^n` for integral `n` in `[-126, 127]` (built in the exponent field).
    unsafe fn pow2i(n: Self::V) -> Self::V;
    /// Lane-wise `if a > b { t } else { f }` (ordered: NaN compares false).
    unsafe fn select_gt(a: Self::V, b: Self::V, t: Self::V, f: Self::V) -> Self::V;

    /// `true` when [`Simd::scalef`] handles any integral `n` (underflow to 0), so
    /// callers need not clamp its exponent to `[-126, 127]`.
    const SCALEF: bool = false;

    /// `p · 2^n` for integral `n`; the default builds `2^n` with [`Simd::pow2i`], so
    /// `n` must be in `[-126, 127]` unless [`Simd::SCALEF`].
    #[inline(always)]
    unsafe fn scalef(p: Self::V, n: Self::V) -> Self::V {
        Self::mul(p, Self::pow2i(n))
    }

    /// `dst[c·ldd + i] = s · src[i·lds + c]` for `i, c` in `0..LANES`: a scaled
    /// `LANES x LANES` transpose (AVX2 / AVX-512: loads, an unpack/shuffle network,
    /// stores; same rounding as the scalar loop, one multiply per element).
    #[inline(always)]
    unsafe fn transpose_scaled(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, s: f32) {
        for i in 0..Self::LANES {
            for c in 0..Self::LANES {
                *dst.add(c * ldd + i) = *src.add(i * lds + c) * s;
            }
        }
    }

    #[inline(always)]
    unsafe fn zero() -> Self::V {
        Self::splat(0.0)
    }

    /// Loads `n` lanes (`n <= LANES`), full or masked.
    #[inline(always)]
    unsafe fn load_n(p: *const f32, n: usize) -> Self::V {
        if n >= Self::LANES {
            Self::load(p)
        } else {
            Self::load_partial(p, n)
        }
    }

    /// Stores `n` lanes (`n <= LANES`), full or masked.
    #[inline(always)]
    unsafe fn store_n(p: *mut f32, v: Self::V, n: usize) {
        if n >= Self::LANES {
            Self::store(p, v)
        } else {
            Self::store_partial(p, v, n)
        }
    }
}

/// The portable "vector" of one f32. The scalar path runs the same generic kernels
/// (so it is also a check of the generic code) and LLVM may still auto-vectorize
/// it with the baseline SSE2.
#[derive(Clone, Copy)]
pub(crate) struct Scalar;

impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;

    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
    }
    #[inline(always)]
    unsafe fn load_partial(_p: *const f32, _n: usize) -> f32 {
        // n < LANES = 1: no lane is loaded.
        0.0
    }
    #[inline(always)]
    unsafe fn store_partial(_p: *mut f32, _v: f32, _n: usize) {}
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn recip(a: f32) -> f32 {
        1.0 / a
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        a.min(b)
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        // Separate multiply and add: `f32::mul_add` is a libm call without hardware
        // FMA in the baseline target, far too slow for the fallback path.
        a * b + c
    }
    #[inline(always)]
    unsafe fn reduce_add(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn reduce_max(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn round(v: f32) -> f32 {
        v.round_ties_even()
    }
    #[inline(always)]
    unsafe fn pow2i(n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    unsafe fn select_gt(a: f32, b: f32, t: f32, f: f32) -> f32 {
        if a > b {
            t
        } else {
            f
        }
    }
}
