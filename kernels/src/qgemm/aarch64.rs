//! aarch64 int8 kernels: `gemm_u8s8_neondot_8x12`, `sdot` (the `dotprod` extension) by
//! element, on the weights packed in the common layout (`[kp / 4][NR][4]`, NR = 12), and
//! `gemm_u8s8_neoni8mm_8x12`, `smmla` (the `i8mm` extension) on weights packed in
//! k-groups of 8 (`[kp8 / 8][NR][8]`); the activations are re-packed per row block for
//! each. Layouts and the scheme: `qgemm/mod.rs`.
//!
//! # Signed dot products and the +128 activations
//!
//! The quantized activations are the u8 `Aq + 128` on every path (one quantizer
//! format, `quantize_rows`); x86 multiplies them as u8 with `vpdpbusd` (u8 x s8) and
//! subtracts `comp = 128 · Σ_k Wq` in the epilogue. `sdot` is s8 x s8 (`usdot`, u8 x s8,
//! needs `i8mm`), so the row-block packing flips the top bit of each activation byte:
//! `(u ^ 0x80) as i8 = u − 128`, i.e. `Aq` itself for signed input and `u − 128` for
//! unsigned input. The kernel then adds back `128 · Σ_k Wq` (`colsum128`, stored at pack
//! time) before the same `− comp` as x86: `acc_s + 128·Σ Wq = Σ u·Wq`, so the i32 value
//! that reaches the f32 epilogue is exactly x86's `acc − comp`, and the epilogue is the
//! same instructions in the same order (`(s_a·s_w)·x`, then [`Epi::apply`]): results are
//! bitwise equal to the scalar reference (GELU aside, as on x86). No sum can wrap:
//! `|Σ (u − 128)·Wq| <= 128·127·k < 2^31` for `k <= QK_MAX`.
//!
//! # Tile
//!
//! 8 rows x 12 columns: 8 x 3 = 24 i32 accumulators + 3 weight vectors + 2 activation
//! vectors = 29 of 32 q registers. Activations are packed `[kp / 4][8][4]` per row
//! tile, so per k-group one `ldp q` brings the 4 bytes of all 8 rows, three `ldr q`
//! the 12 columns' 4 bytes each, and 24 `sdot v.4s, v.16b, v.4b[lane]` consume them
//! (row `r` is lane `r % 4` of activation vector `r / 4`): 24 `sdot` among 28-29
//! vector instructions (kernels/PERF.md counts it from the disassembly). Tiles of
//! fewer rows (the last of a call) are the same code with `R < 8` rows (a jump table).
//!
//! # The `smmla` tile
//!
//! `smmla` is s8 x s8 too, so the activations are flipped the same way and the same
//! `colsum128` is added back: its i32 sums are `sdot`'s exactly, and the tile ends in
//! the same epilogue ([`store`]): bitwise equal to the `sdot` path and the reference.
//! One `smmla` multiplies a 2 x 8 block of A (two rows' 8 bytes, one q register) by an
//! 8 x 2 block of W (two columns' 8 bytes) into a 2 x 2 i32 block, 32 MACs (`sdot` by
//! element: 16). The 8 x 12 tile is 4 row pairs x 6 column pairs = 24 accumulators;
//! per k-group of 8, 4 A and 6 W vectors feed 24 `smmla` (kernels/PERF.md counts the
//! loop). `usmmla` (u8 x s8) would take the +128 activations as they are, but the
//! flip costs nothing (it is in the packing) and keeps one scheme for both kernels.

use super::{QIsaKind, QuantizedMatrix};
use crate::buf::AlignedBuf;
use crate::epilogue::{Epi, Epilogue};
use crate::simd::neon::Neon;
use crate::simd::Simd;
use std::arch::aarch64::*;
use std::cell::RefCell;

/// Rows per tile and columns per weight panel (the layout's NR).
pub(crate) const MR: usize = 8;
pub(crate) const NR: usize = 12;
/// Row block: its packed activations (`MC x kp` bytes, 72 KB at kp = 1536) are reused
/// by every panel while its C rows stay in L2. A multiple of MR.
const MC: usize = 48;

/// Where the tile results go (as `x86::Out`).
#[derive(Clone, Copy)]
pub(crate) enum Out {
    /// f32 C `[m, n]` with the dequantization epilogue; the pointer is `s_a: [m]`.
    F32(*mut f32, *const f32),
    /// Raw compensated i32 sums `[m, n]`.
    I32(*mut i32),
}

