//! aarch64 NEON microkernel `gemm_f32_neon_8x12`: 8 rows x 3 q-registers (12 columns)
//! = 24 accumulators, plus 3 B vectors and 2 A vectors = 29 of the 32 vector registers.
//!
//! The full packed tile (8 rows, A packed `[kc][8]`) is written out here: per K step
//! it loads the 8 activations of the K index as two vectors (`ldp q`) and the 12
//! weights as three, then issues 24 `fmla v.4s, v.4s, v.s[lane]` (FMA by element), so
//! the inner loop is 24 FMAs among 27-29 vector instructions (kernels/PERF.md counts
//! it from the disassembly). `fmla` by element computes `acc + b·a[lane]` with one
//! rounding, the same value as the generic kernel's `fma(splat(a), b, acc)`, so the
//! bitwise invariant of `kernel.rs` holds between this tile, the edge tiles and the
//! skinny tiles (all the generic [`ukernel`] over [`Neon`]).
//!
//! Skinny tiles: 1 row x 4 panels (12 acc), 2 rows x 2 panels (12 acc), 3-4 rows x 2
//! panels (18-24 acc); 5-8 rows x 1 panel.

use super::kernel::{blocked, finish, skinny, ukernel, Blocking, GemmPath, Kernel, Raw, Tile};
use crate::simd::neon::Neon;
use crate::simd::{prefetch_l1, Simd};
use std::arch::aarch64::*;

pub(crate) struct NeonKernel;

const MR: usize = 8;
const NV: usize = 3;

impl Kernel for NeonKernel {
    const NAME: &'static str = "gemm_f32_neon_8x12";
    const MR: usize = MR;
    const NR: usize = NV * 4;
    const KC_MAX: usize = 512;

    #[inline(always)]
    unsafe fn tile(mr: usize, t: &Tile) {
        match mr {
            8 => tile_8x12_packed(t),
            7 => ukernel::<Neon, 7, NV, NV, MR>(t),
            6 => ukernel::<Neon, 6, NV, NV, MR>(t),
            5 => ukernel::<Neon, 5, NV, NV, MR>(t),
            4 => ukernel::<Neon, 4, NV, NV, MR>(t),
            3 => ukernel::<Neon, 3, NV, NV, MR>(t),
            2 => ukernel::<Neon, 2, NV, NV, MR>(t),
            1 => ukernel::<Neon, 1, NV, NV, MR>(t),
            _ => unreachable!("tile rows {mr} out of 1..={MR}"),
        }
    }

    fn skinny_panels(mr: usize) -> usize {
        match mr {
            1 => 4,
            2..=4 => 2,
            _ => 1,
        }
    }

    #[inline(always)]
    unsafe fn skinny_tile(mr: usize, np: usize, t: &Tile) {
        match (mr, np) {
            (1, 4) => ukernel::<Neon, 1, { 4 * NV }, NV, 0>(t),
            (1, 2) => ukernel::<Neon, 1, { 2 * NV }, NV, 0>(t),
            (2, 2) => ukernel::<Neon, 2, { 2 * NV }, NV, 0>(t),
            (3, 2) => ukernel::<Neon, 3, { 2 * NV }, NV, 0>(t),
            (4, 2) => ukernel::<Neon, 4, { 2 * NV }, NV, 0>(t),
            (1, 1) => ukernel::<Neon, 1, NV, NV, 0>(t),
            (2, 1) => ukernel::<Neon, 2, NV, NV, 0>(t),
            (3, 1) => ukernel::<Neon, 3, NV, NV, 0>(t),
            (4, 1) => ukernel::<Neon, 4, NV, NV, 0>(t),
            (5, 1) => ukernel::<Neon, 5, NV, NV, 0>(t),
            (6, 1) => ukernel::<Neon, 6, NV, NV, 0>(t),
            (7, 1) => ukernel::<Neon, 7, NV, NV, 0>(t),
            (8, 1) => ukernel::<Neon, 8, NV, NV, 0>(t),
            _ => unreachable!("skinny tile {mr} x {np} panels"),
        }
    }
}

