//! The generic microkernel and the two drivers around it (blocked for large M,
//! skinny for small M). See the contract in `gemm/mod.rs`.
//!
//! # The invariant every path keeps (bitwise reproducibility)
//!
//! Each element of C is **one sequential FMA chain over K in order, starting from
//! +0.0**: `c = fma(a[K-1], w[K-1], ... fma(a[1], w[1], fma(a[0], w[0], 0)))`, then
//! the epilogue in a fixed order (`+bias`, GELU / `+residual`). A later K slice
//! *continues* the chain from the value stored in C (loaded into the accumulator
//! before the first FMA, not added afterwards), and an f32 store/load is exact, so
//! the result does not depend on KC, MC, NC, the tile shape, packed or in-place A,
//! the element's row position, how many rows the call has, which columns a call
//! covers, or which driver ran. It depends only on the ISA (FMA vs mul+add; the
//! vector width only affects which lanes are computed together, never the order).

pub(crate) use crate::epilogue::Epi;
use crate::simd::{prefetch_l1, prefetch_l2, Simd};

/// Arguments of one microkernel call (one tile of C, one KC slice of K).
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Depth of this call (`kc`), >= 1.
    pub kc: usize,
    /// A micro-panel: packed (`[kc][MR]`) or, when unpacked, row `r`, column `p` at
    /// `a + r * rs_a + p`.
    pub a: *const f32,
    pub rs_a: usize,
    /// First B micro-panel `[kc][NR]` (zero-padded to NR columns); a multi-panel
    /// (skinny) tile reads panel `p` at `b + p * pstride`.
    pub b: *const f32,
    pub pstride: usize,
    /// Software prefetch distance along each B panel, in floats (0: none). The
    /// skinny path streams W from DRAM/L3 once; the hardware prefetcher alone left
    /// the stream unoverlapped with the FMAs (cold T = 8 took hot time + DRAM time).
    pub pf_b: usize,
    /// C tile origin, row stride `ldc`.
    pub c: *mut f32,
    pub ldc: usize,
    /// Valid columns of this tile, `1..=panels * NR`.
    pub nr: usize,
    /// `true`: continue the chains from C (a later K slice); `false`: start at 0.
    pub accumulate: bool,
    /// Applied to the finished sums (only on the last K slice; `Epi::None` otherwise).
    pub epi: Epi,
    /// The C tile the driver runs next (prefetched into L1 during this tile's K
    /// loop, so its load in the next tile hits), or null. Never dereferenced.
    pub c_next: *const f32,
}

/// One K step of a tile: `W` vector loads of B, `M` broadcasts of A (row `r` at
/// `a + r * rs`), `M x W` FMAs. A plain function, not a closure: closures do not
/// reliably inherit the caller's target features, and one that was not inlined
/// made every edge tile 6x slower (measured).
#[inline(always)]
unsafe fn k_step<S: Simd, const M: usize, const W: usize, const NV: usize>(
    acc: &mut [[S::V; W]; M],
    a: *const f32,
    rs: usize,
    b: *const f32,
    pstride: usize,
    pf_b: usize,
) {
    if pf_b > 0 {
        // One hint per 64-byte line of each panel's row of this K step.
        for p in 0..W / NV {
            for l in 0..(NV * S::LANES * 4).div_ceil(64) {
                prefetch_l1(b.wrapping_add(p * pstride + pf_b + l * 16));
                prefetch_l2(b.wrapping_add(p * pstride + SKINNY_PF_L2_FACTOR * pf_b + l * 16));
            }
        }
    }
    let mut bv = [S::zero(); W];
    for v in 0..W {
        bv[v] = S::load(b.add((v / NV) * pstride + (v % NV) * S::LANES));
    }
    for r in 0..M {
        let ar = S::splat(*a.add(r * rs));
        for v in 0..W {
            acc[r][v] = S::fma(ar, bv[v], acc[r][v]);
        }
    }
}

