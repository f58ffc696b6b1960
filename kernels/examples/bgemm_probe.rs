//! Quick bf16 GEMM timing without criterion: the model's four shapes x T, median of
//! repetitions, GFLOP/s. `cargo run --release -p e5embed-kernels --example bgemm_probe --
//! [T,T,..] [bisa]` (bisa: `scalar`, `avx512widen`, `avx512bf16`; default `BIsa::best`;
//! `all`: the f32 GEMM and every SIMD bf16 path side by side). `COLD=1` (one bisa): each
//! call streams its weights from memory (evicted before it, medians of 101 calls).

use e5embed_kernels::bgemm::{gemm_bf16, BIsa, BIsaKind, Bf16Matrix};
use e5embed_kernels::gemm::{gemm_f32, PackedMatrix};
use e5embed_kernels::{Epilogue, Isa};
use std::time::Instant;

/// Median seconds per call of `f` (15 repetitions of enough calls for ~0.2 GFLOP).
fn median(flops: f64, mut f: impl FnMut()) -> f64 {
    let inner = ((2e8 / flops) as usize).max(1);
    let mut times = Vec::new();
    for _ in 0..15 {
        let t0 = Instant::now();
        for _ in 0..inner {
            f();
        }
        times.push(t0.elapsed().as_secs_f64() / inner as f64);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

fn all(ts: &[usize]) {
    let isa = Isa::best();
    let bisas: Vec<BIsa> = BIsa::available()
        .into_iter()
        .filter(|b| b.kind() != BIsaKind::Scalar)
        .collect();
    print!(
        "{:9} {:>5} {:>5} {:>5} | f32 {:>6}",
        "shape",
        "T",
        "N",
        "K",
        isa.name()
    );
    for b in &bisas {
        print!(" | {:>12}", b.name());
    }
    println!("   (GFLOP/s, median; ratio to f32)");
    for (name, n, k) in [
        ("qkv", 1152, 384),
        ("attn_out", 384, 384),
        ("ffn_up", 1536, 384),
        ("ffn_down", 384, 1536),
    ] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        let pf = PackedMatrix::pack(isa, &w, n, k).unwrap();
        let pb: Vec<Bf16Matrix> = bisas
            .iter()
            .map(|&b| Bf16Matrix::from_f32(b, &w, n, k).unwrap())
            .collect();
        for &t in ts {
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
            let f = median(flops, || gemm_f32(&a, t, &pf, &mut c, epi).unwrap());
            print!("{name:9} {t:5} {n:5} {k:5} | {:10.1}", flops / f / 1e9);
            for p in &pb {
                let b = median(flops, || gemm_bf16(&a, t, p, &mut c, epi).unwrap());
                print!(" | {:6.1} {:4.2}x", flops / b / 1e9, f / b);
            }
            println!();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ts: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|t| t.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 32, 128, 512]);
    if args.get(2).map(String::as_str) == Some("all") {
        return all(&ts);
    }
    let bisa = args
        .get(2)
        .map(|s| BIsa::from_name(s).unwrap())
        .unwrap_or(BIsa::best());
    let cold = std::env::var("COLD").is_ok();
    println!(
        "{}: {}{}",
        bisa.name(),
        bisa.kernel_name(),
        if cold {
            " (COLD: weights from memory)"
        } else {
            ""
        }
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
            if cold {
                // COLD=1: each call's weights evicted from every cache level first (not
                // timed), so it streams them from memory as a short text's forward does.
                for _ in 0..101 {
                    e5embed_kernels::cache::evict(p.packed_bytes());
                    let t0 = Instant::now();
                    gemm_bf16(&a, t, &p, &mut c, epi).unwrap();
                    times.push(t0.elapsed().as_secs_f64());
                }
            } else {
                for _ in 0..15 {
                    let t0 = Instant::now();
                    for _ in 0..inner {
                        gemm_bf16(&a, t, &p, &mut c, epi).unwrap();
                    }
                    times.push(t0.elapsed().as_secs_f64() / inner as f64);
                }
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
