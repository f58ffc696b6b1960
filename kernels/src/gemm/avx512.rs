//! AVX-512 microkernel `gemm_f32_avx512_12x32`: 12 rows x 2 zmm = 24 accumulators,
//! plus 2 B vectors and 1 A broadcast = 27 of 32 zmm registers. Skinny tiles for few
//! rows: 1-2 rows x 4 panels (8-16 acc + 8 B), 3-6 rows x 2 panels (12-24 acc + 4 B).

use super::kernel::{blocked, finish, skinny, tile_dispatch, Blocking, GemmPath, Kernel, Raw};
use crate::simd::avx512::Avx512;
use crate::simd::Simd;

pub(crate) struct Avx512Kernel;

impl Kernel for Avx512Kernel {
    const NAME: &'static str = "gemm_f32_avx512_12x32";
    const MR: usize = 12;
    const NR: usize = 32;
    const KC_MAX: usize = 512;
    tile_dispatch!(
        Avx512,
        2,
        12,
        [
            (1, [4, 2, 1]),
            (2, [4, 2, 1]),
            (3, [2, 1]),
            (4, [2, 1]),
            (5, [2, 1]),
            (6, [2, 1]),
            (7, [1]),
            (8, [1]),
            (9, [1]),
            (10, [1]),
            (11, [1]),
            (12, [1])
        ]
    );
}

/// # Safety
/// The CPU has AVX-512 F/BW/VL/DQ, AVX2 and FMA (caller holds an `Isa` of kind
/// Avx512); `g` valid; `path` resolved (not Auto); for Blocked, `g.apack` holds
/// `bl.mc * bl.kc` floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
pub(crate) unsafe fn gemm(g: &Raw, path: GemmPath, bl: Blocking) {
    match path {
        GemmPath::Skinny if TALL_ROWS.contains(&g.m) => tall(g),
        GemmPath::Skinny => skinny::<Avx512Kernel, 12>(g),
        _ => blocked::<Avx512Kernel, 12>(g, bl),
    }
}

/// Rows of the tall skinny tile: one pass over the weights for 13-16 rows.
const TALL_ROWS: std::ops::RangeInclusive<usize> = 13..=16;

/// Software prefetch distances of the tall tile, in bytes along the panel (the panels are
/// contiguous, so hints run on into the next panel): into L1 4 KB ahead, into L2 16 KB
/// ahead. Measured (`gemm_probe 16`, `COLD=1`, two interleaved rounds each): L1 1-8 KB x L2
/// 8-32 KB all within the run-to-run spread; 4 / 16 KB was the best pair twice.
const TALL_PF_L1: usize = 4096;
const TALL_PF_L2: usize = 16384;

/// Two K steps of a register row: broadcast `A[r][k]`, `A[r][k+1]` (at `$a`), and four
/// FMAs into accumulators `$c0` (columns 0-15) and `$c1` (16-31); B steps in zmm28-31.
#[rustfmt::skip]
macro_rules! reg_row_x2 {
    ($a:literal, $c0:literal, $c1:literal) => {
        concat!(
            "vbroadcastss zmm26, dword ptr [", $a, "]\n",
            "vbroadcastss zmm27, dword ptr [", $a, " + 4]\n",
            "vfmadd231ps zmm", $c0, ", zmm26, zmm28\n",
            "vfmadd231ps zmm", $c1, ", zmm26, zmm29\n",
            "vfmadd231ps zmm", $c0, ", zmm27, zmm30\n",
            "vfmadd231ps zmm", $c1, ", zmm27, zmm31\n",
        )
    };
}

/// Two K steps of a row whose accumulators live in L1 at `[{m} + $o]` (columns 0-15) and
/// `[{m} + $o + 64]`: load, two FMAs each, store (the next pair's load is forwarded from
/// this store).
#[rustfmt::skip]
macro_rules! mem_row_x2 {
    ($a:literal, $o:literal) => {
        concat!(
            "vbroadcastss zmm26, dword ptr [", $a, "]\n",
            "vbroadcastss zmm27, dword ptr [", $a, " + 4]\n",
            "vmovaps zmm24, [{m} + ", $o, "]\n",
            "vfmadd231ps zmm24, zmm26, zmm28\n",
            "vfmadd231ps zmm24, zmm27, zmm30\n",
            "vmovaps [{m} + ", $o, "], zmm24\n",
            "vmovaps zmm25, [{m} + ", $o, " + 64]\n",
            "vfmadd231ps zmm25, zmm26, zmm29\n",
            "vfmadd231ps zmm25, zmm27, zmm31\n",
            "vmovaps [{m} + ", $o, " + 64], zmm25\n",
        )
    };
}

