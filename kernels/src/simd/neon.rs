//! [`Simd`] for aarch64 NEON (Advanced SIMD): 4 x f32 in a `float32x4_t`, 32 vector
//! registers. NEON is baseline on `aarch64-unknown-linux-gnu`; the kernels still reach
//! this code only through an [`Isa`](crate::Isa) of kind `Neon` (detected `neon`).

use super::Simd;
use std::arch::aarch64::*;

#[derive(Clone, Copy)]
pub(crate) struct Neon;

impl Simd for Neon {
    type V = float32x4_t;
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn splat(x: f32) -> float32x4_t {
        vdupq_n_f32(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> float32x4_t {
        vld1q_f32(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t) {
        vst1q_f32(p, v)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> float32x4_t {
        // No masked loads in NEON: copy the n < 4 valid floats into a zeroed buffer,
        // so nothing past them is read.
        let mut t = [0.0f32; 4];
        std::ptr::copy_nonoverlapping(p, t.as_mut_ptr(), n);
        vld1q_f32(t.as_ptr())
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: float32x4_t, n: usize) {
        let mut t = [0.0f32; 4];
        vst1q_f32(t.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(t.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn add(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vaddq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vdivq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn recip(a: float32x4_t) -> float32x4_t {
        // frecpe is an 8-bit estimate; each frecps step `2 − a·r` (fused) doubles the
        // bits: three steps reach full f32 precision (~2^-23), like AVX-512's one step
        // from 14 bits.
        let mut r = vrecpeq_f32(a);
        r = vmulq_f32(r, vrecpsq_f32(a, r));
        r = vmulq_f32(r, vrecpsq_f32(a, r));
        vmulq_f32(r, vrecpsq_f32(a, r))
    }
    #[inline(always)]
    unsafe fn max(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmaxq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vminq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: float32x4_t) -> f32 {
        vaddvq_f32(v)
    }
    #[inline(always)]
    unsafe fn reduce_max(v: float32x4_t) -> f32 {
        vmaxvq_f32(v)
    }
    #[inline(always)]
    unsafe fn round(v: float32x4_t) -> float32x4_t {
        // frintn: to nearest, ties to even.
        vrndnq_f32(v)
    }
    #[inline(always)]
    unsafe fn pow2i(n: float32x4_t) -> float32x4_t {
        let i = vaddq_s32(vcvtnq_s32_f32(n), vdupq_n_s32(127));
        vreinterpretq_f32_s32(vshlq_n_s32::<23>(i))
    }
    #[inline(always)]
    unsafe fn select_gt(
        a: float32x4_t,
        b: float32x4_t,
        t: float32x4_t,
        f: float32x4_t,
    ) -> float32x4_t {
        vbslq_f32(vcgtq_f32(a, b), t, f)
    }
}
