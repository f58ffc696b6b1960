//! AVX-512 BF16 kernels: the `vdpbf16ps` microkernel and its driver, and the
//! `vcvtne2ps2bf16` row converter. Layouts, tile and blocking: `bgemm/mod.rs`.
//!
//! The AVX512_BF16 intrinsics (`_mm512_dpbf16_ps`, `_mm512_cvtne2ps_pbh`, target
//! feature `avx512bf16`) are stable since Rust 1.89 (checked with 1.95): no `asm!`.

use super::{padded_k, Bf16Matrix};
use crate::buf::AlignedBuf;
use crate::epilogue::{Epi, Epilogue};
use crate::simd::avx512::{mask16, Avx512 as F512};
use crate::simd::Simd;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows per full register tile of the `vdpbf16ps` kernel: 8 x 32 = 16 accumulators, 2
/// weight vectors, the broadcast pair as `vdpbf16ps`'s memory operand. On Zen 4 it runs
/// 2-3.5% faster than the 12 x 32 tile it replaced (whose K loop had to be `asm!`: LLVM
/// spilled one of its 24 accumulators after every `vdpbf16ps`); kernels/PERF.md,
/// "An 8 x 32 bf16 tile".
const MR: usize = 8;
/// Rows per full register tile of the `Avx512Widen` kernel: 8 x 32 = 16 accumulators,
/// plus the widened even/odd weight vectors (4), the mask and the broadcasts. At 12
/// rows (31 live zmm) LLVM spilled an accumulator after every FMA of the K loop:
/// whole model, one thread, 32 x 128: 12 rows 1996 ms, 8 rows see `MR_WIDEN` notes in
/// bgemm/mod.rs.
const MR_WIDEN: usize = 10;
/// The `Avx512Widen` row block: whole `MR_WIDEN` tiles (A is read in place, f32).
const MC_WIDEN: usize = 60;
/// Columns per weight panel (2 zmm of f32 accumulators).
const NR: usize = 32;
/// f32 lanes per zmm.
const LANES: usize = 16;
/// Row block: the converted A rows (`MC x kp` bf16, ≤ 147 KB at k = 1536) and
/// their C rows stay in L2 while every panel sweeps them. A multiple of MR.
const MC: usize = 48;
/// K pairs per slice: the B micro-panel `KCQ x NR` pairs = 24 KB, half the L1D.
const KCQ: usize = 192;
/// Weight prefetch distance of the intrinsic tiles, in k-pairs (x 128 B per panel):
/// 32 = 4 KB ahead per panel, as the f32 skinny path. Issued only by
/// the first row tile of each block (it reads the panels from DRAM/L3; the tiles after it
/// find them in L1/L2), and only for tiles of at least [`PF_MIN_ROWS`] rows
/// (fewer rows have too few `vdpbf16ps` per hint). The hardware prefetcher alone left the
/// stream unoverlapped: `e5embed bench --batch 1 --seq 8 --precision bf16`, AMD EPYC
/// (Zen 4), 2 threads, medians of 200: 3.96-4.01 ms without, 2.66-2.85 ms with
/// (kernels/PERF.md, Dec 2 session 9). The `vdpbf16ps` path's full 8-row tile prefetches
/// too since Dec 6 (it had not: a query of 8-15 tokens streamed its weights through it
/// with the hardware prefetcher alone): 1 x 8 1.60-1.63 -> 1.41-1.45 ms, 32 x 128 unchanged
/// (kernels/PERF.md, "The bf16 8-row tile from memory").
const PF_PAIRS: usize = 32;
const PF_MIN_ROWS: usize = 4;

/// One validated call: columns `[j0, j0 + n)` of `C = epi(bf16(A) · Wᵀ)`.
pub(crate) struct Job {
    /// A `[m, k]` f32, row stride k.
    a: *const f32,
    m: usize,
    k: usize,
    /// K pairs (`padded_k(k) / 2`).
    kq: usize,
    /// Columns computed.
    n: usize,
    /// First panel of the call, as bf16 pairs (panel stride `kq · NR` pairs).
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    epi: Epi,
    /// `Avx512Widen`: A stays f32 (read in place), W widened to f32, FMA.
    widen: bool,
}