/// One register-blocked tile: `M` rows x `W` vectors of `S::LANES` columns, the `W`
/// vectors spread over `W / NV` B panels of `NV` vectors each (`W = NV`: one panel,
/// the blocked path; `W = 2·NV, 4·NV`: the skinny path's wider tiles, so that even
/// one row has >= 8 independent accumulators to cover the FMA latency).
///
/// `PS` is the packed-A panel stride (`MR`) or 0 for unpacked A: making it a
/// constant lets the packed path address A with immediate offsets.
///
/// # Safety
/// The ISA of `S` is available; all pointers in `t` are valid for the tile
/// (`M` rows of A over `kc`, `kc * NV * LANES` floats of each B panel, `M` rows x
/// `nr` columns of C, bias/residual for `nr` columns x `M` rows).
#[inline(always)]
pub(crate) unsafe fn ukernel<
    S: Simd,
    const M: usize,
    const W: usize,
    const NV: usize,
    const PS: usize,
>(
    t: &Tile,
) {
    // Start the chains: from C (later K slice) or from +0.0. Lanes past `nr` start
    // at 0 and are never stored.
    let mut acc = [[S::zero(); W]; M];
    if t.accumulate {
        for r in 0..M {
            let crow = t.c.add(r * t.ldc);
            for v in 0..W {
                let col = v * S::LANES;
                if col < t.nr {
                    acc[r][v] = S::load_n(crow.add(col), (t.nr - col).min(S::LANES));
                }
            }
        }
    }
    // Prefetch the next tile's C rows (one hint per 64-byte line).
    if !t.c_next.is_null() {
        let lines = (W * S::LANES * 4).div_ceil(64);
        for r in 0..M {
            for l in 0..lines {
                prefetch_l1(t.c_next.wrapping_add(r * t.ldc + l * 16));
            }
        }
    }
    let mut a = t.a;
    let mut b = t.b;
    let (rs, cs) = if PS > 0 { (1, PS) } else { (t.rs_a, 1) };
    // Unrolled by UNROLL (fewer pointer/loop uops competing with the FMAs for ports
    // 0 and 5); the remainder runs one step at a time. Same order either way.
    let bstep = NV * S::LANES;
    let mut kk = t.kc;
    // In-place A with many rows: LLVM hoists the unrolled broadcasts of each row
    // (adjacent addresses) and spills them (measured 60% of peak at 12 rows); the
    // packed panel and short tiles unroll cleanly.
    let unroll = if PS > 0 || M <= UNROLL_MAX_ROWS_IN_PLACE {
        UNROLL
    } else {
        1
    };
    while unroll > 1 && kk >= UNROLL {
        for u in 0..UNROLL {
            k_step::<S, M, W, NV>(
                &mut acc,
                a.add(u * cs),
                rs,
                b.add(u * bstep),
                t.pstride,
                t.pf_b,
            );
        }
        a = a.add(UNROLL * cs);
        b = b.add(UNROLL * bstep);
        kk -= UNROLL;
    }
    while kk > 0 {
        k_step::<S, M, W, NV>(&mut acc, a, rs, b, t.pstride, t.pf_b);
        a = a.add(cs);
        b = b.add(bstep);
        kk -= 1;
    }

    // Epilogue on the hot tile: bias / GELU / residual, then (masked at the right
    // edge) store.
    for r in 0..M {
        for v in 0..W {
            let col = v * S::LANES;
            if col >= t.nr {
                break;
            }
            finish::<S>(
                acc[r][v],
                t.epi,
                r,
                col,
                (t.nr - col).min(S::LANES),
                t.c,
                t.ldc,
            );
        }
    }
}

/// The epilogue of one vector of finished sums: row `r`, columns `col..col + n` of the
/// tile at `c` (row stride `ldc`, `epi` at the tile origin): the one vector epilogue
/// ([`Epi::apply`]: `+bias`, then GELU or `+residual`), then a store masked to `n`
/// lanes. Every tile shape ends through here, so the epilogue's operations (and so its
/// bits) are the same on every path.
#[inline(always)]
pub(crate) unsafe fn finish<S: Simd>(
    x: S::V,
    epi: Epi,
    r: usize,
    col: usize,
    n: usize,
    c: *mut f32,
    ldc: usize,
) {
    let x = epi.apply::<S>(x, r, col, n);
    S::store_n(c.add(r * ldc + col), x, n);
}

