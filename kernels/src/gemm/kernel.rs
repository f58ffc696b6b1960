//! The generic microkernel and the blocked driver (the five loops around it).
//! See the contract in `gemm/mod.rs`.

use crate::math;
use crate::simd::Simd;

/// Epilogue with raw pointers, already offset to the tile's first row/column.
#[derive(Clone, Copy)]
pub(crate) enum Epi {
    None,
    /// `bias[j]` for the tile's columns.
    Bias(*const f32),
    BiasGelu(*const f32),
    /// bias, residual tile origin, residual row stride.
    BiasResidual(*const f32, *const f32, usize),
}

impl Epi {
    /// The epilogue for the tile at (row `i`, column `j`) of C.
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> Epi {
        match self {
            Epi::None => Epi::None,
            Epi::Bias(b) => Epi::Bias(b.add(j)),
            Epi::BiasGelu(b) => Epi::BiasGelu(b.add(j)),
            Epi::BiasResidual(b, r, ldr) => Epi::BiasResidual(b.add(j), r.add(i * ldr + j), ldr),
        }
    }
}

/// Arguments of one microkernel call (one MR x NR tile of C, one KC slice of K).
#[derive(Clone, Copy)]
pub(crate) struct Tile {
    /// Depth of this call (`kc`), >= 1.
    pub kc: usize,
    /// A micro-panel: packed (`[kc][MR]`) or, when unpacked, row `r`, column `p` at
    /// `a + r * rs_a + p`.
    pub a: *const f32,
    pub rs_a: usize,
    /// B micro-panel `[kc][NR]`, zero-padded to NR columns.
    pub b: *const f32,
    /// C tile origin, row stride `ldc`.
    pub c: *mut f32,
    pub ldc: usize,
    /// Valid columns of this tile, `1..=NR`.
    pub nr: usize,
    /// `true`: C += A·B (a later K slice); `false`: C = A·B (first K slice).
    pub accumulate: bool,
    /// Applied to the finished sums (only on the last K slice; `Epi::None` otherwise).
    pub epi: Epi,
}

/// One register-blocked tile: `M` rows (`M <= MR`) x `NV` vectors of `S::LANES`.
///
/// `PS` is the packed-A panel stride (`MR`) or 0 for unpacked A: making it a
/// constant lets the packed path address A with immediate offsets.
///
/// # Safety
/// The ISA of `S` is available; all pointers in `t` are valid for the tile
/// (`M` rows of A over `kc`, `kc * NV * LANES` floats of B, `M` rows x `nr` columns
/// of C, bias/residual for `nr` columns x `M` rows).
#[inline(always)]
pub(crate) unsafe fn ukernel<S: Simd, const M: usize, const NV: usize, const PS: usize>(t: &Tile) {
    let mut acc = [[S::zero(); NV]; M];
    let mut a = t.a;
    let mut b = t.b;
    let (rs, cs) = if PS > 0 { (1, PS) } else { (t.rs_a, 1) };
    for _ in 0..t.kc {
        let mut bv = [S::zero(); NV];
        for v in 0..NV {
            bv[v] = S::load(b.add(v * S::LANES));
        }
        for r in 0..M {
            let ar = S::splat(*a.add(r * rs));
            for v in 0..NV {
                acc[r][v] = S::fma(ar, bv[v], acc[r][v]);
            }
        }
        a = a.add(cs);
        b = b.add(NV * S::LANES);
    }

    // Epilogue on the hot tile: accumulate earlier K slices, then bias / GELU /
    // residual, then (masked at the right edge) store.
    for r in 0..M {
        let crow = t.c.add(r * t.ldc);
        for v in 0..NV {
            let col = v * S::LANES;
            if col >= t.nr {
                break;
            }
            let n = (t.nr - col).min(S::LANES);
            let mut x = acc[r][v];
            if t.accumulate {
                x = S::add(x, S::load_n(crow.add(col), n));
            }
            match t.epi {
                Epi::None => {}
                Epi::Bias(bias) => x = S::add(x, S::load_n(bias.add(col), n)),
                Epi::BiasGelu(bias) => {
                    x = math::gelu::<S>(S::add(x, S::load_n(bias.add(col), n)));
                }
                Epi::BiasResidual(bias, res, ldr) => {
                    x = S::add(x, S::load_n(bias.add(col), n));
                    x = S::add(x, S::load_n(res.add(r * ldr + col), n));
                }
            }
            S::store_n(crow.add(col), x, n);
        }
    }
}

/// A microkernel family for one ISA plus its cache blocking (see the table in
/// `gemm/mod.rs`).
pub(crate) trait Kernel {
    const NAME: &'static str;
    const MR: usize;
    const NR: usize;
    const MC: usize;
    const KC: usize;
    const NC: usize;