impl Job {
    /// Raw view of a validated call (see `bgemm::call`): `cols.start` is a multiple
    /// of NR (or n), `c` points at column `cols.start` of row 0 with stride `ldc`.
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
        // Operand pointers at column j0; the residual's row stride is the matrix's n.
        let epi = Epi::new(epilogue, b.n, j0);
        let kq = b.kp / 2;
        let pairs = b.data.as_slice();
        let widen = b.isa.kind() == super::BIsaKind::Avx512Widen;
        debug_assert_eq!(b.nr, NR);
        Job {
            a: a.as_ptr(),
            m,
            k: b.k,
            kq,
            n: cols.len(),
            // One f32 slot of the buffer = one bf16 pair.
            b: pairs[((j0 / NR) * kq * NR).min(pairs.len())..]
                .as_ptr()
                .cast::<u32>(),
            c,
            ldc,
            epi,
            widen,
        }
    }
}

/// One K slice of a call: pairs `q0 .. q0 + qn`.
#[derive(Clone, Copy)]
struct Slice {
    q0: usize,
    qn: usize,
    /// First slice: chains start at +0.0 (else continue from C).
    first: bool,
    /// Last slice: apply the epilogue.
    last: bool,
    /// Software prefetch distance along the weight panels, in k-pairs (0: none); see
    /// [`PF_PAIRS`].
    pf: usize,
}

thread_local! {
    /// Per-thread converted A block (`MC x kp` bf16), grown on first use.
    static ABUF: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Runs a validated job (`k >= 1`).
///
/// # Safety
/// `g` describes valid memory (see `Job::new` and `bgemm::call`), C does not overlap
/// the inputs, the matrix is packed for Avx512Bf16, and the CPU has AVX-512
/// F/BW/VL/DQ + BF16 (the caller holds the `BIsa` token).
pub(crate) unsafe fn run(g: &Job) {
    if g.widen {
        // A is read in place: no conversion, no scratch.
        return driver_widen(g);
    }
    ABUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        // MC rows of kq pairs (one pair per f32 slot).
        buf.ensure_len(MC * g.kq);
        driver_dp(g, buf.as_mut_slice().as_mut_ptr().cast::<u32>())
    })
}

/// The loops around the microkernel (see the module docs): row blocks of MC
/// (converted to bf16 once) → K slices of KCQ pairs → panels → full 8-row tiles;
/// then the block's remainder rows with the wide tiles.
///
/// # Safety
/// As [`run`]; `abuf` holds `MC · kq` pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")]
unsafe fn driver_dp(g: &Job, abuf: *mut u32) {
    driver::<false>(g, abuf)
}

/// The `Avx512Widen` driver (AVX-512 F/BW/VL/DQ + FMA; no BF16 instruction used).
///
/// # Safety
/// As [`run`], with the Avx512Widen token.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn driver_widen(g: &Job) {
    driver::<true>(g, std::ptr::null_mut())
}

/// # Safety
/// As [`run`]; `abuf` holds `MC · kq` pairs (unused when `W`).
#[inline(always)]
unsafe fn driver<const W: bool>(g: &Job, abuf: *mut u32) {
    let kq = g.kq;
    let np = g.n.div_ceil(NR);
    // Balanced slices: K = 1536 -> 4 x 192 pairs; K = 384 -> one.
    let nslices = if W { 1 } else { kq.div_ceil(KCQ) };
    let kcq = kq.div_ceil(nslices);
    let mut ib = 0;
    while ib < g.m {
        let mb = (g.m - ib).min(if W { MC_WIDEN } else { MC });
        if !W {
            convert_rows(g.a.add(ib * g.k), mb, g.k, abuf.cast::<u16>());
        }
        let mr = if W { MR_WIDEN } else { MR };
        let full = mb / mr;
        let rem = mb - full * mr;
        let mut q0 = 0;
        while q0 < kq {
            let qn = kcq.min(kq - q0);
            let s = Slice {
                q0,
                qn,
                first: q0 == 0,
                last: q0 + qn == kq,
                pf: 0,
            };
            // Only the block's first row tile prefetches: it reads the panels from
            // DRAM/L3; the tiles after it find them in L1/L2.
            let first_tile = Slice { pf: PF_PAIRS, ..s };
            for p in 0..np {
                for t in 0..full {
                    let s = if t == 0 { first_tile } else { s };
                    if W {
                        tile::<W, MR_WIDEN, 2>(g, abuf, ib, t * mr, p, s);
                    } else {
                        tile::<W, MR, 2>(g, abuf, ib, t * mr, p, s);
                    }
                }
            }
            if rem > 0 {
                let s = if full == 0 { first_tile } else { s };
                if W {
                    row_tile_widen(g, ib, full * mr, rem, np, s);
                } else {
                    row_tile::<W>(g, abuf, ib, full * mr, rem, np, s);
                }
            }
            q0 += qn;
        }
        ib += mb;
    }
}