/// K steps per iteration of the microkernel's main loop.
const UNROLL: usize = 4;
const UNROLL_MAX_ROWS_IN_PLACE: usize = 8;

/// A microkernel family for one ISA (see the table in `gemm/mod.rs`).
pub(crate) trait Kernel {
    const NAME: &'static str;
    const MR: usize;
    const NR: usize;
    /// Largest KC: the B micro-panel `KC x NR` must fit half the L1D; the actual KC
    /// comes from the detected L1D (`Blocking`), capped by this.
    const KC_MAX: usize;
    /// The skinny path's software prefetch distance along a B panel, in floats (see
    /// [`SKINNY_PF_STEPS`]): 32 K steps unless a kernel measured better.
    const SKINNY_PF: usize = SKINNY_PF_STEPS * Self::NR;

    /// Runs the `mr`-row, one-panel tile (`1 <= mr <= MR`) on packed A (panel stride MR).
    ///
    /// # Safety
    /// As [`ukernel`].
    unsafe fn tile(mr: usize, t: &Tile);

    /// Widest skinny tile for `mr` rows, in panels (1, 2 or 4).
    fn skinny_panels(mr: usize) -> usize;

    /// Runs the `mr`-row, `np`-panel tile with unpacked A (`np <= skinny_panels(mr)`,
    /// a power of two).
    ///
    /// # Safety
    /// As [`ukernel`].
    unsafe fn skinny_tile(mr: usize, np: usize, t: &Tile);
}

/// Implements [`Kernel::tile`], [`Kernel::skinny_panels`] and
/// [`Kernel::skinny_tile`] as jump tables over the row count (and panel count), so
/// every shape gets its own fully unrolled register tile (no wasted FMAs on edge
/// rows). `[(rows, [panels...]), ...]` lists the skinny tiles per row count, widest
/// first.
macro_rules! tile_dispatch {
    ($simd:ty, $nv:literal, $mr:literal, [$(($m:literal, [$np0:literal $(, $np:literal)*])),*]) => {
        #[inline(always)]
        unsafe fn tile(mr: usize, t: &$crate::gemm::kernel::Tile) {
            use $crate::gemm::kernel::ukernel;
            match mr {
                $(
                    $m => ukernel::<$simd, $m, $nv, $nv, $mr>(t),
                )*
                _ => unreachable!("tile rows {mr} out of 1..={}", $mr),
            }
        }

        fn skinny_panels(mr: usize) -> usize {
            match mr {
                $($m => $np0,)*
                _ => 1,
            }
        }

        #[inline(always)]
        unsafe fn skinny_tile(mr: usize, np: usize, t: &$crate::gemm::kernel::Tile) {
            use $crate::gemm::kernel::ukernel;
            match (mr, np) {
                $(
                    ($m, $np0) => ukernel::<$simd, $m, { $np0 * $nv }, $nv, 0>(t),
                    $(($m, $np) => ukernel::<$simd, $m, { $np * $nv }, $nv, 0>(t),)*
                )*
                _ => unreachable!("skinny tile {mr} x {np} panels"),
            }
        }
    };
}
pub(crate) use tile_dispatch;

/// A GEMM call with raw pointers, validated by the caller:
/// `C[m, n] (row stride ldc) = epi(A[m, k] (row stride lda) · Wᵀ)` where W is packed
/// (`b`: `ceil(n / NR)` panels of `[k][NR]`, panel stride `ldb = k_total * NR`
/// floats, already offset to the first panel and K index of this call).
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    pub a: *const f32,
    pub lda: usize,
    pub m: usize,
    pub b: *const f32,
    pub n: usize,
    pub k: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub epi: Epi,
    /// Scratch for packed A: at least `MC * KC` floats (MC is a multiple of MR).
    pub apack: *mut f32,
}

/// Which driver runs a GEMM. Every path computes bitwise identical results (the
/// invariant at the top of this file); the choice is only about speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmPath {
    /// Skinny for `m <= gemm::AUTO_SKINNY_MAX_M`, blocked otherwise.
    Auto,
    /// BLIS-style blocked loops with packed A (large M).
    Blocked,
    /// Whole-K register tiles, A in place, wide tiles for few rows (small M: the
    /// weight stream is the limit).
    Skinny,
}

