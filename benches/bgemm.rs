//! bf16 GEMM (`e5embed_kernels::bgemm`, `vdpbf16ps`) vs the f32 GEMM
//! (`gemm_f32` on `Isa::best()`) at e5-small-v2's four GEMM shapes, T (tokens) in
//! 1, 16, 128, 4096, one thread. Throughput is `2·m·n·k` operations, so criterion's
//! "Gelem/s" reads as **GFLOP/s**. The bf16 time includes the per-call conversion
//! of A to bf16 and the fused epilogue (bias, GELU or residual); `convert_rows` is
//! also benched alone (elements = floats converted).
//!
//! Run: `cargo bench --bench bgemm` (filter e.g. `-- ffn_up`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use e5embed_kernels::bgemm::{convert_rows, gemm_bf16, padded_k, BIsa, BIsaKind, Bf16Matrix};
use e5embed_kernels::gemm::{gemm_f32, PackedMatrix};
use e5embed_kernels::{Epilogue, Isa};
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// (label, n, k, epilogue kind) of the four per-layer GEMMs.
const SHAPES: [(&str, usize, usize, &str); 4] = [
    ("qkv", 1152, 384, "bias"),
    ("attn_out", 384, 384, "residual"),
    ("ffn_up", 1536, 384, "gelu"),
    ("ffn_down", 384, 1536, "residual"),
];
const TOKENS: [usize; 4] = [1, 16, 128, 4096];

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| r.gen_range(-1.0f32..1.0)).collect()
}

fn epilogue<'a>(kind: &str, bias: &'a [f32], res: &'a [f32]) -> Epilogue<'a> {
    match kind {
        "bias" => Epilogue::Bias(bias),
        "gelu" => Epilogue::BiasGelu(bias),
        _ => Epilogue::BiasResidual {
            bias,
            residual: res,
        },
    }
}

fn bgemm(c: &mut Criterion) {
    let isa = Isa::best();
    let bisas: Vec<BIsa> = BIsa::available()
        .into_iter()
        .filter(|b| b.kind() != BIsaKind::Scalar)
        .collect();
    for (label, n, k, epi) in SHAPES {
        let w = data(n * k, 1);
        let bias = data(n, 2);
        let packed = PackedMatrix::pack(isa, &w, n, k).unwrap();
        let bmats: Vec<Bf16Matrix> = bisas
            .iter()
            .map(|&b| Bf16Matrix::from_f32(b, &w, n, k).unwrap())
            .collect();
        let mut g = c.benchmark_group(format!("bgemm_{label}_{n}x{k}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for t in TOKENS {
            let a = data(t * k, 3);
            let res = data(t * n, 4);
            let mut out = vec![0f32; t * n];
            g.throughput(Throughput::Elements((2 * t * n * k) as u64));
            g.bench_function(BenchmarkId::new(packed.kernel_name(), t), |b| {
                b.iter(|| gemm_f32(&a, t, &packed, &mut out, epilogue(epi, &bias, &res)).unwrap())
            });
            for bm in &bmats {
                g.bench_function(BenchmarkId::new(bm.kernel_name(), t), |b| {
                    b.iter(|| gemm_bf16(&a, t, bm, &mut out, epilogue(epi, &bias, &res)).unwrap())
                });
            }
        }
        g.finish();
    }
    // The activation conversion alone (inside every gemm_bf16 call).
    let mut g = c.benchmark_group("bgemm_convert_rows");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &bisa in &bisas {
        for (t, k) in [(128usize, 384usize), (128, 1536)] {
            let a = data(t * k, 5);
            let mut out = vec![0u16; t * padded_k(k)];
            g.throughput(Throughput::Elements((t * k) as u64));
            g.bench_function(BenchmarkId::new(bisa.name(), format!("{t}x{k}")), |b| {
                b.iter(|| convert_rows(bisa, &a, t, k, &mut out).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bgemm);
criterion_main!(benches);
