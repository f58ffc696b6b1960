//! aarch64 bf16 kernels: `gemm_bf16_neonbf16_8x12` (`bfmmla`, FEAT_BF16) and
//! `gemm_bf16w_neon_8x12` (the weights widened to f32 and `fmla`, for every aarch64 CPU),
//! both 8 rows x 12 columns over all of K, the epilogue from registers through the one
//! vector epilogue ([`Epi::apply`]). Layouts: `bgemm/mod.rs` (`index`).
//!
//! # `bfmmla` (NeonBf16)
//!
//! `bfmmla vd.4s, vn.8h, vm.8h` multiplies a 2 x 4 block of A (two rows' 4 bf16 of K, one
//! q register) by a 4 x 2 block of W (two columns' 4 bf16) into a 2 x 2 f32 block: 16
//! MACs (`fmla` by element: 4). The weights are packed per panel of 12 columns in
//! k-groups of 4, `[pk / 4][6 column pairs][2][4]` (one q register per column pair and
//! group), the activations per row tile of 8 `[pk / 4][4 row pairs][2][4]`, converted to
//! bf16 once per row block of 48 (`bfcvtn`, the f32 denormals zeroed first so the bits
//! are [`f32_to_bf16`](super::f32_to_bf16)'s whatever FPCR.FZ says).
//!
//! Tile: 4 row pairs x 6 column pairs = 24 accumulators (2 x 2 blocks), 4 A vectors, one
//! W vector at a time = 29 of the 32 q registers; per k-group of 4: 2 `ldp q` of A, 3
//! `ldp q` of W, 24 `bfmmla` (kernels/PERF.md counts the loop). Rows come in pairs, so
//! an odd row count wastes half of its last pair's products. After the K loop the blocks
//! are unzipped into rows (`zip1` / `zip2` on 64-bit halves, as the `smmla` tile) and
//! stored through the epilogue.
//!
//! The instruction's arithmetic (Arm ARM, BFMMLA, without FEAT_EBF16 or with FPCR.EBF =
//! 0, which Linux leaves at 0): per output element, each pair of K's two products is
//! summed and then added to the accumulator, each step **rounded to odd**, denormal
//! inputs and results flushed to zero, overflow to ±inf, default NaN; FPCR is ignored.
//! That is not `vdpbf16ps`'s order or rounding (RNE, odd element first), so this path is
//! **not** bitwise equal to the reference: it is bitwise equal to the scalar model of
//! its own arithmetic (`testing::gemm_bf16_bfmmla_order_reference`) and within
//! `(2·kp + 2)·2^-24·Σ|a·w|` of the reference (both round the same bf16 inputs; round
//! to odd errs by up to one f32 ulp per step, RNE by half of one). A row's result
//! does not depend on the other row of its pair, so rows stay bitwise invariant.
//!
//! # Widening (NeonWiden)
//!
//! No bf16 instruction: the weights are packed `[kp][12]` bf16 per panel, so one k row
//! of a panel is 24 bytes that `shll` / `shll2 #16` turn into three f32 vectors (bf16 is
//! the top half of an f32: exact), and the activations stay **f32** (not rounded),
//! packed `[kp][8]` per row tile (one `ldp q` per k, as the f32 tile). Per two K steps:
//! 3 W loads (48 bytes), 6 `shll`, 2 `ldp q` of A, 48 `fmla v.4s, v.4s, v.s[lane]`: the
//! f32 NEON tile's FMA chain (one `fmla` per k and element, K in order from +0.0, then
//! the same epilogue), so the result is **bitwise** `gemm_f32` on the NEON path with the
//! weights rounded to bf16 (the pad k of an odd K adds an exact +0·0). Registers: 24
//! accumulators, 2 A vectors, 3 widened W vectors per k and the raw loads.
//!
//! # Few rows
//!
//! The last row tile of a block (1-7 rows) runs over all panels; with 1-4 rows it takes
//! two panels at a time, so even one row has 6 (widening) or 12 (`bfmmla`) independent
//! accumulators.

