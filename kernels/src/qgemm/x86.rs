//! x86-64 int8 kernels: one generic microkernel + driver written against [`QDot`]
//! (the 4-way u8 x s8 dot product of one ISA), instantiated for AVX-512 VNNI,
//! AVX-VNNI and AVX2 inside `#[target_feature]` wrappers; and the row quantizers.
//! Layouts and tile reasoning: `qgemm/mod.rs`.

use super::reference::InputMode;
use super::{padded_k, QIsaKind, QuantizedMatrix};
use crate::epilogue::{Epi, Epilogue};
use crate::simd::avx2::Avx2 as F256;
use crate::simd::avx512::Avx512 as F512;
use crate::simd::Simd;
use std::arch::x86_64::*;

/// Row block of the driver: all panels sweep the block's `MC x kp` A rows
/// (≤ 72 KB) while its `MC x n` C rows (≤ 295 KB at n = 1536) stay in L2.
/// Measured on the dev machine at T = 4096: 48 beats 192 by ~5-10% (C write
/// locality), with T ≤ 128 unchanged (24-48 flat; 96-384 slower). A multiple of
/// every MR (12, 6, 4).
const MC: usize = 48;

/// Where the tile results go.
#[derive(Clone, Copy)]
pub(crate) enum Out {
    /// f32 C `[m, n]` with the dequantization epilogue; the pointer is `s_a: [m]`.
    F32(*mut f32, *const f32),
    /// Raw compensated i32 sums `[m, n]`.
    I32(*mut i32),
}

/// One validated GEMM call.
pub(crate) struct Job {
    a: *const u8,
    /// Row stride of A in bytes (= kp).
    kp: usize,
    m: usize,
    /// Columns computed (from the first panel of `b`).
    n: usize,
    /// Row stride of C (= n for a whole call, the block width for a column range).
    ldc: usize,
    b: *const i8,
    sw: *const f32,
    comp: *const i32,
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
        // Operand pointers at column j0 (in bounds: j0 <= n, validated by callers); the
        // residual's row stride is the matrix's full n.
        let epi = Epi::new(epilogue, b.n, j0);
        Job {
            a: a.as_ptr(),
            kp: b.kp,
            m,
            n: cols.len(),
            ldc,
            b: b.bytes()[(j0 / b.nr) * b.pk * b.nr..].as_ptr(),
            sw: b.scales[j0..].as_ptr(),
            comp: b.comp[j0..].as_ptr(),
            out,
            epi,
        }
    }
}

/// The 4-way u8 x s8 dot product and the i32 vector operations of one ISA.
/// All methods: only on a CPU with the ISA, pointers valid for the lanes touched.
pub(crate) trait QDot {
    /// `LANES` i32 accumulators (one per output column).
    type V: Copy;
    /// The f32 vector type of the same width (epilogue).
    type F: Simd;
    const LANES: usize;
    /// Columns per weight panel: 2 vectors.
    const NR: usize = 2 * Self::LANES;
    const MR: usize;

    unsafe fn zero() -> Self::V;
    /// `LANES · 4` packed weight bytes (4 k of each of `LANES` columns).
    unsafe fn load_b(p: *const i8) -> Self::V;
    /// The 4 activation bytes at `p` broadcast to every lane.
    unsafe fn bcast_a(p: *const u8) -> Self::V;
    /// `acc + Σ_{t<4} a[t]·b[t]` per lane (u8 a, s8 b).
    unsafe fn dot(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    unsafe fn load_i32(p: *const i32) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn to_f32(v: Self::V) -> <Self::F as Simd>::V;
    /// Stores lanes `[0, n)` (`1 <= n <= LANES`).
    unsafe fn store_i32_n(p: *mut i32, v: Self::V, n: usize);
    /// Runs the row tile at `i0` of `r` (`1..=MR`) rows over panels `p0..p1`,
    /// choosing wider tiles for small `r` (the remainder-row jump table).
    /// `pf`: software prefetch along the weight panels (see [`Prefetch`]).
    unsafe fn row_tile(g: &Job, i0: usize, r: usize, p0: usize, p1: usize, pf: Prefetch);
}

/// AVX-512 VNNI: `vpdpbusd zmm`.
pub(crate) struct Vnni512;
/// AVX-VNNI: VEX `vpdpbusd ymm`.
pub(crate) struct Vnni256;
/// AVX2: `vpmaddubsw` + `vpmaddwd(·, 1)` + `vpaddd`.
pub(crate) struct Maddubs256;

impl QDot for Vnni512 {
    type V = __m512i;
    type F = F512;
    const LANES: usize = 16;
    const MR: usize = 12;

