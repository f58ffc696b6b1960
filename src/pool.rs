//! Pooling token vectors into one text vector, and L2 normalization.

use crate::config::Pooling;

/// Pools one text's last hidden state `hidden: [tokens, dim]` into `out: [dim]`.
/// Mean pooling averages every token of the text (the engine never stores padding, so the
/// padding mask of sentence-transformers' masked mean is implicit); CLS takes the first row.
pub fn pool(hidden: &[f32], dim: usize, pooling: Pooling, out: &mut [f32]) {
    debug_assert_eq!(out.len(), dim);
    let tokens = hidden.len() / dim;
    match pooling {
        Pooling::Cls => out.copy_from_slice(&hidden[..dim]),
        Pooling::Mean => {
            out.fill(0.0);
            for row in hidden.chunks_exact(dim) {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
            // sentence-transformers divides by max(mask sum, 1e-9); tokens >= 2 here.
            let inv = 1.0 / (tokens.max(1) as f32);
            for o in out.iter_mut() {
                *o *= inv;
            }
        }
    }
}

/// Divides `v` by its L2 norm (as torch.nn.functional.normalize: norm clamped at 1e-12).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let inv = 1.0 / norm.max(1e-12);
    for x in v.iter_mut() {
        *x = (*x as f64 * inv) as f32;
    }
}

/// Cosine similarity of two vectors (f64 accumulation).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-300)
}