use super::{BIsaKind, Bf16Matrix};
use crate::buf::AlignedBuf;
use crate::epilogue::{Epi, Epilogue};
use crate::simd::neon::Neon;
use crate::simd::Simd;
use std::arch::aarch64::*;
use std::arch::asm;
use std::cell::RefCell;

/// Rows per tile and columns per weight panel (the layout's NR).
pub(crate) const MR: usize = 8;
pub(crate) const NR: usize = 12;
/// `bfmmla` row block: its converted activations (`48 x pk` bf16, 147 KB at k = 1536)
/// are reused by every panel while its C rows stay in L2. A multiple of MR.
const MC_MMLA: usize = 48;
/// Widening row block: the packed f32 activations (`24 x kp` f32, 147 KB at k = 1536).
const MC_WIDEN: usize = 24;

/// One validated call: columns `[j0, j0 + n)` of `C = epi(A · Wᵀ)`.
pub(crate) struct Job {
    /// A `[m, k]` f32, row stride k.
    a: *const f32,
    m: usize,
    k: usize,
    /// `padded_k(k)` (even).
    kp: usize,
    /// Elements per column of a panel: `kp` (widening) or `kp` rounded up to 4 (`bfmmla`).
    pk: usize,
    /// Columns computed.
    n: usize,
    /// First panel of the call (panel stride `pk · NR` elements).
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    epi: Epi,
}

impl Job {
    /// Raw view of a validated call (see `bgemm::call`): `cols.start` is a multiple of NR
    /// (or n), `c` points at column `cols.start` of row 0 with stride `ldc`.
    pub(crate) fn new(
        a: &[f32],
        m: usize,
        b: &Bf16Matrix,
        cols: std::ops::Range<usize>,
        c: *mut f32,
        ldc: usize,
        epilogue: Epilogue,
    ) -> Job {
        let j0 = cols.start;
        debug_assert_eq!(b.nr, NR);
        let elems = b.elems();
        Job {
            a: a.as_ptr(),
            m,
            k: b.k,
            kp: b.kp,
            pk: b.pk,
            n: cols.len(),
            b: elems[((j0 / NR) * b.pk * NR).min(elems.len())..].as_ptr(),
            c,
            ldc,
            // Operand pointers at column j0; the residual's row stride is the matrix's n.
            epi: Epi::new(epilogue, b.n, j0),
        }
    }
}

