//! int8 GEMM (`e5embed_kernels::qgemm`) vs the f32 GEMM at e5-small-v2's four GEMM
//! shapes, T (tokens) in 1, 16, 128, 4096, single-threaded, every QIsa this CPU has.
//! Throughput is reported as elements = `2·m·n·k` operations, so criterion's
//! "Gelem/s" reads as **Gops/s**. The int8 time includes the epilogue (dequant +
//! bias, GELU or residual) but not `quantize_rows`, which is benched separately
//! (`qgemm_quantize_rows`, elements = floats quantized).
//!
//! Run: `cargo bench --bench qgemm` (filter e.g. `-- ffn_up`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use e5embed_kernels::gemm::{gemm_f32, PackedMatrix};
use e5embed_kernels::qgemm::{
    gemm_u8s8, gemm_u8s8_quantized, padded_k, quantize_rows, QIsa, QIsaKind, QuantizedMatrix,
};
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

fn qgemm(c: &mut Criterion) {
    let isa = Isa::best();
    for (label, n, k, epi) in SHAPES {
        let w = data(n * k, 1);
        let bias = data(n, 2);
        let packed = PackedMatrix::pack(isa, &w, n, k).unwrap();
        let qmats: Vec<QuantizedMatrix> = QIsa::available()
            .into_iter()
            .map(|q| QuantizedMatrix::quantize(q, &w, n, k).unwrap())
            .collect();
        let mut g = c.benchmark_group(format!("qgemm_{label}_{n}x{k}"));
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
            for qm in &qmats {
                // The scalar reference is only a correctness fallback: skip large T.
                if qm.isa().kind() == QIsaKind::Scalar && t > 16 {
                    continue;
                }
                let mut aq = vec![0u8; t * padded_k(k)];
                let mut sa = vec![0f32; t];
                quantize_rows(qm.isa(), &a, t, k, &mut aq, &mut sa).unwrap();
                g.bench_function(BenchmarkId::new(qm.kernel_name(), t), |b| {
                    b.iter(|| {
                        gemm_u8s8(&aq, &sa, t, qm, &mut out, epilogue(epi, &bias, &res)).unwrap()
                    })
                });
            }
        }
        g.finish();
    }
}

fn quantize(c: &mut Criterion) {
    let mut g = c.benchmark_group("qgemm_quantize_rows");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    for k in [384usize, 1536] {
        let t = 4096;
        let a = data(t * k, 5);
        let mut aq = vec![0u8; t * padded_k(k)];
        let mut sa = vec![0f32; t];
        g.throughput(Throughput::Elements((t * k) as u64));
        for q in QIsa::available() {
            g.bench_function(BenchmarkId::new(q.name(), format!("{t}x{k}")), |b| {
                b.iter(|| quantize_rows(q, &a, t, k, &mut aq, &mut sa).unwrap())
            });
        }
    }
    g.finish();
}

/// FFN up + GELU producing the down-projection's quantized input: `gemm_u8s8` into
/// an f32 `[T, 1536]` buffer then `quantize_rows`, vs the fused
/// `gemm_u8s8_quantized` (elements = `2·m·n·k` of the GEMM).
fn fused(c: &mut Criterion) {
    let (n, k) = (1536usize, 384usize);
    let w = data(n * k, 1);
    let bias = data(n, 2);
    let mut g = c.benchmark_group("qgemm_ffn_up_requantize");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for q in QIsa::available() {
        if q.kind() == QIsaKind::Scalar {
            continue;
        }
        let qm = QuantizedMatrix::quantize(q, &w, n, k).unwrap();
        for t in [128usize, 4096] {
            let a = data(t * k, 3);
            let mut aq = vec![0u8; t * padded_k(k)];
            let mut sa = vec![0f32; t];
            quantize_rows(q, &a, t, k, &mut aq, &mut sa).unwrap();
            let mut f = vec![0f32; t * n];
            let mut out = vec![0u8; t * padded_k(n)];
            let mut os = vec![0f32; t];
            g.throughput(Throughput::Elements((2 * t * n * k) as u64));
            g.bench_function(
                BenchmarkId::new(format!("{}_then_quantize", q.name()), t),
                |b| {
                    b.iter(|| {
                        gemm_u8s8(&aq, &sa, t, &qm, &mut f, Epilogue::BiasGelu(&bias)).unwrap();
                        quantize_rows(q, &f, t, n, &mut out, &mut os).unwrap()
                    })
                },
            );
            g.bench_function(BenchmarkId::new(format!("{}_fused", q.name()), t), |b| {
                b.iter(|| {
                    gemm_u8s8_quantized(
                        &aq,
                        &sa,
                        t,
                        &qm,
                        Epilogue::BiasGelu(&bias),
                        &mut out,
                        &mut os,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, qgemm, quantize, fused);
criterion_main!(benches);
