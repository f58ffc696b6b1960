//! Quick bf16 GEMM timing without criterion: the model's four shapes x T, median of
//! repetitions, GFLOP/s. `cargo run --release -p e5embed-kernels --example bgemm_probe --
//! [T,T,..] [bisa]` (bisa: `scalar`, `avx512widen`, `avx512bf16`; default `BIsa::best`).

use e5embed_kernels::bgemm::{gemm_bf16, BIsa, Bf16Matrix};
use e5embed_kernels::Epilogue;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ts: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|t| t.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 32, 128, 512]);
    let bisa = args
        .get(2)
        .map(|s| BIsa::from_name(s).unwrap())
        .unwrap_or(BIsa::best());
    println!("{}: {}", bisa.name(), bisa.kernel_name());
    let shapes = [
        ("qkv", 1152, 384),
        ("attn_out", 384, 384),
        ("ffn_up", 1536, 384),
        ("ffn_down", 384, 1536),
    ];
    for (name, n, k) in shapes {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        let p = Bf16Matrix::from_f32(bisa, &w, n, k).unwrap();
        for &t in &ts {
            let a: Vec<f32> = (0..t * k)
                .map(|i| ((i * 31) % 97) as f32 * 1e-2 - 0.5)
                .collect();
            let res = vec![0.25f32; t * n];
            let mut c = vec![0.0f32; t * n];
            let epi = match name {
                "qkv" => Epilogue::Bias(&bias),
                "ffn_up" => Epilogue::BiasGelu(&bias),
                _ => Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            };
            let flops = 2.0 * (t * n * k) as f64;
            let inner = ((2e8 / flops) as usize).max(1);
            let mut times = Vec::new();
            for _ in 0..15 {
                let t0 = Instant::now();
                for _ in 0..inner {
                    gemm_bf16(&a, t, &p, &mut c, epi).unwrap();
                }
                times.push(t0.elapsed().as_secs_f64() / inner as f64);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = times[times.len() / 2];
            println!(
                "{name:9} T={t:5} N={n:5} K={k:5}: {:9.1} us {:7.1} GFLOP/s",
                med * 1e6,
                flops / med / 1e9
            );
        }
    }
}