/// Remainder rows `r0 .. r0 + r` of the block (`r < MR`) over all panels, with a
/// tile as wide as the registers allow so that few rows still have enough
/// independent accumulators: 1-2 rows x 4 panels (8-16 acc + 8 B), 3 x 3 (18 + 6),
/// 4-6 x 2 (16-24 + 4), 7 x 1 (14 + 2); leftover panels one at a time.
#[inline(always)]
unsafe fn row_tile<const W: bool>(
    g: &Job,
    abuf: *const u32,
    ib: usize,
    r0: usize,
    r: usize,
    np: usize,
    s: Slice,
) {
    debug_assert!(r < MR);
    match r {
        1 => panels::<W, 1, 8>(g, abuf, ib, r0, np, s),
        2 => panels::<W, 2, 8>(g, abuf, ib, r0, np, s),
        3 => panels::<W, 3, 6>(g, abuf, ib, r0, np, s),
        4 => panels::<W, 4, 4>(g, abuf, ib, r0, np, s),
        5 => panels::<W, 5, 4>(g, abuf, ib, r0, np, s),
        6 => panels::<W, 6, 4>(g, abuf, ib, r0, np, s),
        _ => panels::<W, 7, 2>(g, abuf, ib, r0, np, s),
    }
}

/// The `Avx512Widen` remainder rows (`r < MR_WIDEN`): its tiles hold twice the weight
/// vectors (even and odd), so narrower than [`row_tile`]'s: 1-4 rows x 2 panels
/// (8-16 acc + 8 weight vectors), 5-7 x 1 (10-14 + 4).
#[inline(always)]
unsafe fn row_tile_widen(g: &Job, ib: usize, r0: usize, r: usize, np: usize, s: Slice) {
    let abuf = std::ptr::null();
    match r {
        1 => panels::<true, 1, 4>(g, abuf, ib, r0, np, s),
        2 => panels::<true, 2, 4>(g, abuf, ib, r0, np, s),
        3 => panels::<true, 3, 4>(g, abuf, ib, r0, np, s),
        4 => panels::<true, 4, 4>(g, abuf, ib, r0, np, s),
        5 => panels::<true, 5, 2>(g, abuf, ib, r0, np, s),
        6 => panels::<true, 6, 2>(g, abuf, ib, r0, np, s),
        7 => panels::<true, 7, 2>(g, abuf, ib, r0, np, s),
        8 => panels::<true, 8, 2>(g, abuf, ib, r0, np, s),
        _ => panels::<true, 9, 2>(g, abuf, ib, r0, np, s),
    }
}

/// Rows `r0 .. r0 + R` over every panel: groups of `V / 2` panels with the `R x V`
/// tile, the leftover panels one at a time with `R x 2`.
#[inline(always)]
unsafe fn panels<const W: bool, const R: usize, const V: usize>(
    g: &Job,
    abuf: *const u32,
    ib: usize,
    r0: usize,
    np: usize,
    s: Slice,
) {
    let pw = V / 2;
    let mut p = 0;
    while p + pw <= np {
        tile::<W, R, V>(g, abuf, ib, r0, p, s);
        p += pw;
    }
    while p < np {
        tile::<W, R, 2>(g, abuf, ib, r0, p, s);
        p += 1;
    }
}