/// One K step (the odd last one) of a register row.
#[rustfmt::skip]
macro_rules! reg_row_x1 {
    ($a:literal, $c0:literal, $c1:literal) => {
        concat!(
            "vbroadcastss zmm26, dword ptr [", $a, "]\n",
            "vfmadd231ps zmm", $c0, ", zmm26, zmm28\n",
            "vfmadd231ps zmm", $c1, ", zmm26, zmm29\n",
        )
    };
}

/// One K step of an L1-accumulated row.
#[rustfmt::skip]
macro_rules! mem_row_x1 {
    ($a:literal, $o:literal) => {
        concat!(
            "vbroadcastss zmm26, dword ptr [", $a, "]\n",
            "vmovaps zmm24, [{m} + ", $o, "]\n",
            "vfmadd231ps zmm24, zmm26, zmm28\n",
            "vmovaps [{m} + ", $o, "], zmm24\n",
            "vmovaps zmm25, [{m} + ", $o, " + 64]\n",
            "vfmadd231ps zmm25, zmm26, zmm29\n",
            "vmovaps [{m} + ", $o, " + 64], zmm25\n",
        )
    };
}

/// The 16 rows of the tall tile for one step macro pair (`$reg` for rows 0-11 into
/// zmm0-23, `$mem` for rows 12-15 into L1): the pair loop and the odd-K tail share it.
#[rustfmt::skip]
macro_rules! tile_rows {
    ($reg:ident, $mem:ident) => {
        concat!(
            $reg!("{a0}", 0, 1), $reg!("{a0} + {lda}", 2, 3),
            $reg!("{a0} + {lda}*2", 4, 5), $reg!("{a0} + {lda3}", 6, 7),
            $reg!("{a4}", 8, 9), $reg!("{a4} + {lda}", 10, 11),
            $reg!("{a4} + {lda}*2", 12, 13), $reg!("{a4} + {lda3}", 14, 15),
            $reg!("{a8}", 16, 17), $reg!("{a8} + {lda}", 18, 19),
            $reg!("{a8} + {lda}*2", 20, 21), $reg!("{a8} + {lda3}", 22, 23),
            $mem!("{a12}", 0), $mem!("{a12} + {lda}", 128),
            $mem!("{a12} + {lda}*2", 256), $mem!("{a12} + {lda3}", 384),
        )
    };
}

