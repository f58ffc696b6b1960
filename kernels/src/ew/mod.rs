//! Element-wise and row ops: LayerNorm, softmax, exact-erf GELU.
//! Reference (f64) in `reference.rs`; the fast paths are written once in `rows.rs`
//! and instantiated per ISA below.

mod reference;
mod rows;

pub use reference::{gelu_erf_reference, layernorm_reference, softmax_reference};

use crate::isa::{Isa, IsaKind};
use crate::simd::Scalar;
use crate::{shape_err, KernelError};

pub(crate) fn validate_rows(what: &str, len: usize, cols: usize) -> Result<(), KernelError> {
    if cols == 0 {
        return shape_err!("{what}: cols must be > 0");
    }
    if !len.is_multiple_of(cols) {
        return shape_err!("{what}: length {len} is not a multiple of cols = {cols}");
    }
    Ok(())
}

/// Per-ISA `#[target_feature]` entry points around the generic row ops.
macro_rules! isa_entries {
    ($arch:literal, $modname:ident, $simd:path, $feat:literal) => {
        #[cfg(target_arch = $arch)]
        mod $modname {
            use super::rows;

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn layernorm(
                x: &mut [f32],
                cols: usize,
                gamma: &[f32],
                beta: &[f32],
                eps: f32,
            ) {
                rows::layernorm::<$simd>(x, cols, gamma, beta, eps)
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn softmax_scaled(x: &mut [f32], cols: usize, scale: f32) {
                rows::softmax_scaled::<$simd>(x, cols, scale)
            }

            #[target_feature(enable = $feat)]
            pub(super) unsafe fn gelu(x: &mut [f32]) {
                rows::gelu::<$simd>(x)
            }
        }
    };
}

isa_entries!("x86_64", avx2, crate::simd::avx2::Avx2, "avx2,fma");
isa_entries!("aarch64", neon, crate::simd::neon::Neon, "neon");
isa_entries!(
    "x86_64",
    avx512,
    crate::simd::avx512::Avx512,
    "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma"
);

/// LayerNorm of each `cols`-wide row of `x: [rows, cols]` in place (PyTorch
/// semantics: biased variance, `eps` inside the sqrt). `gamma`, `beta`: `[cols]`.
pub fn layernorm(
    isa: Isa,
    x: &mut [f32],
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    validate_rows("layernorm", x.len(), cols)?;
    if gamma.len() != cols || beta.len() != cols {
        return shape_err!(
            "layernorm: gamma/beta have {}/{} floats, expected cols = {cols}",
            gamma.len(),
            beta.len()
        );
    }
    // SAFETY: shapes validated; the token proves the ISA.
    unsafe {
        match isa.kind() {
            IsaKind::Scalar => rows::layernorm::<Scalar>(x, cols, gamma, beta, eps),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => avx2::layernorm(x, cols, gamma, beta, eps),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => avx512::layernorm(x, cols, gamma, beta, eps),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon => neon::layernorm(x, cols, gamma, beta, eps),
            // Kinds of another architecture: no token can exist for them here.
            #[allow(unreachable_patterns)]
            _ => rows::layernorm::<Scalar>(x, cols, gamma, beta, eps),
        }
    }
    Ok(())
}

/// `0.5·x·(1 + erf(x/√2))` in place, vectorized erf (max abs error of erf 4.4e-7,
/// see `math::erf`).
pub fn gelu_erf(isa: Isa, x: &mut [f32]) {
    // SAFETY: any length is valid; the token proves the ISA.
    unsafe {
        match isa.kind() {
            IsaKind::Scalar => rows::gelu::<Scalar>(x),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => avx2::gelu(x),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => avx512::gelu(x),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon => neon::gelu(x),
            // Kinds of another architecture: no token can exist for them here.
            #[allow(unreachable_patterns)]
            _ => rows::gelu::<Scalar>(x),
        }
    }
}

/// Softmax of each `cols`-wide row of `x: [rows, cols]` in place.
pub fn softmax(isa: Isa, x: &mut [f32], cols: usize) -> Result<(), KernelError> {
    softmax_scaled(isa, x, cols, 1.0)
}

/// `softmax(scale · row)` of each `cols`-wide row in place (attention folds
/// `1/sqrt(head_dim)` in here).
pub fn softmax_scaled(isa: Isa, x: &mut [f32], cols: usize, scale: f32) -> Result<(), KernelError> {
    validate_rows("softmax", x.len(), cols)?;
    // SAFETY: shapes validated; the token proves the ISA.
    unsafe {
        match isa.kind() {
            IsaKind::Scalar => rows::softmax_scaled::<Scalar>(x, cols, scale),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => avx2::softmax_scaled(x, cols, scale),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => avx512::softmax_scaled(x, cols, scale),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon => neon::softmax_scaled(x, cols, scale),
            // Kinds of another architecture: no token can exist for them here.
            #[allow(unreachable_patterns)]
            _ => rows::softmax_scaled::<Scalar>(x, cols, scale),
        }
    }
    Ok(())
}