/// Hints the `V` weight vectors of one k-pair (two 64-byte lines per panel, `V / 2`
/// panels `pstride` pairs apart, from `b`) into L1. Never dereferences `b`.
#[inline(always)]
unsafe fn prefetch_pairs<const V: usize>(b: *const u32, pstride: usize) {
    for v in 0..V {
        _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((v / 2) * pstride + (v % 2) * LANES).cast());
    }
}

/// The microkernel: block rows `r0 .. r0 + R` (C rows `ib + r0 ..`) x panels
/// `p .. p + V/2` (columns `p·NR .. p·NR + V·16`, clipped to n at the store), K
/// pairs of slice `s`; on the last slice the epilogue from registers.
///
/// Per k-pair: `V` loads of 16 weight pairs, then per row one 32-bit activation
/// pair broadcast (`vpbroadcastd`, folded into `vdpbf16ps`'s `{1to16}` memory
/// operand) and `V` `vdpbf16ps`: `acc[r][v] += A[2q+1]·W[2q+1]; += A[2q]·W[2q]`
/// per lane (odd first: the hardware's order, modelled by the reference).
#[inline(always)]
unsafe fn tile<const W: bool, const R: usize, const V: usize>(
    g: &Job,
    abuf: *const u32,
    ib: usize,
    r0: usize,
    p: usize,
    s: Slice,
) {
    let kq = g.kq;
    let pstride = kq * NR; // pairs per panel
    let b0 = g.b.add(p * pstride + s.q0 * NR);
    let i0 = ib + r0;
    let j0 = p * NR;
    let ncols = (g.n - j0).min(V * LANES);
    let c0 = g.c.add(i0 * g.ldc + j0);

    // Start the chains at +0.0 (first slice) or continue from C (exact f32 reload).
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    if !s.first {
        for r in 0..R {
            for v in 0..V {
                if v * LANES < ncols {
                    let nv = ncols - v * LANES;
                    acc[r][v] = _mm512_maskz_loadu_ps(mask16(nv), c0.add(r * g.ldc + v * LANES));
                }
            }
        }
    }
    if W {
        // Widen: A f32 in place (row stride k); W pair -> two f32 vectors by bit
        // moves (bf16 is the top half of an f32: even element `pair << 16`, odd
        // element `pair & 0xffff0000`), then f32 FMAs in K order (even, odd): the
        // f32 GEMM's chain with the weights rounded to bf16.
        let a0 = g.a.add(i0 * g.k);
        let hi = _mm512_set1_epi32(0xffff_0000u32 as i32);
        // Pairs fully inside k; an odd k's last pair has only its even element.
        let qend = (s.q0 + s.qn).min(g.k / 2);
        let mut q = s.q0;
        while q < qend {
            if R >= PF_MIN_ROWS && s.pf > 0 {
                prefetch_pairs::<V>(b0.wrapping_add((q - s.q0 + s.pf) * NR), pstride);
            }
            let mut bv = [_mm512_setzero_si512(); V];
            for v in 0..V {
                bv[v] = _mm512_loadu_si512(
                    b0.add((v / 2) * pstride + (q - s.q0) * NR + (v % 2) * LANES)
                        .cast(),
                );
            }
            let mut even = [_mm512_setzero_ps(); V];
            let mut odd = [_mm512_setzero_ps(); V];
            for v in 0..V {
                even[v] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(bv[v]));
                odd[v] = _mm512_castsi512_ps(_mm512_and_si512(bv[v], hi));
            }
            // Row-major order: each activation is broadcast once into a register and
            // used by all V vectors (a memory-operand broadcast per FMA made the loop
            // load-port bound); per element still even, then odd.
            for r in 0..R {
                let ae = _mm512_set1_ps(*a0.add(r * g.k + 2 * q));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(ae, even[v], acc[r][v]);
                }
                let ao = _mm512_set1_ps(*a0.add(r * g.k + 2 * q + 1));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(ao, odd[v], acc[r][v]);
                }
            }
            q += 1;
        }
        if q < s.q0 + s.qn {
            // Odd k: the last pair's even element (the odd one is the zero pad).
            for v in 0..V {
                let x = _mm512_loadu_si512(
                    b0.add((v / 2) * pstride + (q - s.q0) * NR + (v % 2) * LANES)
                        .cast(),
                );
                let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(x));
                for r in 0..R {
                    let ae = _mm512_set1_ps(*a0.add(r * g.k + 2 * q));
                    acc[r][v] = _mm512_fmadd_ps(ae, even, acc[r][v]);
                }
            }
        }
    } else {
        let a0 = abuf.add(r0 * kq + s.q0);
        for q in 0..s.qn {
            if R >= PF_MIN_ROWS && s.pf > 0 {
                prefetch_pairs::<V>(b0.wrapping_add((q + s.pf) * NR), pstride);
            }
            let mut bv = [_mm512_setzero_si512(); V];
            for v in 0..V {
                // Vector v: panel v/2, half v%2 of its NR pairs at k-pair q.
                bv[v] =
                    _mm512_loadu_si512(b0.add((v / 2) * pstride + q * NR + (v % 2) * LANES).cast());
            }
            for r in 0..R {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a0.add(r * kq + q) as i32));
                for v in 0..V {
                    let bh: __m512bh = std::mem::transmute(bv[v]);
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], bh, av);
                }
            }
        }
    }

    // The epilogue runs out of line: inlined, its temporaries (GELU) made LLVM
    // split the accumulators' live ranges with a spill store after every
    // FMA/vdpbf16ps inside the K loop (measured: half speed on the widen path).
    store_tile::<R, V>(g, acc, i0, j0, ncols, c0, s.last);
}

