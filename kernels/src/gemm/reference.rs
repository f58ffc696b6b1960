//! The readable reference GEMM: f64 accumulation, f64 epilogue, one rounding at the
//! end. It defines what the fast paths must match (within `sqrt(k)`-scaled budgets).

use super::Epilogue;
use crate::{shape_err, KernelError};

/// Checks the operand lengths of a reference GEMM: `a: [m, k]`, `w: [n, k]`, `c: [m, n]`
/// (shared by the f32 and bf16 references).
pub(crate) fn validate_dense(
    what: &str,
    a_len: usize,
    w_len: usize,
    c_len: usize,
    m: usize,
    n: usize,
    k: usize,
) -> Result<(), KernelError> {
    for (name, len, dims) in [
        ("a", a_len, [m, k]),
        ("w", w_len, [n, k]),
        ("c", c_len, [m, n]),
    ] {
        if len != crate::checked_len(what, &dims)? {
            return shape_err!(
                "{what}: {name} has {len} elements, expected {}*{} = {:?}",
                dims[0],
                dims[1],
                dims[0].checked_mul(dims[1])
            );
        }
    }
    Ok(())
}

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
    validate_dense("gemm_reference", a.len(), w.len(), c.len(), m, n, k)?;
    crate::epilogue::validate(&epilogue, m, n)?;
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
