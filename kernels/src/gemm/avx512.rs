//! AVX-512 microkernel `gemm_f32_avx512_12x32`: 12 rows x 2 zmm = 24 accumulators,
//! plus 2 B vectors and 1 A broadcast = 27 of 32 zmm registers. Skinny tiles for few
//! rows: 1-2 rows x 4 panels (8-16 acc + 8 B), 3-6 rows x 2 panels (12-24 acc + 4 B).

use super::kernel::{blocked, skinny, tile_dispatch, Blocking, GemmPath, Kernel, Raw};
use crate::simd::avx512::Avx512;

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
        GemmPath::Skinny => skinny::<Avx512Kernel, 12>(g),
        _ => blocked::<Avx512Kernel, 12>(g, bl),
    }
}
