//! bf16 attention on AVX512-BF16 (`vdpbf16ps`), for the bf16 precision on CPUs where the
//! instruction runs at twice the f32 FMA rate (Zen 4: `bench --peak`).
//!
//! Per head, with `dq = d/2` pairs of head columns (`d` even, at most [`MAX_D`]):
//! 1. `Q` rows scaled by `log2(e)/sqrt(d)` and rounded to bf16 (`vcvtne2ps2bf16`, round to
//!    nearest even), row-major as dwords of column pairs `[seq][dq]`; `K` rounded the same
//!    way and transposed to `[dq][tk]` dwords (`tk`: keys rounded up to 16, zero padding), so
//!    a zmm of `K` holds one column pair of 16 keys; `V` rounded and interleaved by key
//!    pairs, `[tk/2][dv]` dwords (`dv`: `d` rounded up to 16), a dword holding the same
//!    column of two consecutive keys.
//! 2. Per block of up to [`R`] queries: the scores `S = Q Kᵀ` row-major `[R][tk]` in tiles of
//!    `rows x 32 keys` (the last 16 keys alone; one `vdpbf16ps` per query, key vector and
//!    column pair; `Q` pairs broadcast), exact f32 softmax in base 2 per row (`P = 2^(S - max)` for the `seq` real
//!    keys, 0 for the padding, the f32 sum), `P` rounded to bf16 row-major (adjacent keys
//!    form the dwords `P V` broadcasts), then `O = P V` in tiles of `rows x dv` columns
//!    (`vdpbf16ps` over key pairs), scaled by `1 / sum` and stored into the head's columns.
//!
//! So `Q`, `K`, `V` and `P` carry bf16 rounding (relative 2^-9 each); scores, sums and the
//! output accumulate in f32. Every output element is computed by the same operations
//! whatever the head range, thread or query block: the results depend only on the inputs.

use std::arch::x86_64::*;

use super::fused::Head;
use crate::math;
use crate::simd::avx512::{mask16, Avx512};

/// Largest head size of the bf16 kernel (its P·V tile holds `R x MAX_D/16` accumulators).
pub(crate) const MAX_D: usize = 64;
/// Queries per block (rows of the QKᵀ and P·V tiles).
pub(crate) const R: usize = 8;

/// Scratch lengths in 32-bit words for one head of `seq` tokens of `d` columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub q: usize,
    pub k: usize,
    pub v: usize,
    pub s: usize,
    pub p: usize,
}

impl Sizes {
    pub(crate) fn new(seq: usize, d: usize) -> Sizes {
        let tk = seq.div_ceil(16) * 16;
        let dq = d / 2;
        let dv = d.div_ceil(16) * 16;
        Sizes {
            q: seq * dq.div_ceil(16) * 16,
            k: dq * tk,
            v: tk / 2 * dv,
            s: R * tk,
            // R rows of tk bf16 = tk / 2 words.
            p: R * tk / 2,
        }
    }
}

/// Scratch pointers (32-bit words), each valid for the length [`Sizes`] gives.
#[derive(Clone, Copy)]
pub(crate) struct Bufs {
    pub q: *mut u32,
    pub k: *mut u32,
    pub v: *mut u32,
    pub s: *mut f32,
    pub p: *mut u32,
}

/// The 32 bf16 of a 512-bit integer vector (same bits).
#[inline(always)]
unsafe fn bh(v: __m512i) -> __m512bh {
    std::mem::transmute::<__m512i, __m512bh>(v)
}

/// `n` (<= 32) floats at `src` times `scale`, rounded to bf16, as 16 dwords of pairs at
/// `dst` (bf16 pairs `(src[2i], src[2i+1])`; past `n`: zero).
#[inline(always)]
unsafe fn pairs32(src: *const f32, n: usize, scale: __m512, dst: *mut u32) {
    let lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask16(n), src), scale);
    let hi_n = n.saturating_sub(16);
    let hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask16(hi_n), src.add(16)), scale);
    // Elements 0..16 from the second operand, 16..32 from the first.
    let b = _mm512_cvtne2ps_pbh(hi, lo);
    _mm512_storeu_si512(dst.cast(), std::mem::transmute::<__m512bh, __m512i>(b));
}

/// `n` (<= 16) floats at `src` rounded to bf16, zero-extended into the low halves of 16
/// dwords (past `n`: zero).
#[inline(always)]
unsafe fn low_halves(src: *const f32, n: usize) -> __m512i {
    let v = _mm512_maskz_loadu_ps(mask16(n), src);
    let h = _mm512_cvtneps_pbh(v);
    _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(h))
}

