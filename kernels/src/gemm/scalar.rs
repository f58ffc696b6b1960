//! Portable microkernel `gemm_f32_scalar_4x8` (also the generic code's sanity check).

use super::kernel::{blocked, skinny, tile_dispatch, Blocking, GemmPath, Kernel, Raw};
use crate::simd::Scalar;

pub(crate) struct ScalarKernel;

impl Kernel for ScalarKernel {
    const NAME: &'static str = "gemm_f32_scalar_4x8";
    const MR: usize = 4;
    const NR: usize = 8;
    const KC_MAX: usize = 512;
    tile_dispatch!(Scalar, 8, 4, [(1, [2, 1]), (2, [1]), (3, [1]), (4, [1])]);
}

/// # Safety
/// `g` valid (checked by the safe wrappers); as [`super::avx512::gemm`].
pub(crate) unsafe fn gemm(g: &Raw, path: GemmPath, bl: Blocking) {
    match path {
        GemmPath::Skinny => skinny::<ScalarKernel, 4>(g),
        _ => blocked::<ScalarKernel, 4>(g, bl),
    }
}