/// One validated GEMM call (as `x86::Job`).
pub(crate) struct Job {
    a: *const u8,
    kp: usize,
    /// Panel depth in bytes per column (`QuantizedMatrix::pk`: `kp`, or `kp`
    /// rounded up to 8 for `smmla`); panel `p` starts at `b + p · kpk · NR`.
    kpk: usize,
    m: usize,
    n: usize,
    ldc: usize,
    b: *const i8,
    sw: *const f32,
    comp: *const i32,
    colsum128: *const i32,
    out: Out,
    epi: Epi,
}

impl Job {
    /// Raw view of a validated call (`a: [m, kp]`, `out` `[m, n]`, epilogue operands
    /// for `(m, n)`).
    pub(crate) fn new(
        a: &[u8],
        m: usize,
        b: &QuantizedMatrix,
        out: Out,
        epilogue: Epilogue,
    ) -> Job {
        Job::cols(a, m, b, 0..b.n, out, b.n, epilogue)
    }

    /// Columns `cols` only (`cols.start` a multiple of NR); `out` points at a block
    /// with row stride `ldc`; epilogue operands are the full `[n]` / `[m, n]` ones.
    pub(crate) fn cols(
        a: &[u8],
        m: usize,
        b: &QuantizedMatrix,
        cols: std::ops::Range<usize>,
        out: Out,
        ldc: usize,
        epilogue: Epilogue,
    ) -> Job {
        let j0 = cols.start;
        let epi = Epi::new(epilogue, b.n, j0);
        Job {
            a: a.as_ptr(),
            kp: b.kp,
            kpk: b.pk,
            m,
            n: cols.len(),
            ldc,
            b: b.bytes()[(j0 / b.nr) * b.pk * b.nr..].as_ptr(),
            sw: b.scales[j0..].as_ptr(),
            comp: b.comp[j0..].as_ptr(),
            colsum128: b.colsum128[j0..].as_ptr(),
            out,
            epi,
        }
    }
}