/// One head: see the module docs.
///
/// # Safety
/// AVX-512 F/BW/VL/DQ and AVX512-BF16 are available; `h` valid (`seq >= 1` rows of
/// `qkv`, the head's `d` output columns of `seq` rows at `out`, not overlapping `qkv` or
/// the scratch), `d` even and `<= MAX_D`; `b` valid for `Sizes::new(seq, d)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")]
pub(crate) unsafe fn head(h: &Head, b: &Bufs) {
    let (seq, d) = (h.seq, h.d);
    let tk = seq.div_ceil(16) * 16;
    let dq = d / 2;
    let ldq = dq.div_ceil(16) * 16;
    let dv = d.div_ceil(16) * 16;
    let one = _mm512_set1_ps(1.0);
    let scale = _mm512_set1_ps(h.scale);

    // 1. Q pairs (scaled), K pairs transposed, V interleaved by key pairs.
    for i in 0..seq {
        let src = h.qkv.add(i * h.ld + h.q_off);
        let mut c = 0;
        while c < d {
            pairs32(src.add(c), d - c, scale, b.q.add(i * ldq + c / 2));
            c += 32;
        }
    }
    let mut row = [0u32; MAX_D / 2 + 16];
    for j in 0..tk {
        if j < seq {
            let src = h.qkv.add(j * h.ld + h.k_off);
            let mut c = 0;
            while c < d {
                pairs32(src.add(c), d - c, one, row.as_mut_ptr().add(c / 2));
                c += 32;
            }
            for (p, &w) in row[..dq].iter().enumerate() {
                *b.k.add(p * tk + j) = w;
            }
        } else {
            for p in 0..dq {
                *b.k.add(p * tk + j) = 0;
            }
        }
    }
    for jp in 0..tk / 2 {
        let (j0, j1) = (2 * jp, 2 * jp + 1);
        let mut c = 0;
        while c < dv {
            let n = d.saturating_sub(c).min(16);
            let lo = if j0 < seq {
                low_halves(h.qkv.add(j0 * h.ld + h.v_off + c), n)
            } else {
                _mm512_setzero_si512()
            };
            let hi = if j1 < seq {
                _mm512_slli_epi32::<16>(low_halves(h.qkv.add(j1 * h.ld + h.v_off + c), n))
            } else {
                _mm512_setzero_si512()
            };
            _mm512_storeu_si512(b.v.add(jp * dv + c).cast(), _mm512_or_si512(lo, hi));
            c += 16;
        }
    }

    // 2. Per block of up to R queries.
    let mut q0 = 0;
    while q0 < seq {
        let rows = R.min(seq - q0);
        let qrows = b.q.add(q0 * ldq);
        let mut jt = 0;
        while jt < tk {
            // 32 keys per tile, the last 16 on their own (a short text pads to 16, not 32).
            if tk - jt >= 32 {
                qk_rows::<2>(rows, qrows, ldq, b.k.add(jt), tk, dq, b.s.add(jt));
                jt += 32;
            } else {
                qk_rows::<1>(rows, qrows, ldq, b.k.add(jt), tk, dq, b.s.add(jt));
                jt += 16;
            }
        }
        let mut inv = [0f32; R];
        for (r, inv_r) in inv.iter_mut().enumerate().take(rows) {
            *inv_r = softmax_row(b.s.add(r * tk), seq, tk, b.p.add(r * tk / 2));
        }
        let mut c = 0;
        while c < dv {
            let out = h.out.add(q0 * h.ldo + c);
            pv_rows(rows, b.p, tk, b.v.add(c), dv, &inv, out, h.ldo, d - c);
            c += 32;
        }
        q0 += rows;
    }
}