    #[inline(always)]
    unsafe fn zero() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const u8) -> __m512i {
        _mm512_set1_epi32(p.cast::<i32>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
        // u8 x s8, 4 products summed into i32 with no intermediate saturation.
        _mm512_dpbusd_epi32(acc, a, b)
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn sub(a: __m512i, b: __m512i) -> __m512i {
        _mm512_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn store_i32_n(p: *mut i32, v: __m512i, n: usize) {
        let mask = if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as u16
        };
        _mm512_mask_storeu_epi32(p, mask, v)
    }
    #[inline(always)]
    unsafe fn row_tile(g: &Job, i0: usize, r: usize, p0: usize, p1: usize, pf: Prefetch) {
        // Remainder rows: 1-2 rows x 4 panels (8-16 acc + 8 B), 3 x 3 (18 acc + 6 B:
        // 3 x 4 would need 24 + 8 + 1 > 32 zmm), 4-6 x 2 (16-24), 7+ x 1.
        match r {
            1 => panels::<Self, 1, 8>(g, i0, p0, p1, pf),
            2 => panels::<Self, 2, 8>(g, i0, p0, p1, pf),
            3 => panels::<Self, 3, 6>(g, i0, p0, p1, pf),
            4 => panels::<Self, 4, 4>(g, i0, p0, p1, pf),
            5 => panels::<Self, 5, 4>(g, i0, p0, p1, pf),
            6 => panels::<Self, 6, 4>(g, i0, p0, p1, pf),
            7 => panels::<Self, 7, 2>(g, i0, p0, p1, pf),
            8 => panels::<Self, 8, 2>(g, i0, p0, p1, pf),
            9 => panels::<Self, 9, 2>(g, i0, p0, p1, pf),
            10 => panels::<Self, 10, 2>(g, i0, p0, p1, pf),
            11 => panels::<Self, 11, 2>(g, i0, p0, p1, pf),
            _ => panels::<Self, 12, 2>(g, i0, p0, p1, pf),
        }
    }
}

impl QDot for Vnni256 {
    type V = __m256i;
    type F = F256;
    const LANES: usize = 8;
    const MR: usize = 6;

    #[inline(always)]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const u8) -> __m256i {
        _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // VEX-encoded vpdpbusd (AVX-VNNI): as the zmm form, no saturation.
        _mm256_dpbusd_avx_epi32(acc, a, b)
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn sub(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn store_i32_n(p: *mut i32, v: __m256i, n: usize) {
        store_i32_n_256(p, v, n)
    }
    #[inline(always)]
    unsafe fn row_tile(g: &Job, i0: usize, r: usize, p0: usize, p1: usize, pf: Prefetch) {
        // 1 row x 4 panels (8 acc), 2-3 x 2 (8-12), 4-6 x 1 (8-12).
        match r {
            1 => panels::<Self, 1, 8>(g, i0, p0, p1, pf),
            2 => panels::<Self, 2, 4>(g, i0, p0, p1, pf),
            3 => panels::<Self, 3, 4>(g, i0, p0, p1, pf),
            4 => panels::<Self, 4, 2>(g, i0, p0, p1, pf),
            5 => panels::<Self, 5, 2>(g, i0, p0, p1, pf),
            _ => panels::<Self, 6, 2>(g, i0, p0, p1, pf),
        }
    }
}

impl QDot for Maddubs256 {
    type V = __m256i;
    type F = F256;
    const LANES: usize = 8;
    const MR: usize = 4;

    #[inline(always)]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn load_b(p: *const i8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn bcast_a(p: *const u8) -> __m256i {
        _mm256_set1_epi32(p.cast::<i32>().read_unaligned())
    }
    #[inline(always)]
    unsafe fn dot(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // vpmaddubsw: sat16(a0·w0 + a1·w1) per byte pair. Exact only because the
        // Avx2 weights are reduced to |w| <= 64: |pair| <= 2·255·64 = 32640 <= 32767
        // (full range 127 would reach 64770 and saturate; see qgemm/mod.rs).
        let pairs = _mm256_maddubs_epi16(a, b);
        // vpmaddwd with 1s: the two i16 pair sums of each column -> one i32 (exact).
        let quads = _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
        _mm256_add_epi32(acc, quads)
    }
    #[inline(always)]
    unsafe fn load_i32(p: *const i32) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn sub(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi32(a, b)
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn store_i32_n(p: *mut i32, v: __m256i, n: usize) {
        store_i32_n_256(p, v, n)
    }
    #[inline(always)]
    unsafe fn row_tile(g: &Job, i0: usize, r: usize, p0: usize, p1: usize, pf: Prefetch) {
        // 1 row x 4 panels (8 acc), 2 x 2 (8), 3-4 x 1 (6-8).
        match r {
            1 => panels::<Self, 1, 8>(g, i0, p0, p1, pf),
            2 => panels::<Self, 2, 4>(g, i0, p0, p1, pf),
            3 => panels::<Self, 3, 2>(g, i0, p0, p1, pf),
            _ => panels::<Self, 4, 2>(g, i0, p0, p1, pf),
        }
    }
}

/// `MASK[8 - n..16 - n]`: `n` leading all-ones lanes.
static MASK: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

#[inline(always)]
unsafe fn store_i32_n_256(p: *mut i32, v: __m256i, n: usize) {
    if n >= 8 {
        _mm256_storeu_si256(p.cast(), v)
    } else {
        let mask = _mm256_loadu_si256(MASK.as_ptr().add(8 - n).cast());
        _mm256_maskstore_epi32(p, mask, v)
    }
}

/// Row tile `i0..i0+R` over panels `p0..p1`: groups of `V / 2` panels with the
/// `R x V` tile, the leftover panels one at a time with `R x 2`.
#[inline(always)]
unsafe fn panels<D: QDot, const R: usize, const V: usize>(
    g: &Job,
    i0: usize,
    p0: usize,
    p1: usize,
    pf: Prefetch,
) {
    let pw = V / 2;
    let mut p = p0;
    while p + pw <= p1 {
        tile::<D, R, V>(g, i0, p, pf);
        p += pw;
    }
    while p < p1 {
        tile::<D, R, 2>(g, i0, p, pf);
        p += 1;
    }
}

/// The microkernel: rows `i0..i0+R` x panels `p..p+V/2` (columns
/// `p·NR .. p·NR + V·LANES`, clipped to n at the store), all of K, then the
/// epilogue from registers.
#[inline(always)]
unsafe fn tile<D: QDot, const R: usize, const V: usize>(
    g: &Job,
    i0: usize,
    p: usize,
    pf: Prefetch,
) {
    let (kp, nr, lanes) = (g.kp, D::NR, D::LANES);
    let pstride = kp * nr; // bytes per panel
    let a0 = g.a.add(i0 * kp);
    let b0 = g.b.add(p * pstride);
    let mut acc = [[D::zero(); V]; R];
    // acc[r][v] += Σ_{t<4} (Aq[i0+r, 4q+t] + 128) · Wq[col(v), 4q+t] for each k-group q.
    let mut q = 0;
    while q < kp {
        // Vector v: panel v/2, half v%2 of its NR·4-byte k-group row.
        if pf.l1 > 0 {
            // One hint per 64-byte line of this k-group row of each panel, `pf.l1` ahead.
            for v in 0..V {
                let off = (v / 2) * pstride + q * nr + (v % 2) * lanes * 4 + pf.l1;
                if (v % 2) * lanes * 4 % 64 == 0 {
                    _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(off).cast());
                    _mm_prefetch::<_MM_HINT_T1>(b0.wrapping_add(off + pf.l1).cast());
                }
            }
        }
        if pf.l2 > 0 {
            // The same k-group row `pf.l2` bytes on (the next panel), into L2.
            for v in 0..V {
                let off = (v / 2) * pstride + q * nr + (v % 2) * lanes * 4 + pf.l2;
                if (v % 2) * lanes * 4 % 64 == 0 {
                    _mm_prefetch::<_MM_HINT_T1>(b0.wrapping_add(off).cast());
                }
            }
        }
        let mut bv = [D::zero(); V];
        for v in 0..V {
            bv[v] = D::load_b(b0.add((v / 2) * pstride + q * nr + (v % 2) * lanes * 4));
        }
        for r in 0..R {
            let av = D::bcast_a(a0.add(r * kp + q));
            for v in 0..V {
                acc[r][v] = D::dot(acc[r][v], av, bv[v]);
            }
        }
        q += 4;
    }
    let j0 = p * nr;
    let ncols = (g.n - j0).min(V * lanes);
    // Compensation for the +128 offset: Σ Aq·Wq = acc − 128·colsum[j] (comp is
    // zero-padded to whole panels, so full loads are in bounds). Done in one fully
    // unrolled pass so `acc` stays in registers (a dynamically indexed `acc` made
    // LLVM zero it in memory with a `memset` call per tile).
    let mut x = [[D::zero(); V]; R];
    for v in 0..V {
        let comp = D::load_i32(g.comp.add(j0 + v * lanes));
        for r in 0..R {
            x[r][v] = D::sub(acc[r][v], comp);
        }
    }
    for v in 0..V {
        let j = j0 + v * lanes;
        if v * lanes >= ncols {
            break;
        }
        let nv = (ncols - v * lanes).min(lanes);
        match g.out {
            Out::I32(c) => {
                for r in 0..R {
                    D::store_i32_n(c.add((i0 + r) * g.ldc + j), x[r][v], nv);
                }
            }
            Out::F32(c, sa) => {
                // s_w zero-padded like comp.
                let sw = <D::F as Simd>::load(g.sw.add(j));
                for r in 0..R {
                    let i = i0 + r;
                    let xf = D::to_f32(x[r][v]);
                    // y = (s_a[i] · s_w[j]) · x: two roundings, as the reference.
                    let s = <D::F as Simd>::mul(<D::F as Simd>::splat(*sa.add(i)), sw);
                    let y = <D::F as Simd>::mul(s, xf);
                    let y = g.epi.apply::<D::F>(y, i, j, nv);
                    <D::F as Simd>::store_n(c.add(i * g.ldc + j), y, nv);
                }
            }
        }
    }
}

/// Software prefetch distance along each weight panel, in bytes (32 k-groups of a
/// 32-column zmm panel), issued by the first row tile to read a panel. Measured with
/// `examples/qgemm_probe.rs` (`COLD=1`: weights from DRAM, as a forward at batch 1
/// sees them): without it a call took about compute + streaming time (T=32 FFN down
/// 108 us = 52 us hot + 41 us stream), the VNNI loop being too fast for the hardware
/// prefetcher's lead.
const PF_BYTES: usize = 4096;
/// Software prefetch of a tile's weight stream, distances in bytes (0: none): `l1` ahead
/// along the panels it reads (into L1), `l2` on from them (into L2: the next panel).
#[derive(Clone, Copy)]
pub(crate) struct Prefetch {
    l1: usize,
    l2: usize,
}

impl Prefetch {
    const NONE: Prefetch = Prefetch { l1: 0, l2: 0 };
}

/// Tiles of fewer rows do not prefetch: at 1-3 rows the loads alone keep up with the
/// stream (T=1 runs at the DRAM floor), and the hints cost load-port slots.
const PF_MIN_ROWS: usize = 4;

/// The loops around the microkernel: row blocks of MC (A block in L2) → panels
/// (one `kp x NR` weight panel, ≤ 48 KB, reused by every row tile of the block) →
/// full MR-row tiles; then the remainder rows of the last block with the wide tiles.
#[inline(always)]
unsafe fn driver<D: QDot>(g: &Job) {
    let np = g.n.div_ceil(D::NR);
    let mut ib = 0;
    while ib < g.m {
        let mb = (g.m - ib).min(MC);
        let full = mb / D::MR;
        for p in 0..np {
            for t in 0..full {
                // r = MR: the jump table's full `MR x 2` tile on this one panel. The
                // first tile over a panel streams it from memory: prefetch ahead.
                // The second tile over it fetches the next panel into L2 meanwhile, so
                // the next first tile computes instead of waiting on memory.
                let pstride = g.kp * D::NR;
                let pf = match (ib, t) {
                    (0, 0) => Prefetch {
                        l1: PF_BYTES,
                        l2: 0,
                    },
                    (0, 1) if p + 1 < np => Prefetch { l1: 0, l2: pstride },
                    _ => Prefetch::NONE,
                };
                D::row_tile(g, ib + t * D::MR, D::MR, p, p + 1, pf);
            }
        }
        let rem = mb - full * D::MR;
        if rem > 0 {
            // First pass over the weights only when there was no full tile.
            let first = ib == 0 && full == 0 && rem >= PF_MIN_ROWS;
            let pf = if first {
                Prefetch {
                    l1: PF_BYTES,
                    l2: 0,
                }
            } else {
                Prefetch::NONE
            };
            D::row_tile(g, ib + full * D::MR, rem, 0, np, pf);
        }
        ib += mb;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma")]
unsafe fn run_vnni512(g: &Job) {
    driver::<Vnni512>(g)
}

#[target_feature(enable = "avxvnni,avx2,fma")]
unsafe fn run_vnni256(g: &Job) {
    driver::<Vnni256>(g)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn run_maddubs256(g: &Job) {
    driver::<Maddubs256>(g)
}

/// The AMX kernel (`qgemm/amx.rs`) on the hardware tile unit.
///
/// # Safety
/// As [`run`], for an Amx-packed matrix (panels of 16 columns, `panel_k(kp)` bytes per
/// column) on a CPU with AMX-INT8 and AVX-512 (the Amx token).
unsafe fn run_amx(g: &Job) {
    use super::amx;
    let pk = amx::panel_k(g.kp);
    let np = g.n.div_ceil(amx::NR);
    // SAFETY: the job's operands (see `Job::cols`): A holds m rows of kp bytes; from
    // the call's first panel the matrix holds at least `np` panels of `16 · pk` bytes
    // and `s_w` / `comp` at least `np · 16` entries (zero-padded to whole panels).
    let call = amx::Call {
        a: std::slice::from_raw_parts(g.a, g.m * g.kp),
        kp: g.kp,
        m: g.m,
        b: std::slice::from_raw_parts(g.b, np * amx::NR * pk),
        pk,
        n: g.n,
        sw: std::slice::from_raw_parts(g.sw, np * amx::NR),
        comp: std::slice::from_raw_parts(g.comp, np * amx::NR),
        out: match g.out {
            Out::F32(c, sa) => amx::Out::F32(c, sa),
            Out::I32(c) => amx::Out::I32(c),
        },
        ldc: g.ldc,
        epi: g.epi,
    };
    let mut unit = crate::tiles::Hardware::new().expect("the Amx token proves AMX is available");
    // The token's features include AVX-512 F/BW/VL/DQ (`vector`).
    amx::run(&mut unit, &call, true).expect("AMX int8 tile GEMM on validated operands");
}

/// Runs a validated job on `kind`'s kernel.
///
/// # Safety
/// `g` describes valid memory for `(m, n, kp)` (see `Job::new`), the output does not
/// overlap the inputs, the matrix was packed for `kind`, and the CPU supports
/// `kind` (the caller holds its `QIsa` token).
pub(crate) unsafe fn run(kind: QIsaKind, g: &Job) {
    match kind {
        QIsaKind::Avx512Vnni => run_vnni512(g),
        QIsaKind::AvxVnni => run_vnni256(g),
        QIsaKind::Avx2 => run_maddubs256(g),
        QIsaKind::Amx => run_amx(g),
        QIsaKind::Scalar => unreachable!("scalar runs the reference"),
        QIsaKind::NeonDot | QIsaKind::NeonI8mm => {
            unreachable!("aarch64 kinds have no token on x86-64")
        }
    }
}

// ---------------------------------------------------------------------------
// Row quantizers (same arithmetic as `reference::quantize_row`).
// ---------------------------------------------------------------------------

/// # Safety
/// AVX-512 F/BW/VL/DQ available; `a: [m, k]`, `mode.mul: [k]` when present,
/// `out: [m, padded_k(k)]`, `scales: [m]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
pub(crate) unsafe fn quantize_rows_avx512(
    a: &[f32],
    m: usize,
    k: usize,
    mode: InputMode,
    out: &mut [u8],
    scales: &mut [f32],
) {
    // One loop per mode (smoothing multipliers or not, unsigned or not), so the mode
    // tests leave the per-element loops.
    match (mode.mul.is_some(), mode.offset.is_some()) {
        (false, false) => q_rows_512::<false, false>(a, m, k, mode, out, scales),
        (true, false) => q_rows_512::<true, false>(a, m, k, mode, out, scales),
        (false, true) => q_rows_512::<false, true>(a, m, k, mode, out, scales),
        (true, true) => q_rows_512::<true, true>(a, m, k, mode, out, scales),
    }
}

/// [`quantize_rows_avx512`] for one mode: `SMOOTH` = `mode.mul` is present, `UNSIGNED`
/// = `mode.offset` is. Pass 1 keeps four max accumulators (one `vmaxps` chain capped it
/// at one vector per 4 cycles); pass 2 stores whole vectors unmasked, the tail masked.
/// Same arithmetic per element as before (max is exact and order-independent), so
/// bitwise equal to the reference.
#[inline(always)]
unsafe fn q_rows_512<const SMOOTH: bool, const UNSIGNED: bool>(
    a: &[f32],
    m: usize,
    k: usize,
    mode: InputMode,
    out: &mut [u8],
    scales: &mut [f32],
) {
    // `mode.mul: [k]` when present (checked by the caller): t = x · mul, then in the
    // unsigned mode max(t + offset, 0), as the reference.
    let c = mode.mul.map(|c| c.as_ptr()).unwrap_or(std::ptr::null());
    let offset = _mm512_set1_ps(mode.offset.unwrap_or(0.0));
    // Clamp range and the stored offset: signed [-127, 127] + 128, unsigned [0, 255].
    let (qlo, qhi, qoff) = if UNSIGNED {
        (0, 255, 0)
    } else {
        (-127, 127, 128)
    };
    let kp = padded_k(k);
    let absmask = _mm512_set1_epi32(0x7fff_ffff);
    // t(x) of 16 elements at column q (masked lanes load 0).
    let t = |x: *const f32, q: usize, mask: __mmask16| -> __m512 {
        let mut v = _mm512_maskz_loadu_ps(mask, x.add(q));
        if SMOOTH {
            v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, c.add(q)));
        }
        if UNSIGNED {
            v = _mm512_max_ps(_mm512_add_ps(v, offset), _mm512_setzero_ps());
        }
        v
    };
    let abs = |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), absmask));
    for i in 0..m {
        let x = a.as_ptr().add(i * k);
        let o = out.as_mut_ptr().add(i * kp);
        // Pass 1: max |t(x)|.
        let mut mx = [_mm512_setzero_ps(); 4];
        let mut q = 0;
        while q + 64 <= k {
            for (u, acc) in mx.iter_mut().enumerate() {
                *acc = _mm512_max_ps(*acc, abs(t(x, q + 16 * u, 0xffff)));
            }
            q += 64;
        }
        while q + 16 <= k {
            mx[0] = _mm512_max_ps(mx[0], abs(t(x, q, 0xffff)));
            q += 16;
        }
        let m01 = _mm512_max_ps(mx[0], mx[1]);
        let m23 = _mm512_max_ps(mx[2], mx[3]);
        let mut amax = _mm512_reduce_max_ps(_mm512_max_ps(m01, m23));
        for t in q..k {
            amax = amax.max(mode.t(*x.add(t), t).abs());
        }
        let (scale, inv) = super::reference::row_scale_q(amax, mode.qmax());
        *scales.get_unchecked_mut(i) = scale;
        // Pass 2: clamp(round_ties_even(t·inv), lo, hi) + off -> u8.
        let vinv = _mm512_set1_ps(inv);
        let (lo, hi, off) = (
            _mm512_set1_epi32(qlo),
            _mm512_set1_epi32(qhi),
            _mm512_set1_epi32(qoff),
        );
        let quant = |v: __m512| -> __m512i {
            // cvtps2dq rounds to nearest even (default MXCSR), as round_ties_even.
            let r = _mm512_cvtps_epi32(_mm512_mul_ps(v, vinv));
            _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(r, lo), hi), off)
        };
        let mut q = 0;
        while q + 16 <= k {
            // vpmovdb: the low byte of each i32 (values are in [0, 255]).
            let r = quant(t(x, q, 0xffff));
            _mm_storeu_si128(o.add(q).cast(), _mm512_cvtepi32_epi8(r));
            q += 16;
        }
        if q < k {
            let mask = ((1u32 << (k - q)) - 1) as __mmask16;
            let r = quant(t(x, q, mask));
            _mm512_mask_cvtepi32_storeu_epi8(o.add(q).cast(), mask, r);
        }
        for t in k..kp {
            *o.add(t) = mode.pad();
        }
    }
}

