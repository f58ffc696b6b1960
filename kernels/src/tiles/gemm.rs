//! The AMX GEMM loop, written once over [`TileUnit`] and the dot-product kind ([`Dp`]:
//! `tdpbusd` or `tdpbf16ps`), for either backend.
//!
//! Tile plan (palette 1, all 8 tiles): a 32 x 32 block of C is 2 x 2 accumulator tiles
//! `tmm0..tmm3` (`C[i][j]` = `tmm(2i + j)`, 16 rows x 16 i32 / f32), `tmm4`, `tmm5` the two
//! A tiles (16 rows x 64 bytes: 64 u8 or 32 bf16 of K), `tmm6`, `tmm7` the two B tiles
//! (16 rows of K groups x 16 columns x 4 bytes). Per K step: 4 tile loads feed 4
//! `tdp*` (each 16 x 16 x 64 int8 MACs or 16 x 16 x 32 bf16 ones).
//!
//! Operands: A rows of `lda` bytes (K padded with zeros to whole 64-byte tiles: the
//! callers copy or convert A into such a scratch); B packed in 16-column panels, each
//! `[kblocks][16 K-rows][16 columns][4 bytes]` (the VNNI / pair layout of NR = 16 with
//! K padded with zeros to whole tiles): panel `p` at byte `p · pstride`, tile `kb` of it
//! at `+ kb · 1024`, row stride 64.
//!
//! Edge tiles: a block of fewer than 32 rows or columns uses a config with shorter
//! tiles (`rows < 16`, `colsb < 64`) and skips the tiles it does not need; the config
//! is reloaded only when the block shape changes (the last row block, the last panel
//! pair). After the K loop the accumulators are stored to a 32 x 32 scratch and
//! `finish` applies the epilogue to the block's rows and columns.

use super::{u32_bytes_mut, TileConfig, TileFault, TileUnit};

/// Rows and columns of one accumulator tile.
pub(crate) const T16: usize = 16;
/// Bytes per A tile row = K bytes per step.
pub(crate) const KSTEP: usize = 64;
/// Bytes per B tile (16 rows x 64 bytes): the panel stride per K step.
pub(crate) const BTILE: usize = 1024;
/// The C block edge (2 x 2 tiles).
pub(crate) const CB: usize = 32;

/// The tile dot product of one GEMM kind.
pub(crate) trait Dp {
    fn dp<T: TileUnit, const C: usize, const A: usize, const B: usize>(
        t: &mut T,
    ) -> Result<(), TileFault>;
}

/// `tdpbusd`: u8 x s8 -> i32.
pub(crate) struct Int8;
/// `tdpbf16ps`: bf16 pairs -> f32.
pub(crate) struct Bf16;

impl Dp for Int8 {
    #[inline(always)]
    fn dp<T: TileUnit, const C: usize, const A: usize, const B: usize>(
        t: &mut T,
    ) -> Result<(), TileFault> {
        t.dpbusd::<C, A, B>()
    }
}

impl Dp for Bf16 {
    #[inline(always)]
    fn dp<T: TileUnit, const C: usize, const A: usize, const B: usize>(
        t: &mut T,
    ) -> Result<(), TileFault> {
        t.dpbf16ps::<C, A, B>()
    }
}

/// The operands of one tile GEMM (byte views; see the module docs).
pub(crate) struct Operands<'a> {
    pub a: &'a [u8],
    /// A row stride in bytes (a multiple of 64, ≥ `kblocks · 64`).
    pub lda: usize,
    pub m: usize,
    /// Packed panels (first panel of the call).
    pub b: &'a [u8],
    /// Bytes per panel (`kblocks · 1024`).
    pub pstride: usize,
    pub kblocks: usize,
    /// Columns computed (from the first panel).
    pub n: usize,
}

/// The config of a block: C tiles `r0 / r1` rows x `c0 / c1` columns (0: absent).
fn block_config(r0: usize, r1: usize, c0: usize, c1: usize) -> TileConfig {
    let mut cfg = TileConfig::default()
        .with(0, r0, 4 * c0)
        .with(4, r0, KSTEP)
        .with(6, T16, 4 * c0);
    if c1 > 0 {
        cfg = cfg.with(1, r0, 4 * c1).with(7, T16, 4 * c1);
    }
    if r1 > 0 {
        cfg = cfg.with(2, r1, 4 * c0).with(5, r1, KSTEP);
        if c1 > 0 {
            cfg = cfg.with(3, r1, 4 * c1);
        }
    }
    cfg
}

/// Rows of A put into the per-thread scratch per pass of [`run_rows`] (2 C block rows).
pub(crate) const MC: usize = 64;

