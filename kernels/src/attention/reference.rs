//! Readable attention reference: per head, per query row, scores in f64.

use super::validate;
use crate::KernelError;

/// `out[i, h*d..] = Σ_j softmax_j(q_i·k_j / sqrt(d)) v_j` for one unmasked sequence;
/// `qkv: [seq, 3H]` (Q | K | V, head `h` at columns `h*d..` of each), `out: [seq, H]`.
pub fn attention_reference(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    validate("attention_reference", qkv, seq, heads, head_dim, out)?;
    let h_all = heads * head_dim;
    let row = 3 * h_all;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut scores = vec![0.0f64; seq];
    for h in 0..heads {
        let (qo, ko, vo) = (h * head_dim, h_all + h * head_dim, 2 * h_all + h * head_dim);
        for i in 0..seq {
            let q = &qkv[i * row + qo..i * row + qo + head_dim];
            for (j, s) in scores.iter_mut().enumerate() {
                let k = &qkv[j * row + ko..j * row + ko + head_dim];
                *s = q
                    .iter()
                    .zip(k)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale;
            }
            let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - mx).exp();
                sum += *s;
            }
            for d in 0..head_dim {
                let mut acc = 0.0f64;
                for (j, &p) in scores.iter().enumerate() {
                    acc += p * qkv[j * row + vo + d] as f64;
                }
                out[i * h_all + h * head_dim + d] = (acc / sum) as f32;
            }
        }
    }
    Ok(())
}