/// One K step of the full tile: A (8 floats) as two vectors, B (12) as three, 24 FMAs
/// by element. Row `r` uses lane `r % 4` of A vector `r / 4`.
#[inline(always)]
unsafe fn k_step_8x12(acc: &mut [[float32x4_t; NV]; MR], a: *const f32, b: *const f32) {
    let a0 = vld1q_f32(a);
    let a1 = vld1q_f32(a.add(4));
    let bv = [vld1q_f32(b), vld1q_f32(b.add(4)), vld1q_f32(b.add(8))];
    for v in 0..NV {
        acc[0][v] = vfmaq_laneq_f32::<0>(acc[0][v], bv[v], a0);
        acc[1][v] = vfmaq_laneq_f32::<1>(acc[1][v], bv[v], a0);
        acc[2][v] = vfmaq_laneq_f32::<2>(acc[2][v], bv[v], a0);
        acc[3][v] = vfmaq_laneq_f32::<3>(acc[3][v], bv[v], a0);
        acc[4][v] = vfmaq_laneq_f32::<0>(acc[4][v], bv[v], a1);
        acc[5][v] = vfmaq_laneq_f32::<1>(acc[5][v], bv[v], a1);
        acc[6][v] = vfmaq_laneq_f32::<2>(acc[6][v], bv[v], a1);
        acc[7][v] = vfmaq_laneq_f32::<3>(acc[7][v], bv[v], a1);
    }
}

/// The full 8 x 12 tile over packed A (`[kc][8]`): same chains, start and epilogue as
/// [`ukernel`] (see `kernel.rs`), with the A broadcasts folded into `fmla` by element.
///
/// Not inlined: one call per tile and K slice (`kc` steps of 24 FMAs each), and its
/// own symbol, so kernels/PERF.md can count its inner loop in the disassembly.
///
/// # Safety
/// As [`ukernel`] with `M = 8`, packed A (panel stride 8).
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn tile_8x12_packed(t: &Tile) {
    let mut acc = [[vdupq_n_f32(0.0); NV]; MR];
    if t.accumulate {
        for r in 0..MR {
            let crow = t.c.add(r * t.ldc);
            for v in 0..NV {
                let col = v * 4;
                if col < t.nr {
                    acc[r][v] = Neon::load_n(crow.add(col), (t.nr - col).min(4));
                }
            }
        }
    }
    if !t.c_next.is_null() {
        for r in 0..MR {
            prefetch_l1(t.c_next.wrapping_add(r * t.ldc));
        }
    }
    let mut a = t.a;
    let mut b = t.b;
    let mut kk = t.kc;
    while kk >= 2 {
        k_step_8x12(&mut acc, a, b);
        k_step_8x12(&mut acc, a.add(MR), b.add(NV * 4));
        a = a.add(2 * MR);
        b = b.add(2 * NV * 4);
        kk -= 2;
    }
    if kk == 1 {
        k_step_8x12(&mut acc, a, b);
    }
    store_8x12(acc, t);
}

/// The epilogue and store of the finished tile. Out of line and taking the tile by
/// value: with the epilogue's loops inlined LLVM kept `acc` in memory and stored all 24
/// accumulators to the stack on every K step (seen in the disassembly).
#[inline(never)]
#[target_feature(enable = "neon")]
unsafe fn store_8x12(acc: [[float32x4_t; NV]; MR], t: &Tile) {
    for (r, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            let col = v * 4;
            if col >= t.nr {
                break;
            }
            finish::<Neon>(x, t.epi, r, col, (t.nr - col).min(4), t.c, t.ldc);
        }
    }
}

/// # Safety
/// The CPU has NEON (caller holds an `Isa` of kind Neon); `g` valid; as
/// [`super::run_path`].
#[target_feature(enable = "neon")]
pub(crate) unsafe fn gemm(g: &Raw, path: GemmPath, bl: Blocking) {
    match path {
        GemmPath::Skinny => skinny::<NeonKernel, MR>(g),
        _ => blocked::<NeonKernel, MR>(g, bl),
    }
}
