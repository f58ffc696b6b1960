//! The fused attention kernel, written once against [`Simd`] and instantiated per ISA.
//!
//! Scores are kept **transposed**, keys as rows and a block of `QB = 2·LANES` queries
//! as the vector lanes (`Sᵀ: [keys][QB]`), so that every step is a clean register
//! tile with immediate-offset broadcasts and no horizontal reductions:
//!
//! 1. per head, once: `K_h` and `V_h` copied into contiguous rows (`[T][d]`,
//!    `[T][dp]`, `dp = d` rounded up to `2·LANES`, zero-padded);
//! 2. per query block: `Qᵀ` packed as `[d][QB]`, pre-scaled by `log2(e)/sqrt(d)`
//!    (softmax in base 2, so the exponential is a plain `2^x`);
//! 3. `Sᵀ = K · Qᵀ` in tiles of `KR` keys x 2 vectors of queries (`KR x 2`
//!    accumulators; K broadcast from memory, Qᵀ loaded), the per-query running max
//!    taken in the tile epilogue (lane-wise `max`, no reduction);
//! 4. `P = 2^(S - max)` lane-wise over the `T` key rows with the per-query sums;
//! 5. `O = P · V` in tiles of `PR` queries x 2 vectors of head columns (`P` is
//!    broadcast from `Pᵀ[j][q]`: the `PR` queries of a key are adjacent), scaled by
//!    `1 / sum` in the epilogue (`PR` multiplies per row instead of `T`).
//!
//! Every output element is computed by the same sequence of operations whatever the
//! head range, the thread or the query block it falls in (a padded query lane never
//! mixes with a real one), so results depend only on the ISA.

use crate::math;
use crate::simd::{prefetch_l1, Simd};

/// Rows of prefetch distance in the K/V copies.
const PF: usize = 8;

/// One head of one sequence, raw pointers validated by the caller.
#[derive(Clone, Copy)]
pub(crate) struct Head {
    /// Row 0, column 0 of `qkv` (`seq` rows of `ld` floats).
    pub qkv: *const f32,
    pub ld: usize,
    pub seq: usize,
    pub d: usize,
    /// Column of the head's Q, K, V within a row.
    pub q_off: usize,
    pub k_off: usize,
    pub v_off: usize,
    /// Row 0 of the head's output columns, row stride `ldo`.
    pub out: *mut f32,
    pub ldo: usize,
    /// `log2(e) / sqrt(d)`.
    pub scale: f32,
}

impl Head {
    /// Head `h` of `qkv` (`seq` rows of `3·heads·d`: Q, K, V blocks of `heads·d` columns),
    /// written to `out` (row stride `ldo`); the scale is `log2(e) / sqrt(d)`. The caller
    /// validates the pointers before the head is computed.
    pub(crate) fn of(
        qkv: &[f32],
        seq: usize,
        heads: usize,
        d: usize,
        h: usize,
        out: *mut f32,
        ldo: usize,
    ) -> Head {
        let h_all = heads * d;
        Head {
            qkv: qkv.as_ptr(),
            ld: 3 * h_all,
            seq,
            d,
            q_off: h * d,
            k_off: h_all + h * d,
            v_off: 2 * h_all + h * d,
            out,
            ldo,
            scale: std::f32::consts::LOG2_E / (d as f32).sqrt(),
        }
    }
}

/// Scratch pointers, each valid for the length given by [`Sizes`].
#[derive(Clone, Copy)]
pub(crate) struct Bufs {
    pub k: *mut f32,
    pub v: *mut f32,
    pub qt: *mut f32,
    pub st: *mut f32,
    pub inv: *mut f32,
}

/// Scratch lengths (floats) for one head of `seq` tokens of `d` columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub k: usize,
    pub v: usize,
    pub qt: usize,
    pub st: usize,
    pub inv: usize,
}

impl Sizes {
    pub(crate) fn new(lanes: usize, kr: usize, seq: usize, d: usize) -> Sizes {
        let qb = 2 * lanes;
        let tk = seq.div_ceil(kr) * kr;
        let dp = d.div_ceil(qb) * qb;
        Sizes {
            k: tk * d,
            v: seq * dp,
            qt: d * qb,
            st: tk * qb,
            inv: qb,
        }
    }
}

