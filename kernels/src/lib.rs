//! `e5embed-kernels`: every intrinsic and `unsafe` block of e5embed lives here.
//!
//! The crate exposes *safe* functions taking slices and an [`Isa`] token. Each public
//! function validates its preconditions (lengths, shapes) and returns
//! [`KernelError::Shape`] instead of panicking; only after that does it enter the
//! `unsafe` per-ISA code. An [`Isa`] can only be constructed on a CPU that has the
//! instructions, so holding one proves the `#[target_feature]` code behind it is sound
//! to run.
//!
//! Layout:
//! - [`isa`]: CPU features detected once ([`isa::Features`]) and the one token type
//!   [`isa::Path`] of every kernel family ([`Isa`], [`qgemm::QIsa`], [`bgemm::BIsa`]: each
//!   family's kinds say which features they need), names for an explicit override.
//! - [`gemm`]: packed-weight GEMM (`C = A·Wᵀ` + fused epilogue), reference, microkernels.
//! - [`ew`]: row ops (LayerNorm, softmax) and element-wise GELU, reference + fast.
//! - [`attention`]: fused per-(sequence, head) attention, reference + fast (f32 on every
//!   ISA; bf16 operands on AVX512-BF16, `attention::attention_bf16`).
//! - [`peak`]: measured FMA peak and memory bandwidth (speed-of-light probes).
//! - [`amx`]: AMX detection (CPUID, XCR0) and Linux's tile-data permission, once.
//! - [`tiles`]: the AMX tile-instruction interface, its emulator and hardware backends,
//!   and the one tile GEMM loop the AMX int8 and bf16 GEMMs share.
//! - [`hugepage`]: big buffers advised onto transparent huge pages (Linux).
//! - [`mapped`]: files memory-mapped read-only and f32 ranges of them (the project's one
//!   `mmap`): packed weights used where they lie in a cache file.
//!
//! Internals: `epilogue` (the one [`Epilogue`] of the f32, int8 and bf16 GEMMs: its
//! scalar form for the references and fallbacks, its raw-pointer vector form that every
//! SIMD tile ends through), `par` (the one split of a call across rayon tasks),
//! `simd` (one small trait implemented per ISA: every fast kernel is written
//! once, generically, and instantiated inside `#[target_feature]` wrappers), `math`
//! (vectorized exp / erf with their measured error bounds), `buf` (64-byte aligned
//! buffers and per-thread scratch).

//! # What callers can rely on
//! - **No alignment requirements** on any slice passed in; packed weights and scratch
//!   are 64-byte aligned internally.
//! - **Thread safety**: every kernel is single-threaded and re-entrant across threads;
//!   [`PackedMatrix`] is immutable, `Send + Sync`, shared freely. No locks anywhere.
//! - **Scratch**: GEMM keeps one thread-local packed-A block (`MC x KC` floats, MC
//!   and KC from the detected caches: at most ~3/4 of the L2; the skinny path for
//!   `m <= gemm::AUTO_SKINNY_MAX_M` packs nothing) and attention one thread-local set (K/V panels `2·seq·d` and
//!   a `2·MR x seq` score block, ~0.15 MB at seq 512). Allocated on a thread's first
//!   call and grown to the largest shape seen, never shrunk: warm up each worker
//!   thread once with the largest shape to keep the hot path allocation-free.
//! - **Splitting rows or columns**: [`gemm_f32`] on row sub-slices (A rows, C rows,
//!   residual rows), [`gemm_f32_cols`] on column ranges, and [`gemm_f32_par`] with any
//!   thread count give bit-identical results to one call (each element is one
//!   in-order FMA chain over K whatever the path or blocking); row chunks that are
//!   multiples of [`gemm::tile`]'s MR avoid edge tiles. Same for attention heads
//!   ([`attention_f32_heads`]).
//! - **Determinism**: results depend only on the inputs and the ISA (no threading or
//!   timing effects inside a call); different ISAs differ within the named budgets.

// Kernel code indexes small fixed-size register tiles (`acc[r][v]`) in loops the
// compiler fully unrolls; iterator rewrites of those loops obscure the tile shape.
#![allow(clippy::needless_range_loop)]

pub mod amx;
pub mod attention;
pub mod bgemm;
pub mod cache;
pub mod ew;
pub mod gemm;
pub mod hugepage;
pub mod isa;
pub mod mapped;
pub mod peak;
pub mod qgemm;
pub mod tiles;

mod buf;
mod epilogue;
mod math;
mod par;
mod simd;