thread_local! {
    /// Per-thread packed activations of one row block, grown on use.
    static APACK: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Runs a validated job (`k >= 1`) on `kind`'s kernel.
///
/// # Safety
/// `g` describes valid memory for `(m, n, k)` (see `Job::new`), C does not overlap the
/// inputs, the matrix was packed for `kind`, and the CPU supports `kind` (the caller holds
/// its `BIsa` token: NEON, and FEAT_BF16 for NeonBf16).
pub(crate) unsafe fn run(kind: BIsaKind, g: &Job) {
    APACK.with(|cell| {
        let mut buf = cell.borrow_mut();
        match kind {
            BIsaKind::NeonWiden => {
                // MC_WIDEN rows (whole tiles) of kp floats.
                buf.ensure_len(MC_WIDEN * g.kp);
                blocks_widen(g, buf.as_mut_slice().as_mut_ptr())
            }
            BIsaKind::NeonBf16 => {
                // MC_MMLA rows (whole tiles) of pk bf16, in f32 units.
                buf.ensure_len(MC_MMLA * g.pk / 2);
                blocks_mmla(g, buf.as_mut_slice().as_mut_ptr().cast::<u16>())
            }
            _ => unreachable!("{kind:?} has no aarch64 kernel"),
        }
    })
}

/// The epilogue and store of finished row vectors: `acc[pp][r][v]` is row `i0 + r`,
/// columns `(p0 + pp)·NR + 4v ..` of the call. Out of line, the tile by value, so that LLVM
/// keeps the accumulators in registers through the K loop (as `gemm/neon.rs`).
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn store<const R: usize, const P: usize>(
    acc: [[[float32x4_t; 3]; R]; P],
    g: &Job,
    i0: usize,
    p0: usize,
) {
    for (pp, tile) in acc.iter().enumerate() {
        let j0 = (p0 + pp) * NR;
        if j0 >= g.n {
            break;
        }
        let ncols = (g.n - j0).min(NR);
        for (r, row) in tile.iter().enumerate() {
            let i = i0 + r;
            for (v, &x) in row.iter().enumerate() {
                let col = v * 4;
                if col >= ncols {
                    break;
                }
                let j = j0 + col;
                let nv = (ncols - col).min(4);
                let y = g.epi.apply::<Neon>(x, i, j, nv);
                Neon::store_n(g.c.add(i * g.ldc + j), y, nv);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Widening (NeonWiden)
// ---------------------------------------------------------------------------------------

/// Packs rows `0..rows` of A (f32, row stride k) into `ceil(rows / 8)` tiles of `[kp][8]`
/// f32; missing rows and the pad k are 0.
#[inline(always)]
unsafe fn pack_widen(a: *const f32, k: usize, kp: usize, rows: usize, dst: *mut f32) {
    for t in 0..rows.div_ceil(MR) {
        let d = dst.add(t * kp * MR);
        for r in 0..MR {
            let i = t * MR + r;
            if i < rows {
                let src = a.add(i * k);
                for q in 0..k {
                    *d.add(q * MR + r) = *src.add(q);
                }
                for q in k..kp {
                    *d.add(q * MR + r) = 0.0;
                }
            } else {
                for q in 0..kp {
                    *d.add(q * MR + r) = 0.0;
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn wide(x: uint32x4_t) -> float32x4_t {
    vreinterpretq_f32_u32(x)
}

/// Two k rows of a panel (24 bf16 at `b`, 3 q loads) widened to f32: the 12 columns of
/// k and of k + 1, three vectors each (`shll` / `shll2 #16`: bf16 -> f32 exactly).
#[inline(always)]
unsafe fn widen_2k(b: *const u16) -> ([float32x4_t; 3], [float32x4_t; 3]) {
    let v0 = vld1q_u16(b);
    let v1 = vld1q_u16(b.add(8));
    let v2 = vld1q_u16(b.add(16));
    (
        [
            wide(vshll_n_u16::<16>(vget_low_u16(v0))),
            wide(vshll_high_n_u16::<16>(v0)),
            wide(vshll_n_u16::<16>(vget_low_u16(v1))),
        ],
        [
            wide(vshll_high_n_u16::<16>(v1)),
            wide(vshll_n_u16::<16>(vget_low_u16(v2))),
            wide(vshll_high_n_u16::<16>(v2)),
        ],
    )
}

/// One K step of an `R x 12` tile: the 8 packed activations of this k at `a` (row `r`
/// is lane `r % 4` of vector `r / 4`), the widened weights `w`; `3·R` `fmla` by element.
#[inline(always)]
unsafe fn k_step_widen<const R: usize>(
    acc: &mut [[float32x4_t; 3]; R],
    a: *const f32,
    w: &[float32x4_t; 3],
) {
    let a0 = vld1q_f32(a);
    let a1 = if R > 4 { vld1q_f32(a.add(4)) } else { a0 };
    for (v, &wv) in w.iter().enumerate() {
        for (r, row) in acc.iter_mut().enumerate() {
            let av = if r < 4 { a0 } else { a1 };
            row[v] = match r % 4 {
                0 => vfmaq_laneq_f32::<0>(row[v], wv, av),
                1 => vfmaq_laneq_f32::<1>(row[v], wv, av),
                2 => vfmaq_laneq_f32::<2>(row[v], wv, av),
                _ => vfmaq_laneq_f32::<3>(row[v], wv, av),
            };
        }
    }
}

/// The widening microkernel: rows `i0..i0 + R` (tile packed by [`pack_widen`] at `ap`)
/// x panels `p0..p0 + P`, all of K (in pairs: kp is even), then the epilogue. Not inlined
/// (one call per tile): each shape is its own symbol, whose inner loop kernels/PERF.md
/// counts.
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn tile_widen<const R: usize, const P: usize>(
    g: &Job,
    ap: *const f32,
    i0: usize,
    p0: usize,
) {
    let mut acc = [[[vdupq_n_f32(0.0); 3]; R]; P];
    let pstride = g.pk * NR;
    let bp = g.b.add(p0 * pstride);
    let mut q = 0;
    while q < g.kp {
        let a = ap.add(q * MR);
        for (pp, tile) in acc.iter_mut().enumerate() {
            let (w0, w1) = widen_2k(bp.add(pp * pstride + q * NR));
            k_step_widen::<R>(tile, a, &w0);
            k_step_widen::<R>(tile, a.add(MR), &w1);
        }
        q += 2;
    }
    store::<R, P>(acc, g, i0, p0);
}

/// The last `r` rows (`1..8`) of a block over all `np` panels: two panels at a time
/// for up to 4 rows.
#[inline(always)]
unsafe fn rows_widen(g: &Job, ap: *const f32, i0: usize, r: usize, np: usize) {
    let mut p = 0;
    while p < np {
        let two = r <= 4 && p + 1 < np;
        match (r, two) {
            (1, true) => tile_widen::<1, 2>(g, ap, i0, p),
            (2, true) => tile_widen::<2, 2>(g, ap, i0, p),
            (3, true) => tile_widen::<3, 2>(g, ap, i0, p),
            (4, true) => tile_widen::<4, 2>(g, ap, i0, p),
            (1, _) => tile_widen::<1, 1>(g, ap, i0, p),
            (2, _) => tile_widen::<2, 1>(g, ap, i0, p),
            (3, _) => tile_widen::<3, 1>(g, ap, i0, p),
            (4, _) => tile_widen::<4, 1>(g, ap, i0, p),
            (5, _) => tile_widen::<5, 1>(g, ap, i0, p),
            (6, _) => tile_widen::<6, 1>(g, ap, i0, p),
            (7, _) => tile_widen::<7, 1>(g, ap, i0, p),
            _ => unreachable!("last row tile of {r} rows"),
        }
        p += if two { 2 } else { 1 };
    }
}

/// Row blocks of MC_WIDEN (packed once) -> panels -> full 8-row tiles; then the block's
/// last rows over all panels.
#[target_feature(enable = "neon")]
unsafe fn blocks_widen(g: &Job, apack: *mut f32) {
    let np = g.n.div_ceil(NR);
    let mut ib = 0;
    while ib < g.m {
        let mb = (g.m - ib).min(MC_WIDEN);
        pack_widen(g.a.add(ib * g.k), g.k, g.kp, mb, apack);
        let full = mb / MR;
        for p in 0..np {
            for t in 0..full {
                tile_widen::<MR, 1>(g, apack.add(t * MR * g.kp), ib + t * MR, p);
            }
        }
        let rem = mb - full * MR;
        if rem > 0 {
            rows_widen(g, apack.add(full * MR * g.kp), ib + full * MR, rem, np);
        }
        ib += mb;
    }
}

// ---------------------------------------------------------------------------------------
// bfmmla (NeonBf16)
// ---------------------------------------------------------------------------------------

/// `bfmmla acc.4s, a.8h, b.8h`: `acc[2i + j] += Σ_{t<4} a[4i + t] · b[4j + t]` (bf16, the
/// instruction's rounding: module docs). Inline assembly: the bf16 intrinsics are not
/// stable Rust.
#[inline(always)]
unsafe fn bfmmla(acc: float32x4_t, a: uint16x8_t, b: uint16x8_t) -> float32x4_t {
    let mut acc = acc;
    asm!(
        "bfmmla {acc:v}.4s, {a:v}.8h, {b:v}.8h",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// Two rows' 4 floats each -> one `bfmmla` operand of 8 bf16 (`bfcvtn` / `bfcvtn2`: round
/// to nearest even under Linux's FPCR). f32 denormals are zeroed first (sign kept), so the
/// bits are `f32_to_bf16`'s (`bfcvtn` would round them to bf16 denormals, or up to the
/// smallest normal, under FPCR.FZ = 0).
#[inline(always)]
unsafe fn to_bf16_pair(lo: float32x4_t, hi: float32x4_t) -> uint16x8_t {
    let daz = |x: float32x4_t| {
        let u = vreinterpretq_u32_f32(x);
        let keep = vorrq_u32(
            vtstq_u32(u, vdupq_n_u32(0x7f80_0000)),
            vdupq_n_u32(0x8000_0000),
        );
        vandq_u32(u, keep)
    };
    let (lo, hi) = (daz(lo), daz(hi));
    let out: uint16x8_t;
    asm!(
        "bfcvtn {o:v}.4h, {l:v}.4s",
        "bfcvtn2 {o:v}.8h, {h:v}.4s",
        o = out(vreg) out,
        l = in(vreg) lo,
        h = in(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    out
}

/// Floats `q0..q0 + 4` of the row at `row` (length k), zero past k.
#[inline(always)]
unsafe fn load4(row: *const f32, k: usize, q0: usize) -> float32x4_t {
    if q0 + 4 <= k {
        vld1q_f32(row.add(q0))
    } else {
        let mut t = [0.0f32; 4];
        std::ptr::copy_nonoverlapping(row.add(q0), t.as_mut_ptr(), k - q0);
        vld1q_f32(t.as_ptr())
    }
}

/// Packs rows `0..rows` of A (f32, row stride k) into `ceil(rows / 8)` tiles of
/// `[pk / 4][4 row pairs][2][4]` bf16; missing rows and the k past k are 0.
#[inline(always)]
unsafe fn pack_mmla(a: *const f32, k: usize, pk: usize, rows: usize, dst: *mut u16) {
    let zero = vdupq_n_f32(0.0);
    for t in 0..rows.div_ceil(MR) {
        let d = dst.add(t * pk * MR);
        for i in 0..MR / 2 {
            let (r0, r1) = (t * MR + 2 * i, t * MR + 2 * i + 1);
            for grp in 0..pk / 4 {
                let q0 = 4 * grp;
                let lo = if r0 < rows {
                    load4(a.add(r0 * k), k, q0)
                } else {
                    zero
                };
                let hi = if r1 < rows {
                    load4(a.add(r1 * k), k, q0)
                } else {
                    zero
                };
                vst1q_u16(d.add(grp * 4 * MR + 8 * i), to_bf16_pair(lo, hi));
            }
        }
    }
}

/// The `bfmmla` microkernel: rows `i0..i0 + R` (`RP = ceil(R / 2)` row pairs, tile packed
/// by [`pack_mmla`] at `ap`) x panels `p0..p0 + P`, all of K, then the blocks unzipped
/// into rows and the epilogue. Not inlined: each shape is its own symbol (kernels/PERF.md
/// counts the 8-row one's loop).
#[inline(never)]
#[target_feature(enable = "neon,bf16")]
unsafe fn tile_mmla<const R: usize, const RP: usize, const P: usize>(
    g: &Job,
    ap: *const u16,
    i0: usize,
    p0: usize,
) {
    debug_assert_eq!(RP, R.div_ceil(2));
    let mut acc = [[[vdupq_n_f32(0.0); 6]; RP]; P];
    let pstride = g.pk * NR;
    let bp = g.b.add(p0 * pstride);
    let mut q = 0;
    while q < g.pk {
        // k-group q / 4: A at (q / 4)·32 elements, W at (q / 4)·48.
        let a = ap.add(q * MR);
        let mut av = [vdupq_n_u16(0); RP];
        for (i, x) in av.iter_mut().enumerate() {
            *x = vld1q_u16(a.add(8 * i));
        }
        for (pp, tile) in acc.iter_mut().enumerate() {
            let b = bp.add(pp * pstride + q * NR);
            for c in 0..6 {
                let bv = vld1q_u16(b.add(8 * c));
                for (row, &x) in tile.iter_mut().zip(&av) {
                    row[c] = bfmmla(row[c], x, bv);
                }
            }
        }
        q += 4;
    }
    // 2 x 2 blocks -> rows of 4 columns: row 2i is the low halves of blocks (i, 2v) and
    // (i, 2v + 1), row 2i + 1 their high halves.
    let mut rows = [[[vdupq_n_f32(0.0); 3]; R]; P];
    for (out, tile) in rows.iter_mut().zip(&acc) {
        for (i, blocks) in tile.iter().enumerate() {
            for v in 0..3 {
                let lo = vreinterpretq_f64_f32(blocks[2 * v]);
                let hi = vreinterpretq_f64_f32(blocks[2 * v + 1]);
                out[2 * i][v] = vreinterpretq_f32_f64(vzip1q_f64(lo, hi));
                if 2 * i + 1 < R {
                    out[2 * i + 1][v] = vreinterpretq_f32_f64(vzip2q_f64(lo, hi));
                }
            }
        }
    }
    store::<R, P>(rows, g, i0, p0);
}

/// The last `r` rows (`1..8`) of a block over all `np` panels: two panels at a time
/// for up to 4 rows.
#[inline(always)]
unsafe fn rows_mmla(g: &Job, ap: *const u16, i0: usize, r: usize, np: usize) {
    let mut p = 0;
    while p < np {
        let two = r <= 4 && p + 1 < np;
        match (r, two) {
            (1, true) => tile_mmla::<1, 1, 2>(g, ap, i0, p),
            (2, true) => tile_mmla::<2, 1, 2>(g, ap, i0, p),
            (3, true) => tile_mmla::<3, 2, 2>(g, ap, i0, p),
            (4, true) => tile_mmla::<4, 2, 2>(g, ap, i0, p),
            (1, _) => tile_mmla::<1, 1, 1>(g, ap, i0, p),
            (2, _) => tile_mmla::<2, 1, 1>(g, ap, i0, p),
            (3, _) => tile_mmla::<3, 2, 1>(g, ap, i0, p),
            (4, _) => tile_mmla::<4, 2, 1>(g, ap, i0, p),
            (5, _) => tile_mmla::<5, 3, 1>(g, ap, i0, p),
            (6, _) => tile_mmla::<6, 3, 1>(g, ap, i0, p),
            (7, _) => tile_mmla::<7, 4, 1>(g, ap, i0, p),
            _ => unreachable!("last row tile of {r} rows"),
        }
        p += if two { 2 } else { 1 };
    }
}

/// Row blocks of MC_MMLA (converted and packed once) -> panels -> full 8-row tiles; then
/// the block's last rows over all panels.
#[target_feature(enable = "neon,bf16")]
unsafe fn blocks_mmla(g: &Job, apack: *mut u16) {
    let np = g.n.div_ceil(NR);
    let mut ib = 0;
    while ib < g.m {
        let mb = (g.m - ib).min(MC_MMLA);
        pack_mmla(g.a.add(ib * g.k), g.k, g.pk, mb, apack);
        let full = mb / MR;
        for p in 0..np {
            for t in 0..full {
                tile_mmla::<MR, 4, 1>(g, apack.add(t * MR * g.pk), ib + t * MR, p);
            }
        }
        let rem = mb - full * MR;
        if rem > 0 {
            rows_mmla(g, apack.add(full * MR * g.pk), ib + full * MR, rem, np);
        }
        ib += mb;
    }
}
