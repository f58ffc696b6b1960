//! Shared helpers and the named error budgets of the kernel tests.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// f32 GEMM vs the f64 reference: `|c - ref| <= GEMM_F32_REL · sqrt(k) · Σ_q |a·w|`
/// (+ the epilogue terms below). 4 f32 epsilons per sqrt(k): a dropped or doubled
/// product (error ≈ Σ|a·w| / k) still fails for every k up to ~10^9.
pub const GEMM_F32_REL: f64 = 4.0 * f32::EPSILON as f64;
/// Rounding of the epilogue adds (bias, residual, accumulate over K slices): in
/// units of |operand|.
pub const EPI_REL: f64 = 2.0 * f32::EPSILON as f64;
/// GELU vs f64: `|g - ref| <= GELU_ABS + GELU_REL·|ref|`. From the erf bound
/// (4.5e-7 abs): `0.5·|x|·4.5e-7` is ≤ 2.3e-7·|x| ≈ 2.3e-7·|ref| for x > 0, and for
/// x < 0 it is absolute (≤ 1.3e-6 at x ≈ -5.6, the clamp).
pub const GELU_ABS: f64 = 1.5e-6;
pub const GELU_REL: f64 = 4e-7;
/// |gelu'(x)| <= 1.13: how a pre-activation error propagates through GELU.
pub const GELU_LIPSCHITZ: f64 = 1.13;
/// LayerNorm vs f64: `|y - ref| <= LN_TOL · (|gamma| + |beta| + |ref|)` (measured
/// worst 1.7e-7 of that scale on rows offset by -30 with spread 2).
pub const LN_TOL: f64 = 2e-6;
/// Softmax vs f64: `|p - ref| <= SOFTMAX_ABS + SOFTMAX_REL·ref`.
pub const SOFTMAX_ABS: f64 = 1e-8;
pub const SOFTMAX_REL: f64 = 2e-6;
/// Attention vs f64 (inputs in [-2, 2]): `|o - ref| <= ATTN_TOL · max|v|`.
pub const ATTN_TOL: f64 = 5e-6;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut StdRng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(lo..hi)).collect()
}

/// A rayon pool of `threads` workers (capped at 4: the `*_par` calls may ask for more
/// tasks than the pool has threads).
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.min(4))
        .build()
        .unwrap()
}

/// `(m, n, k)` of the parallel-equals-serial tests of the `*_par` GEMMs: one row, tile
/// edges, a model shape, the column/row split threshold (32 | 33), a row split with an
/// odd K.
pub const PAR_SHAPES: [(usize, usize, usize); 6] = [
    (1, 100, 40),
    (7, 384, 64),
    (17, 1152, 384),
    (32, 33, 9),
    (33, 384, 96),
    (130, 200, 17),
];

/// Asserts `got` and `want` are bitwise equal element by element.
pub fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: element {i}: {} vs {}", got[i], want[i]);
    }
}

/// Asserts `|got - want| <= tol(i)` for every element; reports the worst.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst: Option<(usize, f64, f64)> = None;
    let mut max_ratio = 0.0f64;
    let mut max_abs = 0.0f64;
    for i in 0..got.len() {
        let err = (got[i] as f64 - want[i] as f64).abs();
        let t = tol(i);
        if t > 0.0 {
            max_ratio = max_ratio.max(err / t);
        }
        max_abs = max_abs.max(err);
        if err > t || got[i].is_nan() != want[i].is_nan() {
            let ratio = if t > 0.0 { err / t } else { f64::INFINITY };
            if worst.is_none_or(|(_, _, r)| ratio > r) {
                worst = Some((i, err, ratio));
            }
        }
    }
    // Visible with `--nocapture`: how much of the budget each check used.
    println!(
        "{what}: max abs err {max_abs:.2e}, {:.1}% of tolerance",
        100.0 * max_ratio
    );
    if let Some((i, err, ratio)) = worst {
        panic!(
            "{what}: element {i}: got {} want {} (err {err:.3e}, {ratio:.1}x tolerance {:.3e})",
            got[i],
            want[i],
            tol(i)
        );
    }
}

/// Random GEMM operands: `a: [m, k]`, `w: [n, k]` in [-1, 1), `bias: [n]`, `res: [m, n]` in
/// [-2, 2), all from one seed (shared by the GEMM test files).
pub struct GemmOperands {
    pub a: Vec<f32>,
    pub w: Vec<f32>,
    pub bias: Vec<f32>,
    pub res: Vec<f32>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl GemmOperands {
    pub fn new(m: usize, n: usize, k: usize, seed: u64) -> GemmOperands {
        let mut r = rng(seed);
        GemmOperands {
            a: uniform(&mut r, m * k, -1.0, 1.0),
            w: uniform(&mut r, n * k, -1.0, 1.0),
            bias: uniform(&mut r, n, -1.0, 1.0),
            res: uniform(&mut r, m * n, -2.0, 2.0),
            m,
            n,
            k,
        }
    }
}

/// `bytes` written to a new file at byte `offset` (zeros before it), mapped read-only (the
/// file is removed at once: the mapping keeps it). For the `from_packed` round trips.
pub fn mapped(bytes: &[u8], offset: usize) -> std::sync::Arc<e5embed_kernels::mapped::MappedFile> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "e5embed-kernels-test-{}-{}.bin",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut all = vec![0u8; offset];
    all.extend_from_slice(bytes);
    std::fs::write(&path, &all).unwrap();
    let map = e5embed_kernels::mapped::MappedFile::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    map
}
