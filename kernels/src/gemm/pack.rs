//! Packing W (B side) into NR-wide, K-major, zero-padded panels.

use crate::{shape_err, KernelError};

/// Floats needed for `n x k` packed with panel width `nr`.
pub(crate) fn packed_len(n: usize, k: usize, nr: usize) -> usize {
    n.div_ceil(nr) * nr * k
}

/// Packs the logical matrix `W[n, k]`, element `(j, q)` at `src[j * rs_n + q * cs_k]`,
/// into `dst`: panel `p = j / nr` holds `[k][nr]` (`dst[p*k*nr + q*nr + j%nr]`),
/// columns past `n` zero.
///
/// Strides let the same packer take a PyTorch Linear weight (`rs_n = k, cs_k = 1`),
/// a head's K slice of the fused QKV activations (`rs_n = 3H, cs_k = 1`) and a
/// head's V slice transposed (`rs_n = 1, cs_k = 3H`).
pub(crate) fn pack_b(
    dst: &mut [f32],
    nr: usize,
    src: &[f32],
    n: usize,
    k: usize,
    rs_n: usize,
    cs_k: usize,
) -> Result<(), KernelError> {
    let need = packed_len(n, k, nr);
    if dst.len() < need {
        return shape_err!("pack_b: dst has {} floats, needs {need}", dst.len());
    }
    if n > 0 && k > 0 {
        let last = (n - 1) * rs_n + (k - 1) * cs_k;
        if last >= src.len() {
            return shape_err!("pack_b: src has {} floats, needs {}", src.len(), last + 1);
        }
    }
    for p in 0..n.div_ceil(nr) {
        let panel = &mut dst[p * k * nr..(p + 1) * k * nr];
        for jj in 0..nr {
            let j = p * nr + jj;
            if j < n {
                if cs_k == 1 {
                    let row = &src[j * rs_n..j * rs_n + k];
                    for (q, &x) in row.iter().enumerate() {
                        panel[q * nr + jj] = x;
                    }
                } else {
                    for q in 0..k {
                        panel[q * nr + jj] = src[j * rs_n + q * cs_k];
                    }
                }
            } else {
                for q in 0..k {
                    panel[q * nr + jj] = 0.0;
                }
            }
        }
    }
    Ok(())
}
