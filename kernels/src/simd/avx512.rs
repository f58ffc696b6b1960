//! [`Simd`] for AVX-512F (+VL/BW/DQ available): 16 x f32 in a `__m512`.

use super::Simd;
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct Avx512;

/// Mask of the first `n` lanes of 16 (all of them for `n >= 16`): the masked tails of the
/// bf16 GEMM and attention kernels.
#[inline(always)]
pub(crate) fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        mask_n(n)
    }
}

#[inline(always)]
fn mask_n(n: usize) -> __mmask16 {
    // n < 16 here.
    ((1u32 << n) - 1) as __mmask16
}

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        _mm512_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        // Masked-off lanes are zeroed and never fault.
        _mm512_maskz_loadu_ps(mask_n(n), p)
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m512, n: usize) {
        _mm512_mask_storeu_ps(p, mask_n(n), v)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        _mm512_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn recip(a: __m512) -> __m512 {
        let r = _mm512_rcp14_ps(a);
        // r·(2 − a·r): one Newton-Raphson step.
        _mm512_mul_ps(r, _mm512_fnmadd_ps(a, r, _mm512_set1_ps(2.0)))
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        _mm512_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        _mm512_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m512) -> f32 {
        _mm512_reduce_add_ps(v)
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m512) -> f32 {
        _mm512_reduce_max_ps(v)
    }
    #[inline(always)]
    unsafe fn round(v: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m512) -> __m512 {
        let i = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(i))
    }
    #[inline(always)]
    unsafe fn transpose_scaled(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, s: f32) {
        let sv = _mm512_set1_ps(s);
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, ri) in r.iter_mut().enumerate() {
            *ri = _mm512_mul_ps(_mm512_loadu_ps(src.add(i * lds)), sv);
        }
        // t: pairs of rows interleaved per 128-bit lane k.
        let mut t = [_mm512_setzero_ps(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        // u[4g + m]: lane k holds column 4k + m of rows 4g..4g+4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (a, b) = (4 * g, 4 * g + 2);
            u[4 * g] = _mm512_shuffle_ps::<0x44>(t[a], t[b]);
            u[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[a], t[b]);
            u[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[a + 1], t[b + 1]);
            u[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[a + 1], t[b + 1]);
        }
        // v[m] / v[4+m]: columns {m, 8+m} / {4+m, 12+m} of rows 0..8 (lanes 0,2 / 1,3);
        // v[8+m] / v[12+m]: the same for rows 8..16.
        let mut v = [_mm512_setzero_ps(); 16];
        for m in 0..4 {
            v[m] = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
            v[4 + m] = _mm512_shuffle_f32x4::<0xDD>(u[m], u[4 + m]);
            v[8 + m] = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
            v[12 + m] = _mm512_shuffle_f32x4::<0xDD>(u[8 + m], u[12 + m]);
        }
        for m in 0..4 {
            let cols = [
                (m, _mm512_shuffle_f32x4::<0x88>(v[m], v[8 + m])),
                (8 + m, _mm512_shuffle_f32x4::<0xDD>(v[m], v[8 + m])),
                (4 + m, _mm512_shuffle_f32x4::<0x88>(v[4 + m], v[12 + m])),
                (12 + m, _mm512_shuffle_f32x4::<0xDD>(v[4 + m], v[12 + m])),
            ];
            for (c, x) in cols {
                _mm512_storeu_ps(dst.add(c * ldd), x);
            }
        }
    }
    const SCALEF: bool = true;
    #[inline(always)]
    unsafe fn scalef(p: __m512, n: __m512) -> __m512 {
        // vscalefps: p · 2^floor(n), exact, underflows to 0 for any n.
        _mm512_scalef_ps(p, n)
    }
    #[inline(always)]
    unsafe fn select_gt(a: __m512, b: __m512, t: __m512, f: __m512) -> __m512 {
        _mm512_mask_blend_ps(_mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b), f, t)
    }
}
