//! The model's four GEMMs (e5-small-v2: QKV [T x 384]·[384 x 1152] +bias, attention
//! output [T x 384]·[384 x 384] +bias +residual, FFN up [T x 384]·[384 x 1536] +bias
//! +GELU, FFN down [T x 1536]·[1536 x 384] +bias +residual) at T in 1..4096, one
//! thread, vs the `gemm` crate (0.18, no epilogue, W pre-transposed to [k, n]) on the
//! same shapes. Prints, per case, to stderr:
//!
//! `gemm qkv T=128 N=1152 K=384 avx512: X GFLOP/s = Y% of measured peak P`
//!
//! and for T <= 32 the skinny path against the time to stream the packed weights
//! from DRAM at the measured bandwidth (hot: weights cached by the repetition; cold:
//! each call reads a different copy of the weights from a 1 GiB pool).
//!
//! Run: `flock /tmp/e5embed-bench.lock cargo bench --bench gemm`
//! Knobs: `E5EMBED_BENCH_T=1,128` (token counts), `E5EMBED_ISA=avx2` (one ISA; default
//! the best plus AVX2 on AVX-512 machines), `E5EMBED_BENCH_COLD=0` (skip the 1 GiB
//! cold runs), `E5EMBED_BENCH_GEMM_CRATE=0` (skip the baseline).

mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use e5embed_kernels::{gemm_f32, Epilogue, Isa, PackedMatrix};
use std::hint::black_box;
use std::time::Duration;

#[derive(Clone, Copy)]
enum Epi {
    Bias,
    BiasResidual,
    BiasGelu,
}

/// (name, N, K, epilogue) of the four per-layer GEMMs.
const SHAPES: [(&str, usize, usize, Epi); 4] = [
    ("qkv", 1152, 384, Epi::Bias),
    ("attn_out", 384, 384, Epi::BiasResidual),
    ("ffn_up", 1536, 384, Epi::BiasGelu),
    ("ffn_down", 384, 1536, Epi::BiasResidual),
];

fn flag(name: &str) -> bool {
    std::env::var(name).map(|v| v != "0").unwrap_or(true)
}

fn epilogue<'a>(e: Epi, bias: &'a [f32], res: &'a [f32]) -> Epilogue<'a> {
    match e {
        Epi::Bias => Epilogue::Bias(bias),
        Epi::BiasGelu => Epilogue::BiasGelu(bias),
        Epi::BiasResidual => Epilogue::BiasResidual {
            bias,
            residual: res,
        },
    }
}

fn line(what: &str, t: usize, n: usize, k: usize, secs: f64, peak: f64, peak_name: &str) {
    let gflops = 2.0 * (t * n * k) as f64 / secs / 1e9;
    eprintln!(
        "{what} T={t} N={n} K={k}: {gflops:.1} GFLOP/s = {:.1}% of measured peak {peak:.1} \
         ({peak_name}), median {:.1} us",
        100.0 * gflops / peak,
        secs * 1e6
    );
}

