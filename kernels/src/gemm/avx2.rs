//! AVX2+FMA microkernel `gemm_f32_avx2_6x16`: 6 rows x 2 ymm = 12 accumulators,
//! + 2 B vectors + 1 A broadcast = 15 of 16 ymm registers.

use super::kernel::{driver, tile_dispatch, Kernel, Raw};
use crate::simd::avx2::Avx2;

pub(crate) struct Avx2Kernel;

impl Kernel for Avx2Kernel {
    const NAME: &'static str = "gemm_f32_avx2_6x16";
    const MR: usize = 6;
    const NR: usize = 16;
    const MC: usize = 168;
    const KC: usize = 256;
    const NC: usize = 3072;
    tile_dispatch!(Avx2, 2, 6, [1, 2, 3, 4, 5, 6]);
}

/// # Safety
/// The CPU has AVX2 and FMA (caller holds an `Isa` of kind Avx2 or Avx512); `g` valid.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm(g: &Raw) {
    driver::<Avx2Kernel, 6>(g)
}
