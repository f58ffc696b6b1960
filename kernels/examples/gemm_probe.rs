//! Quick GEMM timing without criterion (for tuning loops): model shapes x T, median
//! of repetitions, GFLOP/s and % of the measured FMA peak.
//! `cargo run --release -p e5embed-kernels --example gemm_probe -- [T,T,..] [isa]`

use e5embed_kernels::{gemm_f32, hugepage, peak, Epilogue, Isa, PackedMatrix};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ts: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(|t| t.parse().unwrap()).collect())
        .unwrap_or(vec![1, 8, 32, 128, 512, 4096]);
    let isa = args
        .get(2)
        .map(|s| Isa::from_name(s).unwrap())
        .unwrap_or(Isa::best());
    let pk = peak::fma_peak_gflops(isa, 0.3);
    println!("{isa}: peak {pk:.1} GFLOP/s");
    let mut shapes = vec![
        ("qkv", 1152, 384),
        ("attn_out", 384, 384),
        ("ffn_up", 1536, 384),
        ("ffn_down", 384, 1536),
    ];
    if let Some(s) = args.get(3) {
        let v: Vec<usize> = s.split(':').map(|x| x.parse().unwrap()).collect();
        let name = if v.len() > 2 {
            ["qkv", "attn_out", "ffn_up", "ffn_down"][v[2]]
        } else {
            "custom"
        };
        shapes = vec![(name, v[0], v[1])];
    }
    for (name, n, k) in shapes {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 1e-3).collect();
        let p = PackedMatrix::pack(isa, &w, n, k).unwrap();
        // COLD=1: rotate over 1 GiB of weight copies (each call streams W from DRAM).
        let cold = std::env::var("COLD").is_ok();
        let copies = if cold {
            (1usize << 30) / (n * k * 4)
        } else {
            1
        };
        let pool: Vec<PackedMatrix> = (0..copies).map(|_| p.clone()).collect();
        let mut pi = 0;
        for &t in &ts {
            // Activations on huge pages where big, as the engine's scratch.
            let mut a = hugepage::filled_vec(t * k, 0.0f32);
            for (i, x) in a.iter_mut().enumerate() {
                *x = ((i * 31) % 97) as f32 * 1e-2 - 0.5;
            }
            let res = hugepage::filled_vec(t * n, 0.25f32);
            let mut c = hugepage::filled_vec(t * n, 0.0f32);
            let epi = match name {
                "qkv" => Epilogue::Bias(&bias),
                "ffn_up" => Epilogue::BiasGelu(&bias),
                _ => Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            };
            let flops = 2.0 * (t * n * k) as f64;
            let inner = if cold {
                200
            } else {
                ((2e8 / flops) as usize).max(1)
            };
            let mut times = Vec::new();
            for _ in 0..15 {
                let t0 = Instant::now();
                let chunk: usize = std::env::var("CHUNK")
                    .ok()
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(t);
                for _ in 0..inner {
                    let mut r = 0;
                    while r < t {
                        let rows = chunk.min(t - r);
                        let e = match epi {
                            Epilogue::BiasResidual { bias, residual } => Epilogue::BiasResidual {
                                bias,
                                residual: &residual[r * n..(r + rows) * n],
                            },
                            e => e,
                        };
                        pi = (pi + 1) % copies;
                        gemm_f32(
                            &a[r * k..(r + rows) * k],
                            rows,
                            &pool[pi],
                            &mut c[r * n..(r + rows) * n],
                            e,
                        )
                        .unwrap();
                        r += rows;
                    }
                }
                times.push(t0.elapsed().as_secs_f64() / inner as f64);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let med = times[times.len() / 2];
            let best = times[0];
            let g = flops / med / 1e9;
            println!(
                "{name:9} T={t:5} N={n:5} K={k:5}: {:9.1} us {g:7.1} GFLOP/s = {:5.1}% of {pk:.0} (best {:5.1}%)",
                med * 1e6,
                100.0 * g / pk,
                100.0 * flops / best / 1e9 / pk
            );
        }
    }
}