/// Cache blocking of one call, from the detected cache sizes and the shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocking {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
}

impl Blocking {
    /// - KC: the B micro-panel `KC x NR` fills at most half the L1D (the other half
    ///   for the streamed A micro-panel and the C tile), capped at `KC_MAX`, then
    ///   balanced so K splits into equal slices (K = 1536 -> 8 x 192, not 7 x 208 + 64).
    /// - NC: the B block `KC x NC` fills at most half the L2 (reused by every MC
    ///   block from L2), balanced over N in whole panels.
    /// - MC: the A block `MC x KC` (reused across the NR sweep) and the C block
    ///   `MC x NC` it produces share 3/4 of the L2 with the B block, balanced over M
    ///   in whole MR tiles. (Counting C matters at large M: with MC from A alone,
    ///   T = 4096 streamed 2.7 MB of C per block through the 2 MB L2 and evicted B.)
    pub(crate) fn new(
        mr: usize,
        nr: usize,
        kc_max: usize,
        m: usize,
        n: usize,
        k: usize,
    ) -> Blocking {
        let c = crate::cache::cache_sizes();
        let kc_cap = (c.l1d / 2 / (nr * 4)).clamp(16, kc_max);
        let kc = k.div_ceil(k.div_ceil(kc_cap).max(1)).max(1);
        let nc_cap = ((c.l2 / 2 / (kc * 4)) / nr).max(1) * nr;
        let panels = n.div_ceil(nr).max(1);
        let nblocks = panels.div_ceil(nc_cap / nr);
        let nc = panels.div_ceil(nblocks) * nr;
        // L2 budget (3/4 of it): the B block, plus per row of the A block its KC
        // floats and the NC floats of C it writes while the NR sweep runs.
        let budget = (c.l2 / 4 * 3).saturating_sub(kc * nc * 4);
        let mc_cap = ((budget / ((kc + nc) * 4)) / mr).max(4) * mr;
        let mblocks = m.div_ceil(mc_cap).max(1);
        let mc = m.div_ceil(mblocks).div_ceil(mr) * mr;
        Blocking { mc, kc, nc }
    }
}

