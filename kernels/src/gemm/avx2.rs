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