pub use attention::{attention_f32, attention_f32_heads, attention_f32_par, attention_reference};
pub use ew::{
    gelu_erf, gelu_erf_reference, layernorm, layernorm_reference, softmax, softmax_reference,
};
pub use gemm::{
    gemm_f32, gemm_f32_cols, gemm_f32_par, gemm_f32_path, gemm_f32_reference, Epilogue, GemmPath,
    PackedMatrix,
};
pub use isa::{Isa, IsaKind};
pub use par::row_share;

/// Version of the packed weight layouts (f32 panels, int8 VNNI / `smmla` / AMX panels with
/// their scales and compensation, bf16 pairs and tiles): bumped whenever any of them
/// changes, so that packed weights saved under another version (the engine's packed-weights
/// cache: [`PackedMatrix::packed_bytes`] and `from_packed`) are packed again, not misread.
pub const LAYOUT_VERSION: u32 = 1;

/// The index of the first value of `x` that is not finite (NaN or infinite), if any.
/// Scans 4096 values at a time with a branch-free OR of "exponent all ones" (which the
/// compiler vectorizes: the all-finite case is one pass at memory speed) and looks for the
/// index only in the block that has one. Used on every weight tensor at load and in
/// [`qgemm::QuantizedMatrix::quantize`].
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    const BLOCK: usize = 4096;
    x.chunks(BLOCK).enumerate().find_map(|(b, c)| {
        let any = c.iter().fold(0u32, |acc, v| {
            acc | ((v.to_bits() & 0x7f80_0000 == 0x7f80_0000) as u32)
        });
        if any == 0 {
            return None;
        }
        c.iter().position(|v| !v.is_finite()).map(|i| b * BLOCK + i)
    })
}

/// Copies `src` in groups of `group` elements (the last may be shorter) to
/// `dst[base + g * stride..]`, group `g` at a time: one packed weight row in the layouts that
/// keep k-groups together (int8 `[q / kg][column][q % kg]`, bf16 pairs and `bfmmla` fours).
/// An element loop inside the group: `copy_from_slice` of a few elements is a memcpy call.
pub(crate) fn scatter_groups<T: Copy>(
    src: &[T],
    group: usize,
    dst: &mut [T],
    base: usize,
    stride: usize,
) {
    for (g, grp) in src.chunks(group).enumerate() {
        let o = base + g * stride;
        for (t, &v) in grp.iter().enumerate() {
            dst[o + t] = v;
        }
    }
}

/// Errors returned by the kernels. Kernels never panic on bad shapes.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// A length or dimension does not match what the operation needs.
    Shape(String),
    /// An ISA name is not one of `scalar|avx2|avx512`.
    UnknownIsa(String),
    /// The requested ISA exists but this CPU does not support it.
    UnsupportedIsa(String),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Shape(m) => write!(f, "shape error: {m}"),
            KernelError::UnknownIsa(s) => {
                write!(f, "unknown ISA {s:?} (expected scalar, avx2 or avx512)")
            }
            KernelError::UnsupportedIsa(s) => {
                write!(f, "ISA {s} is not supported by this CPU")
            }
        }
    }
}

impl std::error::Error for KernelError {}

/// Shorthand used by the validators: `Err(KernelError::Shape(format!(...)))`.
macro_rules! shape_err {
    ($($t:tt)*) => { Err($crate::KernelError::Shape(format!($($t)*))) };
}
pub(crate) use shape_err;

/// The product of `dims` (a buffer length), or a shape error if it overflows `usize`.
pub(crate) fn checked_len(what: &str, dims: &[usize]) -> Result<usize, KernelError> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| KernelError::Shape(format!("{what}: dimensions {dims:?} overflow usize")))
}

#[cfg(test)]
mod finite_tests {
    use super::first_non_finite;

    #[test]
    fn first_non_finite_finds_the_first_bad_value_in_any_block() {
        assert_eq!(first_non_finite(&[]), None);
        let mut x: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.0) * 1e30).collect();
        x.extend([f32::MAX, f32::MIN, f32::MIN_POSITIVE, 1e-45, -0.0]);
        assert_eq!(first_non_finite(&x), None);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
            for at in [0, 1, 4095, 4096, 4097, 8191, x.len() - 1] {
                let mut y = x.clone();
                y[at] = bad;
                // A later bad value does not hide the first one.
                let last = y.len() - 1;
                y[last] = f32::NAN;
                assert_eq!(first_non_finite(&y), Some(at), "{bad} at {at}");
            }
        }
    }
}