/// The sums of a 16-row x 32-column tile over all of K (one packed panel `b`, `[k][32]`),
/// written to `out` as `[16][32]`. Rows 0-11 come from `a` (row stride `lda` floats) and
/// accumulate in zmm0-23; rows 12-15 come from `a_hi` (same stride) and accumulate in
/// `out[12..16]` itself, through L1: 16 rows x 2 vectors need 32 accumulators, and with
/// the B vectors and broadcasts that is more registers than AVX-512 has. Each sum is one
/// FMA chain over K in order from +0.0 (`out[12..16]` must hold zeros on entry), the
/// invariant of `kernel.rs`.
///
/// # Safety
/// AVX-512F available; `k >= 1`; rows 0-11 of `a` and 0-3 of `a_hi` readable for `k`
/// floats; `b` readable for `32 k` floats; `out` 64-byte aligned and writable for 512.
#[target_feature(enable = "avx512f")]
unsafe fn tall_sums(
    a: *const f32,
    a_hi: *const f32,
    lda: usize,
    b: *const f32,
    k: usize,
    out: *mut f32,
) {
    let ldab = lda * 4;
    std::arch::asm!(
        "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
        "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
        "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
        "vpxord zmm9, zmm9, zmm9", "vpxord zmm10, zmm10, zmm10", "vpxord zmm11, zmm11, zmm11",
        "vpxord zmm12, zmm12, zmm12", "vpxord zmm13, zmm13, zmm13", "vpxord zmm14, zmm14, zmm14",
        "vpxord zmm15, zmm15, zmm15", "vpxord zmm16, zmm16, zmm16", "vpxord zmm17, zmm17, zmm17",
        "vpxord zmm18, zmm18, zmm18", "vpxord zmm19, zmm19, zmm19", "vpxord zmm20, zmm20, zmm20",
        "vpxord zmm21, zmm21, zmm21", "vpxord zmm22, zmm22, zmm22", "vpxord zmm23, zmm23, zmm23",
        "test {pairs}, {pairs}",
        "jz 3f",
        // Two K steps per iteration (the L1 rows load and store once per pair).
        "2:",
        "prefetcht0 [{b} + {pf1}]", "prefetcht0 [{b} + {pf1} + 64]",
        "prefetcht0 [{b} + {pf1} + 128]", "prefetcht0 [{b} + {pf1} + 192]",
        "prefetcht1 [{b} + {pf2}]", "prefetcht1 [{b} + {pf2} + 64]",
        "prefetcht1 [{b} + {pf2} + 128]", "prefetcht1 [{b} + {pf2} + 192]",
        "vmovups zmm28, [{b}]", "vmovups zmm29, [{b} + 64]",
        "vmovups zmm30, [{b} + 128]", "vmovups zmm31, [{b} + 192]",
        tile_rows!(reg_row_x2, mem_row_x2),
        "add {a0}, 8", "add {a4}, 8", "add {a8}, 8", "add {a12}, 8",
        "add {b}, 256",
        "dec {pairs}",
        "jnz 2b",
        "3:",
        "test {odd}, {odd}",
        "jz 4f",
        "vmovups zmm28, [{b}]", "vmovups zmm29, [{b} + 64]",
        tile_rows!(reg_row_x1, mem_row_x1),
        "4:",
        "vmovaps [{out}], zmm0", "vmovaps [{out} + 64], zmm1",
        "vmovaps [{out} + 128], zmm2", "vmovaps [{out} + 192], zmm3",
        "vmovaps [{out} + 256], zmm4", "vmovaps [{out} + 320], zmm5",
        "vmovaps [{out} + 384], zmm6", "vmovaps [{out} + 448], zmm7",
        "vmovaps [{out} + 512], zmm8", "vmovaps [{out} + 576], zmm9",
        "vmovaps [{out} + 640], zmm10", "vmovaps [{out} + 704], zmm11",
        "vmovaps [{out} + 768], zmm12", "vmovaps [{out} + 832], zmm13",
        "vmovaps [{out} + 896], zmm14", "vmovaps [{out} + 960], zmm15",
        "vmovaps [{out} + 1024], zmm16", "vmovaps [{out} + 1088], zmm17",
        "vmovaps [{out} + 1152], zmm18", "vmovaps [{out} + 1216], zmm19",
        "vmovaps [{out} + 1280], zmm20", "vmovaps [{out} + 1344], zmm21",
        "vmovaps [{out} + 1408], zmm22", "vmovaps [{out} + 1472], zmm23",
        a0 = inout(reg) a => _,
        a4 = inout(reg) a.add(4 * lda) => _,
        a8 = inout(reg) a.add(8 * lda) => _,
        a12 = inout(reg) a_hi => _,
        lda = in(reg) ldab,
        lda3 = in(reg) 3 * ldab,
        b = inout(reg) b => _,
        pairs = inout(reg) k / 2 => _,
        odd = in(reg) k & 1,
        pf1 = const TALL_PF_L1,
        pf2 = const TALL_PF_L2,
        m = in(reg) out.add(12 * 32),
        out = in(reg) out,
        out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
        out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
        out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
        out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
        out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
        out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
        out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
        out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
        options(nostack),
    );
}

/// One tile's sums: 64-byte aligned for `tall_sums`' aligned stores.
#[repr(C, align(64))]
struct TallSums([f32; 512]);

/// The skinny path for 13-16 rows: each 32-column panel in one pass of [`tall_sums`], so
/// every weight is read once, by all rows, while it streams (the 12-row tile + remainder
/// tile of [`skinny`] read each panel a second time from L2 with nothing streaming).
/// For `m < 16` the L1 rows are rows `m - 4 .. m` (rows 12 - `m` .. 11 are computed
/// twice, bitwise the same, and stored once).
///
/// # Safety
/// As [`gemm`], with `g.m` in [`TALL_ROWS`] and `g.k >= 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn tall(g: &Raw) {
    debug_assert!(TALL_ROWS.contains(&g.m) && g.k >= 1);
    let ldb = g.k * Avx512Kernel::NR;
    let hi0 = g.m - 4;
    let mut sums = TallSums([0.0; 512]);
    for p in 0..g.n.div_ceil(Avx512Kernel::NR) {
        sums.0[12 * 32..].fill(0.0);
        let s = sums.0.as_mut_ptr();
        tall_sums(g.a, g.a.add(hi0 * g.lda), g.lda, g.b.add(p * ldb), g.k, s);
        let jr = p * Avx512Kernel::NR;
        let nr = Avx512Kernel::NR.min(g.n - jr);
        let epi = g.epi.at(0, jr);
        let c = g.c.add(jr);
        for r in 0..g.m {
            let row = if r < 12 { r } else { 12 + r - hi0 };
            for col in (0..nr).step_by(16) {
                let x = Avx512::load(s.add(row * 32 + col));
                finish::<Avx512>(x, epi, r, col, (nr - col).min(16), c, g.ldc);
            }
        }
    }
}