/// `Sᵀ[KR][QB] = K[KR][d] · Qᵀ[d][QB]`, stored at `st`; the running per-query max
/// `mx` takes the first `valid` key rows (the rest are zero padding).
#[inline(always)]
unsafe fn qk_tile<S: Simd, const KR: usize, const D: usize>(
    k: *const f32,
    d_rt: usize,
    qt: *const f32,
    st: *mut f32,
    valid: usize,
    mx: &mut [S::V; 2],
) {
    let d = if D > 0 { D } else { d_rt };
    let l = S::LANES;
    let qb = 2 * l;
    let mut acc = [[S::zero(); 2]; KR];
    let mut q = qt;
    let mut kc = k;
    for _ in 0..d {
        let q0 = S::load(q);
        let q1 = S::load(q.add(l));
        for r in 0..KR {
            let kv = S::splat(*kc.add(r * d));
            acc[r][0] = S::fma(kv, q0, acc[r][0]);
            acc[r][1] = S::fma(kv, q1, acc[r][1]);
        }
        q = q.add(qb);
        kc = kc.add(1);
    }
    for r in 0..KR {
        S::store(st.add(r * qb), acc[r][0]);
        S::store(st.add(r * qb + l), acc[r][1]);
        if r < valid {
            mx[0] = S::max(mx[0], acc[r][0]);
            mx[1] = S::max(mx[1], acc[r][1]);
        }
    }
}

/// [`qk_tile`] for a query block of at most `LANES` queries: one vector of queries
/// (the second half of `Qᵀ` is zero padding and is neither read nor multiplied). Each
/// lane runs the same FMA chain and max as in [`qk_tile`], so the scores are bitwise
/// those of the full-width tile.
#[inline(always)]
unsafe fn qk_tile_half<S: Simd, const KR: usize, const D: usize>(
    k: *const f32,
    d_rt: usize,
    qt: *const f32,
    st: *mut f32,
    valid: usize,
    mx: &mut S::V,
) {
    let d = if D > 0 { D } else { d_rt };
    let qb = 2 * S::LANES;
    let mut acc = [S::zero(); KR];
    let mut q = qt;
    let mut kc = k;
    for _ in 0..d {
        let q0 = S::load(q);
        for r in 0..KR {
            acc[r] = S::fma(S::splat(*kc.add(r * d)), q0, acc[r]);
        }
        q = q.add(qb);
        kc = kc.add(1);
    }
    for r in 0..KR {
        S::store(st.add(r * qb), acc[r]);
        if r < valid {
            *mx = S::max(*mx, acc[r]);
        }
    }
}

/// `O[R][2·LANES] = Pᵀ[0..seq][R]ᵀ · V[0..seq][2·LANES]`, row `r` scaled by
/// `inv[r]`, the first `ncols` columns stored at `out + r·ldo`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_tile<S: Simd, const R: usize>(
    pt: *const f32,
    v: *const f32,
    dp: usize,
    seq: usize,
    inv: *const f32,
    out: *mut f32,
    ldo: usize,
    ncols: usize,
) {
    let l = S::LANES;
    let qb = 2 * l;
    let mut acc = [[S::zero(); 2]; R];
    // Addresses from the row index, not pointers bumped after each row: the bump after
    // the last row left `pt + seq·qb` (up to PR - 1 floats past the score block) and
    // `v + seq·dp` (up to `dp - 2·LANES` floats past the V rows), out of bounds.
    for j in 0..seq {
        let vr = v.add(j * dp);
        let v0 = S::load(vr);
        let v1 = S::load(vr.add(l));
        let p = pt.add(j * qb);
        for r in 0..R {
            let pv = S::splat(*p.add(r));
            acc[r][0] = S::fma(pv, v0, acc[r][0]);
            acc[r][1] = S::fma(pv, v1, acc[r][1]);
        }
    }
    for r in 0..R {
        let s = S::splat(*inv.add(r));
        let o = out.add(r * ldo);
        S::store_n(o, S::mul(acc[r][0], s), ncols.min(l));
        if ncols > l {
            S::store_n(o.add(l), S::mul(acc[r][1], s), ncols - l);
        }
    }
}

