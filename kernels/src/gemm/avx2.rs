//! AVX2+FMA microkernel `gemm_f32_avx2_6x16`: 6 rows x 2 ymm = 12 accumulators,
//! plus 2 B vectors and 1 A broadcast = 15 of 16 ymm registers. Skinny tiles: 1 row
//! x 4 panels (8 acc, B as memory operands), 2 rows x 2 panels (8 acc + 4 B).

use super::kernel::{blocked, skinny, tile_dispatch, Blocking, GemmPath, Kernel, Raw};
use crate::simd::avx2::Avx2;

pub(crate) struct Avx2Kernel;

impl Kernel for Avx2Kernel {
    const NAME: &'static str = "gemm_f32_avx2_6x16";
    const MR: usize = 6;
    const NR: usize = 16;
    const KC_MAX: usize = 512;
    /// 8 KB ahead (128 K steps of a 16-float panel), not the 32 steps (2 KB) of the
    /// default: its 6-row tile eats a 64-byte line per 12 ymm FMAs, and 2 KB ahead left the
    /// weight stream waiting on memory. Zen 4 (family 25 model 17), `COLD=1 gemm_probe
    /// 6,8,16 avx2`, us for QKV / FFN up / FFN down: T = 8 124.6 / 172.1 / 166.6 at 2 KB,
    /// 110.8 / 142.1 / 140.9 at 4 KB, 82.8 / 119.2 / 119.3 at 8 KB, 84.3 / 123.5 / 111.5 at
    /// 16 KB; T = 6 101.9 / 140.0 / 140.7 -> 67.3 / 94.3 / 99.4 at 8 KB; weights in cache
    /// within 1.5% either way (kernels/PERF.md, "The f32 choice from memory").
    const SKINNY_PF: usize = 8192 / 4;
    tile_dispatch!(
        Avx2,
        2,
        6,
        [
            (1, [4, 2, 1]),
            (2, [2, 1]),
            (3, [1]),
            (4, [1]),
            (5, [1]),
            (6, [1])
        ]
    );
}

/// # Safety
/// The CPU has AVX2 and FMA (caller holds an `Isa` of kind Avx2 or Avx512); `g`
/// valid; as [`super::avx512::gemm`].
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm(g: &Raw, path: GemmPath, bl: Blocking) {
    match path {
        GemmPath::Skinny => skinny::<Avx2Kernel, 6>(g),
        _ => blocked::<Avx2Kernel, 6>(g, bl),
    }
}