thread_local! {
    /// Per-thread A scratch of [`run_rows`] (`MC` rows, as u32 for alignment), grown on
    /// first use.
    static ABUF: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The row loop both AMX GEMMs share: `m` rows of A, `MC` at a time, each row written by
/// `fill(i, row)` into a per-thread scratch row of `row_bytes` bytes (a multiple of
/// [`KSTEP`]: the caller converts or copies its row and zeroes the pad), then [`run`] over
/// the panels `b` (`row_bytes / KSTEP` tiles deep, `n` columns); `finish(block, i, rows,
/// j0, cols)` as in [`run`] but with `i` a row of the whole call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_rows<T: TileUnit, D: Dp>(
    t: &mut T,
    m: usize,
    row_bytes: usize,
    b: &[u8],
    n: usize,
    mut fill: impl FnMut(usize, &mut [u8]),
    mut finish: impl FnMut(&[u32], usize, usize, usize, usize),
) -> Result<(), TileFault> {
    debug_assert_eq!(row_bytes % KSTEP, 0);
    let kblocks = row_bytes / KSTEP;
    ABUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let words = MC * row_bytes / 4;
        if buf.len() < words {
            buf.resize(words, 0);
        }
        let mut i0 = 0;
        while i0 < m {
            let mb = (m - i0).min(MC);
            let s = &mut u32_bytes_mut(&mut buf[..words])[..mb * row_bytes];
            // By index, not `chunks_exact_mut`: at k = 0 the rows are empty slices (the
            // blocks below then multiply nothing and finish zero accumulators).
            for r in 0..mb {
                fill(i0 + r, &mut s[r * row_bytes..(r + 1) * row_bytes]);
            }
            let ops = Operands {
                a: s,
                lda: row_bytes,
                m: mb,
                b,
                pstride: kblocks * BTILE,
                kblocks,
                n,
            };
            run::<T, D>(t, &ops, |cb, bi, rows, j0, cols| {
                finish(cb, i0 + bi, rows, j0, cols)
            })?;
            i0 += mb;
        }
        Ok(())
    })
}

/// `C = A · B` block by block; `finish(block, i0, rows, j0, cols)` gets each finished
/// block (32 x 32 u32: i32 or f32 bits, row stride 32; rows `0..rows`, columns
/// `0..cols` valid) at C's row `i0`, column `j0`. Releases the tiles at the end (also
/// after a fault).
pub(crate) fn run<T: TileUnit, D: Dp>(
    t: &mut T,
    g: &Operands,
    mut finish: impl FnMut(&[u32], usize, usize, usize, usize),
) -> Result<(), TileFault> {
    let r = blocks::<T, D>(t, g, &mut finish);
    t.release();
    r
}

fn blocks<T: TileUnit, D: Dp>(
    t: &mut T,
    g: &Operands,
    finish: &mut impl FnMut(&[u32], usize, usize, usize, usize),
) -> Result<(), TileFault> {
    let np = g.n.div_ceil(T16);
    let mut cblock = [0u32; CB * CB];
    let mut cur: Option<TileConfig> = None;
    let mut i0 = 0;
    while i0 < g.m {
        let r0 = (g.m - i0).min(T16);
        let r1 = (g.m - i0 - r0).min(T16);
        let mut p = 0;
        while p < np {
            let c0 = (g.n - p * T16).min(T16);
            let c1 = if p + 1 < np {
                (g.n - (p + 1) * T16).min(T16)
            } else {
                0
            };
            let cfg = block_config(r0, r1, c0, c1);
            if cur != Some(cfg) {
                // ldtilecfg zeroes the tiles: only between blocks.
                t.configure(&cfg)?;
                cur = Some(cfg);
            }
            t.zero::<0>()?;
            if c1 > 0 {
                t.zero::<1>()?;
            }
            if r1 > 0 {
                t.zero::<2>()?;
                if c1 > 0 {
                    t.zero::<3>()?;
                }
            }
            let a0 = i0 * g.lda;
            let b0 = p * g.pstride;
            for kb in 0..g.kblocks {
                t.load::<4>(g.a, a0 + kb * KSTEP, g.lda)?;
                t.load::<6>(g.b, b0 + kb * BTILE, KSTEP)?;
                D::dp::<T, 0, 4, 6>(t)?;
                if c1 > 0 {
                    t.load::<7>(g.b, b0 + g.pstride + kb * BTILE, KSTEP)?;
                    D::dp::<T, 1, 4, 7>(t)?;
                }
                if r1 > 0 {
                    t.load::<5>(g.a, a0 + T16 * g.lda + kb * KSTEP, g.lda)?;
                    D::dp::<T, 2, 5, 6>(t)?;
                    if c1 > 0 {
                        D::dp::<T, 3, 5, 7>(t)?;
                    }
                }
            }
            let cb = u32_bytes_mut(&mut cblock);
            let row = CB * 4;
            t.store::<0>(cb, 0, row)?;
            if c1 > 0 {
                t.store::<1>(cb, T16 * 4, row)?;
            }
            if r1 > 0 {
                t.store::<2>(cb, T16 * row, row)?;
                if c1 > 0 {
                    t.store::<3>(cb, T16 * row + T16 * 4, row)?;
                }
            }
            finish(&cblock, i0, r0 + r1, p * T16, c0 + c1);
            p += 2;
        }
        i0 += r0 + r1;
    }
    Ok(())
}
