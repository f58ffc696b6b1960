//! Readable references in f64 (one rounding to f32 at the end).

use super::validate_rows;
use crate::gemm::gelu_f64;
use crate::{shape_err, KernelError};

/// LayerNorm of each `cols`-wide row: `(x - mean)/sqrt(var + eps)·gamma + beta`,
/// biased variance (PyTorch), computed in f64.
pub fn layernorm_reference(
    x: &mut [f32],
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), KernelError> {
    validate_rows("layernorm_reference", x.len(), cols)?;
    if gamma.len() != cols || beta.len() != cols {
        return shape_err!(
            "layernorm_reference: gamma/beta have {}/{} floats, expected cols = {cols}",
            gamma.len(),
            beta.len()
        );
    }
    for row in x.chunks_exact_mut(cols) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = ((*v as f64 - mean) * rstd * gamma[j] as f64 + beta[j] as f64) as f32;
        }
    }
    Ok(())
}

/// `0.5·x·(1 + erf(x/√2))` with f64 `erf` (libm).
pub fn gelu_erf_reference(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_f64(*v as f64) as f32;
    }
}

/// Softmax of each `cols`-wide row, in f64.
pub fn softmax_reference(x: &mut [f32], cols: usize) -> Result<(), KernelError> {
    validate_rows("softmax_reference", x.len(), cols)?;
    for row in x.chunks_exact_mut(cols) {
        let mx = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
        for v in row.iter_mut() {
            *v = ((*v as f64 - mx).exp() / sum) as f32;
        }
    }
    Ok(())
}
