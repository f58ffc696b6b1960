//! Portable microkernel `gemm_f32_scalar_4x8` (also the generic code's sanity check).

use super::kernel::{driver, tile_dispatch, Kernel, Raw};
use crate::simd::Scalar;

pub(crate) struct ScalarKernel;

impl Kernel for ScalarKernel {
    const NAME: &'static str = "gemm_f32_scalar_4x8";
    const MR: usize = 4;
    const NR: usize = 8;
    const MC: usize = 128;
    const KC: usize = 256;
    const NC: usize = 3072;
    tile_dispatch!(Scalar, 8, 4, [1, 2, 3, 4]);
}

/// # Safety
/// `g` valid (checked by the safe wrappers).
pub(crate) unsafe fn gemm(g: &Raw) {
    driver::<ScalarKernel, 4>(g)
}