/// Applies the epilogue (on the last K slice) to a finished tile and stores it
/// (masked at the right edge).
///
/// # Safety
/// As [`tile`]; AVX-512 F/BW/VL/DQ + FMA available.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn store_tile<const R: usize, const V: usize>(
    g: &Job,
    acc: [[__m512; V]; R],
    i0: usize,
    j0: usize,
    ncols: usize,
    c0: *mut f32,
    last: bool,
) {
    for v in 0..V {
        if v * LANES >= ncols {
            break;
        }
        let nv = (ncols - v * LANES).min(LANES);
        let jc = v * LANES; // column within the tile
        for r in 0..R {
            let mut x = acc[r][v];
            if last {
                x = g.epi.apply::<F512>(x, i0 + r, j0 + jc, nv);
            }
            F512::store_n(c0.add(r * g.ldc + jc), x, nv);
        }
    }
}

/// `a: [m, k]` f32 -> `out: [m, padded_k(k)]` bf16 bits (pad 0), 32 floats per
/// `vcvtne2ps2bf16` (RNE, DAZ, NaN quieted: bitwise `f32_to_bf16`).
///
/// # Safety
/// AVX-512 F/BW + BF16 available; `a` valid for `m·k` floats, `out` for
/// `m·padded_k(k)` u16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma")]
pub(crate) unsafe fn convert_rows(a: *const f32, m: usize, k: usize, out: *mut u16) {
    let kp = padded_k(k);
    for i in 0..m {
        let x = a.add(i * k);
        let o = out.add(i * kp);
        let mut q = 0;
        while q + 32 <= k {
            // cvtne2ps2bf16(hi, lo): the low 16 bf16 come from the second operand.
            let lo = _mm512_loadu_ps(x.add(q));
            let hi = _mm512_loadu_ps(x.add(q + 16));
            let h: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(o.add(q).cast(), h);
            q += 32;
        }
        if q < kp {
            // Tail: masked loads (missing floats read as 0.0 -> bf16 0, which is also
            // the pad element), masked store of the kp - q remaining elements.
            let nlo = (k - q).min(16);
            let nhi = (k - q).saturating_sub(16);
            let lo = _mm512_maskz_loadu_ps(mask16(nlo), x.add(q));
            let hi = _mm512_maskz_loadu_ps(mask16(nhi), x.add(q + 16));
            let h: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            let nst = kp - q;
            _mm512_mask_storeu_epi16(o.add(q).cast(), ((1u64 << nst) - 1) as __mmask32, h);
        }
    }
}