/// # Safety
/// AVX2 + FMA available; `a: [m, k]`, `mode.mul: [k]` when present, `out: [m, padded_k(k)]`,
/// `scales: [m]`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn quantize_rows_avx2(
    a: &[f32],
    m: usize,
    k: usize,
    mode: InputMode,
    out: &mut [u8],
    scales: &mut [f32],
) {
    // `mode.mul: [k]` when present (checked by the caller): t = x · mul, then in the
    // unsigned mode max(t + offset, 0), as the reference.
    let c = mode.mul.map(|c| c.as_ptr());
    let (unsigned, offset) = (mode.offset.is_some(), mode.offset.unwrap_or(0.0));
    // Clamp range and the stored offset: signed [-127, 127] + 128, unsigned [0, 255].
    let (qlo, qhi, qoff) = if unsigned {
        (0, 255, 0)
    } else {
        (-127, 127, 128)
    };
    let kp = padded_k(k);
    let absmask = _mm256_set1_epi32(0x7fff_ffff);
    // Byte 0 of each i32 of a 128-bit lane into the lane's low 4 bytes.
    let shuf = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1,
        -1, -1, -1, -1, -1, -1, -1, -1,
    );
    for i in 0..m {
        let x = a.as_ptr().add(i * k);
        let o = out.as_mut_ptr().add(i * kp);
        let mut mx = _mm256_setzero_ps();
        let mut q = 0;
        while q + 8 <= k {
            let mut v = _mm256_loadu_ps(x.add(q));
            if let Some(c) = c {
                v = _mm256_mul_ps(v, _mm256_loadu_ps(c.add(q)));
            }
            if unsigned {
                v = _mm256_max_ps(
                    _mm256_add_ps(v, _mm256_set1_ps(offset)),
                    _mm256_setzero_ps(),
                );
            }
            let v = _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(v), absmask));
            mx = _mm256_max_ps(mx, v);
            q += 8;
        }
        let mut amax = F256::reduce_max(mx);
        for t in q..k {
            amax = amax.max(mode.t(*x.add(t), t).abs());
        }
        let (scale, inv) = super::reference::row_scale_q(amax, mode.qmax());
        *scales.get_unchecked_mut(i) = scale;
        let vinv = _mm256_set1_ps(inv);
        let (lo, hi, off) = (
            _mm256_set1_epi32(qlo),
            _mm256_set1_epi32(qhi),
            _mm256_set1_epi32(qoff),
        );
        let mut q = 0;
        while q + 8 <= k {
            let mut v = _mm256_loadu_ps(x.add(q));
            if let Some(c) = c {
                v = _mm256_mul_ps(v, _mm256_loadu_ps(c.add(q)));
            }
            if unsigned {
                v = _mm256_max_ps(
                    _mm256_add_ps(v, _mm256_set1_ps(offset)),
                    _mm256_setzero_ps(),
                );
            }
            let r = _mm256_cvtps_epi32(_mm256_mul_ps(v, vinv));
            let r = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(r, lo), hi), off);
            let b = _mm256_shuffle_epi8(r, shuf);
            let lo4 = _mm256_castsi256_si128(b);
            let hi4 = _mm256_extracti128_si256::<1>(b);
            _mm_storel_epi64(o.add(q).cast(), _mm_unpacklo_epi32(lo4, hi4));
            q += 8;
        }
        for t in q..k {
            *o.add(t) = mode.byte(mode.t(*x.add(t), t), inv);
        }
        for t in k..kp {
            *o.add(t) = mode.pad();
        }
    }
}
