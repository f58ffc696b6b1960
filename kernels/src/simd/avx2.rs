//! [`Simd`] for AVX2 + FMA: 8 x f32 in a `__m256`.

use super::Simd;
use std::arch::x86_64::*;

#[derive(Clone, Copy)]
pub(crate) struct Avx2;

/// `MASK[8 - n..16 - n]` has `n` leading all-ones lanes: the mask for `n` valid lanes.
static MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

#[inline(always)]
unsafe fn mask_n(n: usize) -> __m256i {
    _mm256_loadu_si256(MASK.as_ptr().add(8 - n).cast())
}

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v)
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        // vmaskmovps: masked-off lanes read as 0 and never fault.
        _mm256_maskload_ps(p, mask_n(n))
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, v: __m256, n: usize) {
        _mm256_maskstore_ps(p, mask_n(n), v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        _mm256_div_ps(a, b)
    }
    #[inline(always)]
    unsafe fn recip(a: __m256) -> __m256 {
        // vrcpps is only 12 bits: two Newton-Raphson steps r·(2 − a·r).
        let two = _mm256_set1_ps(2.0);
        let r = _mm256_rcp_ps(a);
        let r = _mm256_mul_ps(r, _mm256_fnmadd_ps(a, r, two));
        _mm256_mul_ps(r, _mm256_fnmadd_ps(a, r, two))
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        _mm256_max_ps(a, b)
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        _mm256_min_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn reduce_add(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
    #[inline(always)]
    unsafe fn reduce_max(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
    #[inline(always)]
    unsafe fn round(v: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v)
    }
    #[inline(always)]
    unsafe fn pow2i(n: __m256) -> __m256 {
        let i = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(i))
    }
    #[inline(always)]
    unsafe fn transpose_scaled(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, s: f32) {
        let sv = _mm256_set1_ps(s);
        let mut r = [_mm256_setzero_ps(); 8];
        for (i, ri) in r.iter_mut().enumerate() {
            *ri = _mm256_mul_ps(_mm256_loadu_ps(src.add(i * lds)), sv);
        }
        let mut t = [_mm256_setzero_ps(); 8];
        for p in 0..4 {
            t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        // u[4g + m]: 128-bit lane k holds column 4k + m of rows 4g..4g+4.
        let mut u = [_mm256_setzero_ps(); 8];
        for g in 0..2 {
            let (a, b) = (4 * g, 4 * g + 2);
            u[4 * g] = _mm256_shuffle_ps::<0x44>(t[a], t[b]);
            u[4 * g + 1] = _mm256_shuffle_ps::<0xEE>(t[a], t[b]);
            u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(t[a + 1], t[b + 1]);
            u[4 * g + 3] = _mm256_shuffle_ps::<0xEE>(t[a + 1], t[b + 1]);
        }
        for m in 0..4 {
            _mm256_storeu_ps(
                dst.add(m * ldd),
                _mm256_permute2f128_ps::<0x20>(u[m], u[4 + m]),
            );
            _mm256_storeu_ps(
                dst.add((4 + m) * ldd),
                _mm256_permute2f128_ps::<0x31>(u[m], u[4 + m]),
            );
        }
    }
    #[inline(always)]
    unsafe fn select_gt(a: __m256, b: __m256, t: __m256, f: __m256) -> __m256 {
        _mm256_blendv_ps(f, t, _mm256_cmp_ps::<_CMP_GT_OQ>(a, b))
    }
}