/// Runs [`pv_tile`] with `rows` (`1..=12`) as a constant.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_rows<S: Simd>(
    rows: usize,
    pt: *const f32,
    v: *const f32,
    dp: usize,
    seq: usize,
    inv: *const f32,
    out: *mut f32,
    ldo: usize,
    ncols: usize,
) {
    macro_rules! arms {
        ($($n:literal),*) => {
            match rows {
                $($n => pv_tile::<S, $n>(pt, v, dp, seq, inv, out, ldo, ncols),)*
                _ => unreachable!("pv tile rows {rows}"),
            }
        };
    }
    arms!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)
}

/// One head: see the module doc. `KR` keys per QKᵀ tile, `PR` (<= 12) queries per
/// P·V tile, `D` = `h.d` as a constant or 0 (runtime `h.d`).
///
/// # Safety
/// The ISA of `S` is available; `h` valid (`seq >= 1` rows of `qkv`, the head's
/// `d` output columns of `seq` rows at `out`, not overlapping `qkv` or the
/// scratch); `b` valid for `Sizes::new(S::LANES, KR, seq, d)`.
#[inline(always)]
pub(crate) unsafe fn head<S: Simd, const KR: usize, const PR: usize, const D: usize>(
    h: &Head,
    b: &Bufs,
) {
    let l = S::LANES;
    let qb = 2 * l;
    let (seq, d) = (h.seq, h.d);
    let tk = seq.div_ceil(KR) * KR;
    let dp = d.div_ceil(qb) * qb;

    // 1. K rows [tk][d] (zero rows past seq), V rows [seq][dp] (zero columns past d).
    // Rows 4.6 KB apart (a page each) in the engine come from L3 (each text's qkv
    // is written by the batch's QKV GEMM long before) and no hardware prefetcher
    // follows them: prefetch the K and V rows PF rows ahead (both lines of a 32-float
    // row). Engine f32 32x128, one thread, same session: attention 674 -> 376-400 ms
    // per 8 forwards. (Also prefetching the Q rows into L2: no change.)
    for j in 0..tk {
        let dst = b.k.add(j * d);
        if j < seq {
            let pf = h.qkv.wrapping_add((j + PF) * h.ld + h.k_off);
            prefetch_l1(pf);
            prefetch_l1(pf.wrapping_add(d - 1));
            let pf = h.qkv.wrapping_add((j + PF) * h.ld + h.v_off);
            prefetch_l1(pf);
            prefetch_l1(pf.wrapping_add(d - 1));
            std::ptr::copy_nonoverlapping(h.qkv.add(j * h.ld + h.k_off), dst, d);
        } else {
            std::ptr::write_bytes(dst, 0, d);
        }
    }
    // V is copied even when its columns are whole vector pairs: read in place (row
    // stride 3H = 4.6 KB, a new page every row) it was re-read from L3 by every query
    // block at seq 512 (qkv 2.4 MB > L2): 71% -> 68% of peak (measured).
    for j in 0..seq {
        let dst = b.v.add(j * dp);
        std::ptr::copy_nonoverlapping(h.qkv.add(j * h.ld + h.v_off), dst, d);
        std::ptr::write_bytes(dst.add(d), 0, dp - d);
    }
    let (v, ldv) = (b.v.cast_const(), dp);

    let mut q0 = 0;
    while q0 < seq {
        let nq = qb.min(seq - q0);
        // 2. Qᵀ [d][QB], scaled; lanes past nq are 0. Whole LANES x LANES blocks
        // through the vector transpose, the rest element by element (same rounding).
        for i0 in [0, l] {
            let mut c = 0;
            if i0 + l <= nq {
                let src = h.qkv.add((q0 + i0) * h.ld + h.q_off);
                while c + l <= d {
                    S::transpose_scaled(src.add(c), h.ld, b.qt.add(c * qb + i0), qb, h.scale);
                    c += l;
                }
            }
            for i in i0..i0 + l {
                // A padding lane (i >= nq) has no query row: its address would lie past
                // `qkv` (UB to compute even unread, caught by Miri: tests/bounds.rs), so
                // it is computed only for real queries.
                if i < nq {
                    let src = h.qkv.add((q0 + i) * h.ld + h.q_off);
                    for cc in c..d {
                        *b.qt.add(cc * qb + i) = *src.add(cc) * h.scale;
                    }
                } else {
                    for cc in c..d {
                        *b.qt.add(cc * qb + i) = 0.0;
                    }
                }
            }
        }
        // 3. Sᵀ = K Qᵀ and the per-query max over the real keys. A block of at most
        // LANES queries (a short text, or the tail of one) computes one vector of
        // queries, not two (seq 16 on AVX-512 spent half its QKᵀ and exp on padding).
        let half = nq <= l;
        let mut mx = [S::splat(f32::NEG_INFINITY); 2];
        let mut j0 = 0;
        while j0 < tk {
            if half {
                qk_tile_half::<S, KR, D>(
                    b.k.add(j0 * d),
                    d,
                    b.qt,
                    b.st.add(j0 * qb),
                    seq - j0,
                    &mut mx[0],
                );
            } else {
                qk_tile::<S, KR, D>(
                    b.k.add(j0 * d),
                    d,
                    b.qt,
                    b.st.add(j0 * qb),
                    seq - j0,
                    &mut mx,
                );
            }
            j0 += KR;
        }
        // 4. P = 2^(S - max), per-query sums.
        let nv = if half { 1 } else { 2 };
        // (A half block's second sum stays 1: its `1 / sum` lanes are never used.)
        let mut sum = [S::zero(), if half { S::splat(1.0) } else { S::zero() }];
        let mut p = b.st;
        for _ in 0..seq {
            for v in 0..nv {
                let e = math::exp2_nonpos::<S>(S::sub(S::load(p.add(v * l)), mx[v]));
                S::store(p.add(v * l), e);
                sum[v] = S::add(sum[v], e);
            }
            p = p.add(qb);
        }
        let one = S::splat(1.0);
        S::store(b.inv, S::div(one, sum[0]));
        S::store(b.inv.add(l), S::div(one, sum[1]));
        // 5. O = P V / sum, PR queries x 2·LANES head columns per tile.
        let mut c0 = 0;
        while c0 < d {
            let ncols = qb.min(d - c0);
            let mut r0 = 0;
            while r0 < nq {
                let rows = PR.min(nq - r0);
                pv_rows::<S>(
                    rows,
                    b.st.add(r0),
                    v.add(c0),
                    ldv,
                    seq,
                    b.inv.add(r0),
                    h.out.add((q0 + r0) * h.ldo + c0),
                    h.ldo,
                    ncols,
                );
                r0 += rows;
            }
            c0 += qb;
        }
        q0 += qb;
    }
}