fn bench_gemm(c: &mut Criterion) {
    let isas = isas();
    let ts = ts();
    let cold = flag("E5EMBED_BENCH_COLD");
    let baseline = flag("E5EMBED_BENCH_GEMM_CRATE");
    for (si, &(name, n, k, e)) in SHAPES.iter().enumerate() {
        let w = fill(n * k, 1 + si as u64);
        let bias = fill(n, 100 + si as u64);
        let mut g = c.benchmark_group(format!("gemm_{name}_n{n}_k{k}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1000));
        for (ii, &isa) in isas.iter().enumerate() {
            let peak = fma_peak(isa);
            let p = PackedMatrix::pack(isa, &w, n, k).unwrap();
            for &t in &ts {
                let a = fill(t * k, 7 + t as u64);
                let res = fill(t * n, 9 + t as u64);
                let mut out = e5embed_kernels::hugepage::filled_vec(t * n, 0.0f32);
                let flops = 2 * (t * n * k) as u64;
                let secs =
                    bench_median(&mut g, BenchmarkId::new(p.kernel_name(), t), flops, || {
                        gemm_f32(&a, t, &p, &mut out, epilogue(e, &bias, &res)).unwrap()
                    });
                line(
                    &format!("gemm {name} {}", isa.name()),
                    t,
                    n,
                    k,
                    secs,
                    peak,
                    isa.name(),
                );
                if t <= 32 {
                    let bytes = (n.div_ceil(p.panel_width()) * p.panel_width() * k * 4) as f64;
                    let floor = bytes / (dram_bw() * 1e9);
                    let mut msg = format!(
                        "skinny {name} {} T={t} N={n} K={k}: hot {:.1} us; DRAM floor {:.1} us \
                         ({:.2} MB packed weights at {:.1} GB/s)",
                        isa.name(),
                        secs * 1e6,
                        floor * 1e6,
                        bytes / 1e6,
                        dram_bw()
                    );
                    if cold {
                        // A pool of copies well beyond the L3, visited round-robin, so
                        // each call streams its weights from DRAM.
                        let copies = ((1usize << 30) / bytes as usize).max(2);
                        let pool: Vec<PackedMatrix> = (0..copies).map(|_| p.clone()).collect();
                        let mut i = 0;
                        let cold_secs = bench_median(
                            &mut g,
                            BenchmarkId::new(format!("{}_cold", p.kernel_name()), t),
                            flops,
                            || {
                                i = (i + 1) % copies;
                                gemm_f32(&a, t, &pool[i], &mut out, epilogue(e, &bias, &res))
                                    .unwrap()
                            },
                        );
                        msg += &format!(
                            "; cold {:.1} us = {:.2}x the floor",
                            cold_secs * 1e6,
                            cold_secs / floor
                        );
                    }
                    eprintln!("{msg}");
                }
                // The gemm crate once per shape and T (it picks its own ISA).
                if baseline && ii == 0 {
                    let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
                    let secs = bench_median(
                        &mut g,
                        BenchmarkId::new("gemm_crate_0.18", t),
                        flops,
                        || unsafe {
                            // SAFETY: a [t, k], wt [k, n], out [t, n], row-major, all
                            // exclusively or immutably borrowed for the call.
                            gemm::gemm(
                                t,
                                n,
                                k,
                                out.as_mut_ptr(),
                                1,
                                n as isize,
                                false,
                                a.as_ptr(),
                                1,
                                k as isize,
                                wt.as_ptr(),
                                1,
                                n as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            )
                        },
                    );
                    black_box(&out);
                    line(
                        &format!("gemm {name} gemm-crate"),
                        t,
                        n,
                        k,
                        secs,
                        peak,
                        isa.name(),
                    );
                }
            }
        }
        g.finish();
    }
}

/// Throughput of the element-wise ops at the model's sizes, to show their share:
/// LayerNorm over [T, 384] and GELU over [T, 1536] (standalone; in the model GELU is
/// fused into the FFN-up epilogue).
fn bench_elementwise(c: &mut Criterion) {
    let isa = Isa::best();
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));
    let gamma = fill(384, 1);
    let beta = fill(384, 2);
    for t in [128usize, 4096] {
        let mut x = fill(t * 384, 3);
        let secs = bench_median(
            &mut g,
            BenchmarkId::new(format!("layernorm_{}", isa.name()), t),
            (t * 384) as u64,
            || e5embed_kernels::layernorm(isa, &mut x, 384, &gamma, &beta, 1e-12).unwrap(),
        );
        eprintln!(
            "layernorm {} T={t} x 384: {:.1} us ({:.2} ns/element)",
            isa.name(),
            secs * 1e6,
            secs * 1e9 / (t * 384) as f64
        );
        // GELU applied in place over and over drives values into denormals (slow
        // and not what the model sees): restore the input each call (the copy is
        // part of the measured time, an upper bound).
        let y0 = fill(t * 1536, 4);
        let mut y = y0.clone();
        let secs = bench_median(
            &mut g,
            BenchmarkId::new(format!("gelu_{}", isa.name()), t),
            (t * 1536) as u64,
            || {
                y.copy_from_slice(&y0);
                e5embed_kernels::gelu_erf(isa, &mut y)
            },
        );
        eprintln!(
            "gelu {} T={t} x 1536: {:.1} us ({:.2} ns/element)",
            isa.name(),
            secs * 1e6,
            secs * 1e9 / (t * 1536) as f64
        );
    }
    g.finish();
}

criterion_group!(benches, bench_gemm, bench_elementwise);
criterion_main!(benches);