    /// Runs the `mr`-row tile (`1 <= mr <= MR`), packed (`packed`: A panel stride MR)
    /// or unpacked A.
    ///
    /// # Safety
    /// As [`ukernel`].
    unsafe fn tile(mr: usize, packed: bool, t: &Tile);
}

/// Implements [`Kernel::tile`] as a jump table over `mr`, so every row count gets
/// its own fully unrolled register tile (no wasted FMAs on edge rows).
macro_rules! tile_dispatch {
    ($simd:ty, $nv:literal, $mr:literal, [$($m:literal),*]) => {
        #[inline(always)]
        unsafe fn tile(mr: usize, packed: bool, t: &$crate::gemm::kernel::Tile) {
            use $crate::gemm::kernel::ukernel;
            match (mr, packed) {
                $(
                    ($m, true) => ukernel::<$simd, $m, $nv, $mr>(t),
                    ($m, false) => ukernel::<$simd, $m, $nv, 0>(t),
                )*
                _ => unreachable!("tile rows {mr} out of 1..={}", $mr),
            }
        }
    };
}
pub(crate) use tile_dispatch;

/// A GEMM call with raw pointers, validated by the caller:
/// `C[m, n] (row stride ldc) = epi(A[m, k] (row stride lda) · Wᵀ)` where W is packed
/// (`b`: `ceil(n / NR)` panels of `[k][NR]`).
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

/// Packs `A[mc, kc]` (row stride `lda`) into MR-row panels `[kc][MR]`, zero-padding
/// the last panel's missing rows.
#[inline(always)]
unsafe fn pack_a<const MR: usize>(a: *const f32, lda: usize, mc: usize, kc: usize, dst: *mut f32) {
    let panels = mc.div_ceil(MR);
    for p in 0..panels {
        let d = dst.add(p * MR * kc);
        for r in 0..MR {
            let row = p * MR + r;
            if row < mc {
                let src = a.add(row * lda);
                for q in 0..kc {
                    *d.add(q * MR + r) = *src.add(q);
                }
            } else {
                for q in 0..kc {
                    *d.add(q * MR + r) = 0.0;
                }
            }
        }
    }
}

/// The BLIS loop nest around the microkernel:
///
/// ```text
/// for jc in 0..n step NC        // B block (KC x NC of the prepacked W; L3)
///   for pc in 0..k step KC      // K slice: first slice stores, later ones accumulate
///     for ic in 0..m step MC    // pack A block MC x KC into MR panels (L2)
///       for jr in jc.. step NR  // B micro-panel KC x NR (L1, reused over ir)
///         for ir in ic.. step MR
///           microkernel(MR x NR tile)   // epilogue fused on the last K slice
/// ```
/// For `m <= MR` A is read in place (one row panel; packing would not be reused).
///
/// # Safety
/// ISA of `K` available; `g` valid (the safe wrappers check every length); `k >= 1`.
#[inline(always)]
pub(crate) unsafe fn driver<K: Kernel, const MR: usize>(g: &Raw) {
    debug_assert_eq!(MR, K::MR);
    let pack = g.m > MR;
    let mut jc = 0;
    while jc < g.n {
        let nc = K::NC.min(g.n - jc);
        let mut pc = 0;
        while pc < g.k {
            let kc = K::KC.min(g.k - pc);
            let first = pc == 0;
            let last = pc + kc == g.k;
            let mut ic = 0;
            while ic < g.m {
                let mc = K::MC.min(g.m - ic);
                if pack {
                    pack_a::<MR>(g.a.add(ic * g.lda + pc), g.lda, mc, kc, g.apack);
                }
                let mut jr = jc;
                while jr < jc + nc {
                    let nr = K::NR.min(g.n - jr);
                    // Panel jr/NR, K offset pc: contiguous [kc][NR].
                    let b = g.b.add((jr / K::NR) * g.k * K::NR + pc * K::NR);
                    let mut ir = 0;
                    while ir < mc {
                        let mr = MR.min(mc - ir);
                        let (a, rs_a) = if pack {
                            (g.apack.add((ir / MR) * MR * kc) as *const f32, 1)
                        } else {
                            (g.a.add((ic + ir) * g.lda + pc), g.lda)
                        };
                        let t = Tile {
                            kc,
                            a,
                            rs_a,
                            b,
                            c: g.c.add((ic + ir) * g.ldc + jr),
                            ldc: g.ldc,
                            nr,
                            accumulate: !first,
                            epi: if last {
                                g.epi.at(ic + ir, jr)
                            } else {
                                Epi::None
                            },
                        };
                        K::tile(mr, pack, &t);
                        ir += MR;
                    }
                    jr += K::NR;
                }
                ic += K::MC;
            }
            pc += kc;
        }
        jc += nc;
    }
}
