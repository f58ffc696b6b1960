//! Quick int8 GEMM timing without criterion (for tuning the VNNI loops): the model's four
//! shapes x T, median of repetitions, Gops/s, and with `COLD=1` each call reads a different
//! copy of the weights out of a 1 GiB pool (what a 12-layer forward at batch 1 sees), next
//! to the time needed just to stream those weight bytes at the measured DRAM bandwidth.
//! `cargo run --release -p e5embed-kernels --example qgemm_probe -- [T,T,..] [qisa]`

use e5embed_kernels::qgemm::{gemm_u8s8, padded_k, quantize_rows, QIsa, QuantizedMatrix};
use e5embed_kernels::{peak, Epilogue};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ts: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|t| t.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 16, 32, 128]);
    let qisa = args
        .get(2)
        .map(|s| QIsa::from_name(s).unwrap())
        .unwrap_or(QIsa::best());
    let cold = std::env::var("COLD").is_ok();
    let bw = peak::memory_bandwidth_gbs(0.3);
    println!(
        "{qisa:?}: DRAM read {bw:.1} GB/s, weights {}",
        if cold { "cold" } else { "hot" }
    );
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
        let q = QuantizedMatrix::quantize(qisa, &w, n, k).unwrap();
        let bytes = n * padded_k(k);
        let copies = if cold { (1usize << 30) / bytes } else { 1 };
        let pool: Vec<QuantizedMatrix> = (0..copies).map(|_| q.clone()).collect();
        let mut pi = 0;
        let floor_us = bytes as f64 / (bw * 1e3);
        for &t in &ts {
            let a: Vec<f32> = (0..t * k)
                .map(|i| ((i * 31) % 97) as f32 * 1e-2 - 0.5)
                .collect();
            let mut aq = vec![0u8; t * padded_k(k)];
            let mut sa = vec![0f32; t];
            quantize_rows(qisa, &a, t, k, &mut aq, &mut sa).unwrap();
            let res: Vec<f32> = vec![0.25; t * n];
            let mut c = vec![0.0f32; t * n];
            let epi = match name {
                "qkv" => Epilogue::Bias(&bias),
                "ffn_up" => Epilogue::BiasGelu(&bias),
                _ => Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            };
            let ops = 2.0 * (t * n * k) as f64;
            let inner = if cold {
                200
            } else {
                ((2e8 / ops) as usize).max(1)
            };
            let mut times = Vec::new();
            for _ in 0..15 {
                let t0 = Instant::now();
                for _ in 0..inner {
                    pi = (pi + 1) % copies;
                    gemm_u8s8(&aq, &sa, t, &pool[pi], &mut c, epi).unwrap();
                }
                times.push(t0.elapsed().as_secs_f64() / inner as f64);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = times[times.len() / 2];
            println!(
                "{name:9} T={t:5} N={n:5} K={k:5}: {:8.1} us {:7.1} Gops/s  stream floor {floor_us:6.1} us ({:4.2}x)",
                med * 1e6,
                ops / med / 1e9,
                med * 1e6 / floor_us
            );
        }
    }
}
