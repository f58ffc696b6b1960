//! AVX-512 microkernel `gemm_f32_avx512_12x32`: 12 rows x 2 zmm = 24 accumulators,
//! + 2 B vectors + 1 A broadcast = 27 of 32 zmm registers.

use super::kernel::{driver, tile_dispatch, Kernel, Raw};
use crate::simd::avx512::Avx512;

pub(crate) struct Avx512Kernel;

impl Kernel for Avx512Kernel {
    const NAME: &'static str = "gemm_f32_avx512_12x32";
    const MR: usize = 12;
    const NR: usize = 32;
    const MC: usize = 240;
    const KC: usize = 192;
    const NC: usize = 3072;
    tile_dispatch!(Avx512, 2, 12, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
}

/// # Safety
/// The CPU has AVX-512 F/BW/VL/DQ, AVX2 and FMA (caller holds an `Isa` of kind
/// Avx512); `g` valid.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
pub(crate) unsafe fn gemm(g: &Raw) {
    driver::<Avx512Kernel, 12>(g)
}