/// `S[r][0..16·NK] = Σ_p Q[r][p] · K[p][0..16·NK]` (pairs, `vdpbf16ps`) for `ROWS` query
/// rows (`NK`: 1 or 2 vectors of keys).
#[inline(always)]
unsafe fn qk_tile<const ROWS: usize, const NK: usize>(
    q: *const u32,
    ldq: usize,
    k: *const u32,
    tk: usize,
    dq: usize,
    s: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); NK]; ROWS];
    for p in 0..dq {
        let mut kv = [bh(_mm512_setzero_si512()); NK];
        for (v, kv) in kv.iter_mut().enumerate() {
            *kv = bh(_mm512_loadu_si512(k.add(p * tk + 16 * v).cast()));
        }
        for (r, a) in acc.iter_mut().enumerate() {
            let qv = bh(_mm512_set1_epi32(*q.add(r * ldq + p) as i32));
            for (a, &kv) in a.iter_mut().zip(&kv) {
                *a = _mm512_dpbf16_ps(*a, qv, kv);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for (v, &a) in a.iter().enumerate() {
            _mm512_storeu_ps(s.add(r * tk + 16 * v), a);
        }
    }
}

/// [`qk_tile`] with `rows` (`1..=R`) as a constant.
#[inline(always)]
unsafe fn qk_rows<const NK: usize>(
    rows: usize,
    q: *const u32,
    ldq: usize,
    k: *const u32,
    tk: usize,
    dq: usize,
    s: *mut f32,
) {
    macro_rules! arms {
        ($($n:literal),*) => {
            match rows {
                $($n => qk_tile::<$n, NK>(q, ldq, k, tk, dq, s),)*
                _ => unreachable!("qk tile rows {rows}"),
            }
        };
    }
    arms!(1, 2, 3, 4, 5, 6, 7, 8)
}

/// One score row: `P = 2^(S - max)` over the `seq` real keys (0 past them, up to `tk`),
/// written as bf16 to `p` (`tk` bf16 = `tk/2` dwords); returns `1 / Σ P` (the f32 sum of
/// the unrounded values).
#[inline(always)]
unsafe fn softmax_row(s: *mut f32, seq: usize, tk: usize, p: *mut u32) -> f32 {
    let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut j = 0;
    while j < seq {
        let v = _mm512_maskz_loadu_ps(mask16(seq - j), s.add(j));
        let v = _mm512_mask_blend_ps(mask16(seq - j), _mm512_set1_ps(f32::NEG_INFINITY), v);
        mx = _mm512_max_ps(mx, v);
        j += 16;
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let mut sum = _mm512_setzero_ps();
    let mut j = 0;
    while j < tk {
        let n = seq.saturating_sub(j).min(16);
        let e = math::exp2_nonpos::<Avx512>(_mm512_sub_ps(_mm512_loadu_ps(s.add(j)), mx));
        let e = _mm512_maskz_mov_ps(mask16(n), e);
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(s.add(j), e);
        j += 16;
    }
    let mut j = 0;
    while j + 32 <= tk {
        let b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s.add(j + 16)), _mm512_loadu_ps(s.add(j)));
        _mm512_storeu_si512(
            p.add(j / 2).cast(),
            std::mem::transmute::<__m512bh, __m512i>(b),
        );
        j += 32;
    }
    if j < tk {
        // The last 16 keys.
        let b = _mm512_cvtneps_pbh(_mm512_loadu_ps(s.add(j)));
        _mm256_storeu_si256(
            p.add(j / 2).cast(),
            std::mem::transmute::<__m256bh, __m256i>(b),
        );
    }
    1.0 / _mm512_reduce_add_ps(sum)
}

/// `O[r][0..32] = (Σ_jp P[r][jp] · V[jp][0..32]) · inv[r]` for `ROWS` query rows, the
/// first `ncols` (of 32) columns stored at `out + r·ldo`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_tile<const ROWS: usize>(
    p: *const u32,
    tk: usize,
    v: *const u32,
    dv: usize,
    inv: &[f32; R],
    out: *mut f32,
    ldo: usize,
    ncols: usize,
) {
    let two = ncols > 16;
    let mut acc = [[_mm512_setzero_ps(); 2]; ROWS];
    let ldp = tk / 2;
    for jp in 0..tk / 2 {
        let v0 = bh(_mm512_loadu_si512(v.add(jp * dv).cast()));
        let v1: __m512bh = if two {
            bh(_mm512_loadu_si512(v.add(jp * dv + 16).cast()))
        } else {
            v0
        };
        for (r, a) in acc.iter_mut().enumerate() {
            let pv = bh(_mm512_set1_epi32(*p.add(r * ldp + jp) as i32));
            a[0] = _mm512_dpbf16_ps(a[0], pv, v0);
            if two {
                a[1] = _mm512_dpbf16_ps(a[1], pv, v1);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let s = _mm512_set1_ps(inv[r]);
        let o = out.add(r * ldo);
        _mm512_mask_storeu_ps(o, mask16(ncols), _mm512_mul_ps(a[0], s));
        if two {
            _mm512_mask_storeu_ps(o.add(16), mask16(ncols - 16), _mm512_mul_ps(a[1], s));
        }
    }
}

/// [`pv_tile`] with `rows` (`1..=R`) as a constant; `ncols`: the head's columns left from
/// this 32-column block (more than 32: the block is full).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_rows(
    rows: usize,
    p: *const u32,
    tk: usize,
    v: *const u32,
    dv: usize,
    inv: &[f32; R],
    out: *mut f32,
    ldo: usize,
    ncols: usize,
) {
    let ncols = ncols.min(32);
    macro_rules! arms {
        ($($n:literal),*) => {
            match rows {
                $($n => pv_tile::<$n>(p, tk, v, dv, inv, out, ldo, ncols),)*
                _ => unreachable!("pv tile rows {rows}"),
            }
        };
    }
    arms!(1, 2, 3, 4, 5, 6, 7, 8)
}