/// Per-ISA entry points: tile shapes and the `d = 32` specialization.
macro_rules! isa_entry {
    ($name:ident, $simd:ty, $kr:literal, $pr:literal $(, $feat:literal)?) => {
        /// # Safety
        /// As [`head`], for this ISA.
        $(#[target_feature(enable = $feat)])?
        pub(crate) unsafe fn $name(h: &Head, b: &Bufs) {
            if h.d == 32 {
                head::<$simd, $kr, $pr, 32>(h, b)
            } else {
                head::<$simd, $kr, $pr, 0>(h, b)
            }
        }
    };
}

/// Keys per QKᵀ tile (`KR`) per ISA: AVX-512 12 x 2 zmm = 24 accumulators + 2 Qᵀ +
/// 2 running max (of 32 zmm); AVX2 6 x 2 ymm = 12 + 2 + 1 broadcast (of 16 ymm).
pub(crate) const KR_AVX512: usize = 12;
pub(crate) const KR_AVX2: usize = 6;
pub(crate) const KR_SCALAR: usize = 4;
/// NEON: 12 keys x 2 q-registers = 24 accumulators + 2 Qᵀ + 2 running max (of 32).
pub(crate) const KR_NEON: usize = 12;

isa_entry!(head_scalar, crate::simd::Scalar, 4, 4);
#[cfg(target_arch = "aarch64")]
isa_entry!(head_neon, crate::simd::neon::Neon, 12, 12, "neon");
#[cfg(target_arch = "x86_64")]
isa_entry!(head_avx2, crate::simd::avx2::Avx2, 6, 6, "avx2,fma");
#[cfg(target_arch = "x86_64")]
isa_entry!(
    head_avx512,
    crate::simd::avx512::Avx512,
    12,
    12,
    "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"
);
