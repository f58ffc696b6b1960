//! The readable reference GEMM: f64 accumulation, f64 epilogue, one rounding at the
//! end. It defines what the fast paths must match (within `sqrt(k)`-scaled budgets).

use super::{validate_epilogue, Epilogue};
use crate::{shape_err, KernelError};

/// `C[m, n] = epilogue(Σ_q A[i, q] · W[j, q])`, W in PyTorch Linear layout `[n, k]`.
pub fn gemm_f32_reference(
    a: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    if a.len() != crate::checked_len("gemm_reference a", &[m, k])? {
        return shape_err!(
            "gemm_reference: a has {} floats, expected m*k = {m}*{k}",
            a.len()
        );
    }
    if w.len() != crate::checked_len("gemm_reference w", &[n, k])? {
        return shape_err!(
            "gemm_reference: w has {} floats, expected n*k = {n}*{k}",
            w.len()
        );
    }
    if c.len() != crate::checked_len("gemm_reference c", &[m, n])? {
        return shape_err!(
            "gemm_reference: c has {} floats, expected m*n = {m}*{n}",
            c.len()
        );
    }
    validate_epilogue(&epilogue, m, n)?;
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for q in 0..k {
                s += a[i * k + q] as f64 * w[j * k + q] as f64;
            }
            let v = match epilogue {
                Epilogue::None => s,
                Epilogue::Bias(b) => s + b[j] as f64,
                Epilogue::BiasGelu(b) => gelu_f64(s + b[j] as f64),
                Epilogue::BiasResidual { bias, residual } => {
                    s + bias[j] as f64 + residual[i * n + j] as f64
                }
            };
            c[i * n + j] = v as f32;
        }
    }
    Ok(())
}

/// `0.5·x·(1 + erf(x/√2))` in f64.
pub(crate) fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))
}