/// Packs `A[mc, kc]` (row stride `lda`) into MR-row panels `[kc][MR]`, zero-padding
/// the last panel's missing rows. K-outer so the stores are sequential and the
/// `MR` row reads are independent streams.
#[inline(always)]
unsafe fn pack_a<const MR: usize>(a: *const f32, lda: usize, mc: usize, kc: usize, dst: *mut f32) {
    let panels = mc.div_ceil(MR);
    for p in 0..panels {
        let d = dst.add(p * MR * kc);
        let rows = MR.min(mc - p * MR);
        if rows == MR {
            let mut src = [std::ptr::null::<f32>(); MR];
            for r in 0..MR {
                src[r] = a.add((p * MR + r) * lda);
            }
            for q in 0..kc {
                for r in 0..MR {
                    *d.add(q * MR + r) = *src[r].add(q);
                }
            }
        } else {
            for q in 0..kc {
                for r in 0..MR {
                    *d.add(q * MR + r) = if r < rows {
                        *a.add((p * MR + r) * lda + q)
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// The blocked loop nest around the microkernel (large M). Rows outermost: one MC
/// block of A and its `MC x N` block of C stay in L2 through all K slices, while
/// the prepacked W (a few MB) streams from L3 once per MC block (measured: with
/// the BLIS order `jc, pc, ic` at T = 4096, C went to L3 between K slices and the
/// model shapes lost 8-13 points of peak).
///
/// ```text
/// for ic in 0..m step MC        // A block rows; C block MC x N (L2)
///   for jc in 0..n step NC      // B block KC x NC of the prepacked W (L2)
///     for pc in 0..k step KC    // K slice: first slice starts the chains, later continue
///       pack A block MC x KC into MR panels (L2)
///       for jr in jc.. step NR  // B micro-panel KC x NR (L1, reused over ir)
///         for ir in ic.. step MR
///           microkernel(MR x NR tile)   // epilogue fused on the last K slice
/// ```
///
/// # Safety
/// ISA of `K` available; `g` valid (the safe wrappers check every length); `k >= 1`;
/// `g.apack` holds `bl.mc * bl.kc` floats.
#[inline(always)]
pub(crate) unsafe fn blocked<K: Kernel, const MR: usize>(g: &Raw, bl: Blocking) {
    debug_assert_eq!(MR, K::MR);
    let ldb = g.k * K::NR;
    let mut ic = 0;
    while ic < g.m {
        let mc = bl.mc.min(g.m - ic);
        let mut jc = 0;
        while jc < g.n {
            let nc = bl.nc.min(g.n - jc);
            let mut pc = 0;
            while pc < g.k {
                let kc = bl.kc.min(g.k - pc);
                let first = pc == 0;
                let last = pc + kc == g.k;
                pack_a::<MR>(g.a.add(ic * g.lda + pc), g.lda, mc, kc, g.apack);
                let mut jr = jc;
                while jr < jc + nc {
                    let nr = K::NR.min(g.n - jr);
                    // Panel jr/NR, K offset pc: contiguous [kc][NR].
                    let b = g.b.add((jr / K::NR) * ldb + pc * K::NR);
                    let mut ir = 0;
                    while ir < mc {
                        let mr = MR.min(mc - ir);
                        let c = g.c.add((ic + ir) * g.ldc + jr);
                        let c_next = if ir + MR < mc {
                            c.wrapping_add(MR * g.ldc)
                        } else if jr + K::NR < jc + nc {
                            g.c.wrapping_add(ic * g.ldc + jr + K::NR)
                        } else {
                            std::ptr::null_mut()
                        };
                        let t = Tile {
                            kc,
                            a: g.apack.add((ir / MR) * MR * kc),
                            rs_a: 1,
                            b,
                            pstride: 0,
                            pf_b: 0,
                            c,
                            ldc: g.ldc,
                            nr,
                            accumulate: !first,
                            epi: if last {
                                g.epi.at(ic + ir, jr)
                            } else {
                                Epi::None
                            },
                            c_next,
                        };
                        K::tile(mr, &t);
                        ir += MR;
                    }
                    jr += K::NR;
                }
                pc += kc;
            }
            jc += nc;
        }
        ic += bl.mc;
    }
}

/// Panels per skinny column group: B for a group (`GROUP x k x NR`) stays in L2
/// while every row tile of a small M sweeps it.
const SKINNY_GROUP: usize = 4;

/// Skinny-path software prefetch distance in K steps (x NR floats = 128 B per step
/// on AVX-512): 32 steps = 4 KB ahead per panel, about one DRAM latency of the
/// stream at the rate the FMAs consume it (the AVX2 kernel, 64 B per step, sets its own
/// [`Kernel::SKINNY_PF`]). Only the first row tile of a column
/// group prefetches (later ones find the group in L2), and only tiles of at least
/// `SKINNY_PF_MIN_ROWS` rows. Measured (AVX-512, weights cold from DRAM, T=8):
/// 200-370 us -> 150-270 us on the four model shapes (1.35-1.4x the streaming floor,
/// was 1.6-2.5x); T=1 is already at the floor without it, and its 8 hints per K step
/// on top of 8 loads made the hot (L2-resident) case 2x slower, hence the row floor.
const SKINNY_PF_STEPS: usize = 32;
const SKINNY_PF_MIN_ROWS: usize = 4;
/// With each L1 hint, a second into L2 this many times further ahead (8 KB): L1 software
/// prefetches hold a fill buffer each (about 16 per core), which caps what they alone can
/// keep in flight; the L2 hints run ahead of them. Cold weights (`gemm_probe`, `COLD=1`),
/// AVX-512: T=8 1.25-1.28x -> 1.07-1.12x the streaming floor, T=16 1.53-1.71x ->
/// 1.40-1.49x; AVX2 T=8 1.51-1.57x -> 1.35-1.37x; hot unchanged. 4x and 8x (16, 32 KB)
/// were no better, and an L2 prefetch of the next column group by the second row tile
/// made T=16 slower (171 vs 157 us, QKV).
const SKINNY_PF_L2_FACTOR: usize = 2;

/// The skinny loop nest (small M): no K slicing and no A packing.
///
/// ```text
/// for jg in 0..n step GROUP*NR      // B column group (L2 after the first row tile)
///   for ir in 0..m step MR          // row tile, A rows read in place
///     for jr in jg.. step np*NR     // widest tile for these rows that fits the group
///       microkernel(mr x np*NR, all of K)   // chains stay in registers; epilogue
/// ```
/// With `m <= MR` every weight is read exactly once, in memory order within each
/// panel: the call streams W at (close to) memory bandwidth.
///
/// # Safety
/// As [`blocked`].
#[inline(always)]
pub(crate) unsafe fn skinny<K: Kernel, const MR: usize>(g: &Raw) {
    let rows = skinny_row_block(g.m, g.k, MR);
    let mut r0 = 0;
    while r0 < g.m {
        let m = rows.min(g.m - r0);
        let block = Raw {
            a: g.a.add(r0 * g.lda),
            m,
            c: g.c.add(r0 * g.ldc),
            epi: g.epi.at(r0, 0),
            ..*g
        };
        skinny_rows::<K, MR>(&block);
        r0 += m;
    }
}

/// Rows per block of the skinny path: all `m` unless A's rows are many and short. Each
/// column group re-reads the whole of A, so at large M (A beyond L2) every group
/// streamed A from L3; row blocks of half the L2 keep A in L2 for all the groups while
/// the weights are re-read once per block (cheap only when a block holds many rows:
/// at least `SKINNY_ROW_BLOCK_MIN` rows, i.e. short K: the K = 384 shapes get blocks of
/// up to 672 rows on a 2 MB L2, FFN down (K = 1536) none). Measured (`gemm_probe
/// 1024,2048,4096`, two binaries interleaved, three rounds, GFLOP/s): FFN up T = 1024
/// 148.6-148.9 -> 151.2-157.6, T = 2048 148.0-151.1 -> 152.4-156.8, QKV T = 2048
/// 152.3-154.7 -> 158.7-167.8; T = 4096 within noise. Engine f32 32 x 128, one thread:
/// 1235-1252 -> 1194-1219 ms. (Session 3 tried blocks of 256 KB of A, which gave FFN
/// down 42-row blocks and made it 5% slower: hence the row floor.)
fn skinny_row_block(m: usize, k: usize, mr: usize) -> usize {
    let cap = crate::cache::cache_sizes().l2 / 2 / (k.max(1) * 4) / mr * mr;
    if cap < SKINNY_ROW_BLOCK_MIN || m <= cap {
        return m.max(1);
    }
    let blocks = m.div_ceil(cap);
    m.div_ceil(blocks).div_ceil(mr) * mr
}

const SKINNY_ROW_BLOCK_MIN: usize = 256;

/// One row block of [`skinny`].
#[inline(always)]
unsafe fn skinny_rows<K: Kernel, const MR: usize>(g: &Raw) {
    let ldb = g.k * K::NR;
    let panels = g.n.div_ceil(K::NR);
    let mut pg = 0;
    while pg < panels {
        let gp = SKINNY_GROUP.min(panels - pg);
        let mut ir = 0;
        while ir < g.m {
            let mr = MR.min(g.m - ir);
            let mut p = pg;
            while p < pg + gp {
                let mut np = K::skinny_panels(mr);
                while np > pg + gp - p {
                    np /= 2;
                }
                let jr = p * K::NR;
                let t = Tile {
                    kc: g.k,
                    a: g.a.add(ir * g.lda),
                    rs_a: g.lda,
                    b: g.b.add(p * ldb),
                    pstride: ldb,
                    pf_b: if ir == 0 && mr >= SKINNY_PF_MIN_ROWS {
                        K::SKINNY_PF
                    } else {
                        0
                    },
                    c: g.c.add(ir * g.ldc + jr),
                    ldc: g.ldc,
                    nr: (np * K::NR).min(g.n - jr),
                    accumulate: false,
                    epi: g.epi.at(ir, jr),
                    c_next: std::ptr::null(),
                };
                K::skinny_tile(mr, np, &t);
                p += np;
            }
            ir += MR;
        }
        pg += gp;
    }
}