thread_local! {
    /// Per-thread packed activations of one row block (`MC x kp` bytes), grown on use.
    static APACK: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// `sdot acc.4s, b.16b, a.4b[L]`: `acc[i] += Σ_{t<4} b[4i + t] · a[4L + t]` (s8 x s8).
/// Inline assembly: the `dotprod` intrinsics are not stable Rust.
#[inline(always)]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, b: int8x16_t, a: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(
        "sdot {acc:v}.4s, {b:v}.16b, {a:v}.4b[{l}]",
        acc = inout(vreg) acc,
        b = in(vreg) b,
        a = in(vreg) a,
        l = const L,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// Packs rows `i0..i0 + rows` of A (u8, row stride kp) into `ceil(rows / 8)` tiles of
/// `[kp / 4][8][4]` s8 (`u ^ 0x80`), missing rows 0.
#[inline(always)]
unsafe fn pack_a(a: *const u8, kp: usize, rows: usize, dst: *mut i8) {
    let groups = kp / 4;
    for t in 0..rows.div_ceil(MR) {
        let d = dst.add(t * kp * MR);
        for r in 0..MR {
            let i = t * MR + r;
            if i < rows {
                let src = a.add(i * kp);
                for q in 0..groups {
                    let w = (src.add(4 * q) as *const u32).read_unaligned() ^ 0x8080_8080;
                    (d.add(q * 4 * MR + 4 * r) as *mut u32).write_unaligned(w);
                }
            } else {
                for q in 0..groups {
                    (d.add(q * 4 * MR + 4 * r) as *mut u32).write_unaligned(0);
                }
            }
        }
    }
}

/// One k-group of an `R x 12` tile: rows `0..R` of the packed group at `a` (32 bytes),
/// the panel's 48 bytes at `b`.
#[inline(always)]
unsafe fn k_group<const R: usize>(acc: &mut [[int32x4_t; 3]; MR], a: *const i8, b: *const i8) {
    let a0 = vld1q_s8(a);
    let a1 = if R > 4 { vld1q_s8(a.add(16)) } else { a0 };
    let bv = [vld1q_s8(b), vld1q_s8(b.add(16)), vld1q_s8(b.add(32))];
    for v in 0..3 {
        acc[0][v] = sdot_lane::<0>(acc[0][v], bv[v], a0);
        if R > 1 {
            acc[1][v] = sdot_lane::<1>(acc[1][v], bv[v], a0);
        }
        if R > 2 {
            acc[2][v] = sdot_lane::<2>(acc[2][v], bv[v], a0);
        }
        if R > 3 {
            acc[3][v] = sdot_lane::<3>(acc[3][v], bv[v], a0);
        }
        if R > 4 {
            acc[4][v] = sdot_lane::<0>(acc[4][v], bv[v], a1);
        }
        if R > 5 {
            acc[5][v] = sdot_lane::<1>(acc[5][v], bv[v], a1);
        }
        if R > 6 {
            acc[6][v] = sdot_lane::<2>(acc[6][v], bv[v], a1);
        }
        if R > 7 {
            acc[7][v] = sdot_lane::<3>(acc[7][v], bv[v], a1);
        }
    }
}

/// The microkernel: rows `i0..i0 + R` (packed tile at `ap`) x panel `p`, all of K,
/// then the epilogue from registers. Not inlined (one call per tile, all of K): each
/// row count is its own symbol, whose inner loop kernels/PERF.md counts.
#[inline(never)]
#[target_feature(enable = "neon,dotprod")]
unsafe fn tile<const R: usize>(g: &Job, ap: *const i8, i0: usize, p: usize) {
    let kp = g.kp;
    let bp = g.b.add(p * g.kpk * NR);
    let mut acc = [[vdupq_n_s32(0); 3]; MR];
    let mut q = 0;
    while q < kp / 4 {
        k_group::<R>(&mut acc, ap.add(q * 4 * MR), bp.add(q * 4 * NR));
        q += 1;
    }
    store::<R>(acc, g, i0, p);
}

/// The epilogue and store of a finished tile (out of line, the tile by value, so that
/// LLVM keeps the accumulators in registers through the K loop, as in `gemm/neon.rs`).
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn store<const R: usize>(acc: [[int32x4_t; 3]; MR], g: &Job, i0: usize, p: usize) {
    let j0 = p * NR;
    let ncols = (g.n - j0).min(NR);
    for v in 0..3 {
        if v * 4 >= ncols {
            break;
        }
        let j = j0 + v * 4;
        let nv = (ncols - v * 4).min(4);
        // colsum128 and comp are zero-padded to whole panels: full loads in bounds.
        let corr = vsubq_s32(vld1q_s32(g.colsum128.add(j)), vld1q_s32(g.comp.add(j)));
        match g.out {
            Out::I32(c) => {
                for (r, row) in acc.iter().enumerate().take(R) {
                    let x = vaddq_s32(row[v], corr);
                    let mut t = [0i32; 4];
                    vst1q_s32(t.as_mut_ptr(), x);
                    std::ptr::copy_nonoverlapping(t.as_ptr(), c.add((i0 + r) * g.ldc + j), nv);
                }
            }
            Out::F32(c, sa) => {
                let sw = Neon::load(g.sw.add(j));
                for (r, row) in acc.iter().enumerate().take(R) {
                    let i = i0 + r;
                    // acc_s + 128·ΣWq − comp: x86's `acc − comp` (module docs).
                    let x = vcvtq_f32_s32(vaddq_s32(row[v], corr));
                    // y = (s_a[i] · s_w[j]) · x: two roundings, as the reference.
                    let s = Neon::mul(Neon::splat(*sa.add(i)), sw);
                    let y = Neon::mul(s, x);
                    let y = g.epi.apply::<Neon>(y, i, j, nv);
                    Neon::store_n(c.add(i * g.ldc + j), y, nv);
                }
            }
        }
    }
}

/// Row tile of `r` rows (`1..=8`) over panels `0..np`.
#[inline(always)]
unsafe fn row_tile(g: &Job, ap: *const i8, i0: usize, r: usize, np: usize) {
    for p in 0..np {
        match r {
            8 => tile::<8>(g, ap, i0, p),
            7 => tile::<7>(g, ap, i0, p),
            6 => tile::<6>(g, ap, i0, p),
            5 => tile::<5>(g, ap, i0, p),
            4 => tile::<4>(g, ap, i0, p),
            3 => tile::<3>(g, ap, i0, p),
            2 => tile::<2>(g, ap, i0, p),
            1 => tile::<1>(g, ap, i0, p),
            _ => unreachable!("row tile of {r} rows"),
        }
    }
}

/// `smmla acc.4s, a.16b, b.16b`: `acc[2i + j] += Σ_{t<8} a[8i + t] · b[8j + t]` (s8 x s8;
/// a 2 x 8 by 8 x 2 product into a 2 x 2 i32 block). Inline assembly: the `i8mm`
/// intrinsics (`vmmlaq_s32`) are not stable Rust.
#[inline(always)]
unsafe fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(
        "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
        acc = inout(vreg) acc,
        a = in(vreg) a,
        b = in(vreg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// Packs rows `0..rows` of A (u8, row stride kp) for `smmla` into `ceil(rows / 8)`
/// tiles of `[kp8 / 8][8][8]` s8 (`u ^ 0x80`; `kp8 = kp` rounded up to 8): per k-group
/// of 8, the 8 rows' 8 bytes one after the other, so rows `2i, 2i + 1` are one 16-byte
/// `smmla` operand. Missing rows and the k past kp are 0 (the weights are 0 there too).
#[inline(always)]
unsafe fn pack_a_mmla(a: *const u8, kp: usize, rows: usize, dst: *mut i8) {
    let kp8 = kp.div_ceil(8) * 8;
    let groups = kp / 8;
    for t in 0..rows.div_ceil(MR) {
        let d = dst.add(t * kp8 * MR);
        for r in 0..MR {
            let i = t * MR + r;
            if i < rows {
                let src = a.add(i * kp);
                for q in 0..groups {
                    let w = (src.add(8 * q) as *const u64).read_unaligned() ^ 0x8080_8080_8080_8080;
                    (d.add(q * 8 * MR + 8 * r) as *mut u64).write_unaligned(w);
                }
                if kp8 != kp {
                    // kp = 4 mod 8: the last group's 4 real bytes, then 4 zeros.
                    let w = (src.add(8 * groups) as *const u32).read_unaligned() ^ 0x8080_8080;
                    (d.add(groups * 8 * MR + 8 * r) as *mut u64).write_unaligned(w as u64);
                }
            } else {
                for q in 0..kp8 / 8 {
                    (d.add(q * 8 * MR + 8 * r) as *mut u64).write_unaligned(0);
                }
            }
        }
    }
}

/// The `smmla` microkernel: rows `i0..i0 + R` (tile packed by [`pack_a_mmla`] at `ap`)
/// x panel `p` (`[kp8 / 8][12][8]`), all of K. Accumulator `acc[i][c]` is the 2 x 2
/// block of rows `2i, 2i + 1` and columns `2c, 2c + 1`: 4 x 6 = 24 of them, plus the 4
/// row-pair vectors and one column-pair vector at a time = 29 of 32 q registers. Per
/// k-group of 8: 4 + 6 loads, 24 `smmla` (half as many k-groups as `sdot`, the same
/// count of multiply instructions per group: 2x the MACs per instruction). After the
/// loop the blocks are unzipped into rows (`zip1`/`zip2` on 64-bit halves) and stored
/// by the `sdot` kernel's epilogue ([`store`]): the same i32 sums, so bitwise equal.
#[inline(never)]
#[target_feature(enable = "neon,i8mm")]
unsafe fn tile_mmla<const R: usize>(g: &Job, ap: *const i8, i0: usize, p: usize) {
    let bp = g.b.add(p * g.kpk * NR);
    let mut acc = [[vdupq_n_s32(0); 6]; MR / 2];
    let mut q = 0;
    while q < g.kpk / 8 {
        let a = ap.add(q * 8 * MR);
        let b = bp.add(q * 8 * NR);
        let a0 = vld1q_s8(a);
        let a1 = if R > 2 { vld1q_s8(a.add(16)) } else { a0 };
        let a2 = if R > 4 { vld1q_s8(a.add(32)) } else { a0 };
        let a3 = if R > 6 { vld1q_s8(a.add(48)) } else { a0 };
        for c in 0..6 {
            let bv = vld1q_s8(b.add(16 * c));
            acc[0][c] = smmla(acc[0][c], a0, bv);
            if R > 2 {
                acc[1][c] = smmla(acc[1][c], a1, bv);
            }
            if R > 4 {
                acc[2][c] = smmla(acc[2][c], a2, bv);
            }
            if R > 6 {
                acc[3][c] = smmla(acc[3][c], a3, bv);
            }
        }
        q += 1;
    }
    // 2 x 2 blocks -> rows of 4 columns: row 2i is the low halves of blocks (i, 2v) and
    // (i, 2v + 1), row 2i + 1 their high halves.
    let mut rows = [[vdupq_n_s32(0); 3]; MR];
    for i in 0..MR / 2 {
        if 2 * i >= R {
            break;
        }
        for v in 0..3 {
            let lo = vreinterpretq_s64_s32(acc[i][2 * v]);
            let hi = vreinterpretq_s64_s32(acc[i][2 * v + 1]);
            rows[2 * i][v] = vreinterpretq_s32_s64(vzip1q_s64(lo, hi));
            rows[2 * i + 1][v] = vreinterpretq_s32_s64(vzip2q_s64(lo, hi));
        }
    }
    store::<R>(rows, g, i0, p);
}

/// [`row_tile`] for the `smmla` tile.
#[inline(always)]
unsafe fn row_tile_mmla(g: &Job, ap: *const i8, i0: usize, r: usize) {
    match r {
        8 => tile_mmla::<8>(g, ap, i0, 0),
        7 => tile_mmla::<7>(g, ap, i0, 0),
        6 => tile_mmla::<6>(g, ap, i0, 0),
        5 => tile_mmla::<5>(g, ap, i0, 0),
        4 => tile_mmla::<4>(g, ap, i0, 0),
        3 => tile_mmla::<3>(g, ap, i0, 0),
        2 => tile_mmla::<2>(g, ap, i0, 0),
        1 => tile_mmla::<1>(g, ap, i0, 0),
        _ => unreachable!("row tile of {r} rows"),
    }
}

/// Row blocks of MC (packed once) → panels → row tiles of 8 (the last one shorter);
/// `MMLA` picks the `smmla` packing and tile, else `sdot`'s.
#[target_feature(enable = "neon")]
unsafe fn run_blocks<const MMLA: bool>(g: &Job, apack: *mut i8) {
    let np = g.n.div_ceil(NR);
    // Bytes per packed row of A: kp, rounded up to 8 for smmla.
    let kpa = if MMLA { g.kp.div_ceil(8) * 8 } else { g.kp };
    let mut ib = 0;
    while ib < g.m {
        let mb = (g.m - ib).min(MC);
        if MMLA {
            pack_a_mmla(g.a.add(ib * g.kp), g.kp, mb, apack);
        } else {
            pack_a(g.a.add(ib * g.kp), g.kp, mb, apack);
        }
        for p in 0..np {
            let mut t = 0;
            while t * MR < mb {
                let r = (mb - t * MR).min(MR);
                let ap = apack.add(t * MR * kpa);
                // One panel per call keeps the panel in L1 across the block's tiles.
                let one = Job {
                    b: g.b.add(p * g.kpk * NR),
                    sw: g.sw.add(p * NR),
                    comp: g.comp.add(p * NR),
                    colsum128: g.colsum128.add(p * NR),
                    n: (g.n - p * NR).min(NR),
                    out: match g.out {
                        Out::F32(c, sa) => Out::F32(c.add(p * NR), sa),
                        Out::I32(c) => Out::I32(c.add(p * NR)),
                    },
                    epi: g.epi.at(0, p * NR),
                    ..*g
                };
                if MMLA {
                    row_tile_mmla(&one, ap, ib + t * MR, r);
                } else {
                    row_tile(&one, ap, ib + t * MR, r, 1);
                }
                t += 1;
            }
        }
        ib += mb;
    }
}

/// Runs a validated job on `kind`'s kernel.
///
/// # Safety
/// `g` describes valid memory for `(m, n, kp)` (see `Job::new`), the output does not
/// overlap the inputs, the matrix was packed for `kind`, and the CPU supports `kind`
/// (the caller holds its `QIsa` token).
pub(crate) unsafe fn run(kind: QIsaKind, g: &Job) {
    let mmla = match kind {
        QIsaKind::NeonDot => false,
        QIsaKind::NeonI8mm => true,
        _ => unreachable!("{kind:?} has no aarch64 kernel"),
    };
    APACK.with(|cell| {
        let mut buf = cell.borrow_mut();
        // MC rows rounded up to whole tiles, kp (smmla: rounded up to 8) bytes each, in
        // f32 units.
        let kpa = if mmla { g.kp.div_ceil(8) * 8 } else { g.kp };
        buf.ensure_len((MC.div_ceil(MR) * MR * kpa).div_ceil(4));
        let apack = buf.as_mut_slice().as_mut_ptr().cast::<i8>();
        if mmla {
            run_blocks::<true>(g, apack)
        } else {
            run_blocks::<false>(g, apack)
        }
    })
}
