//! Fused attention at the model's config (12 heads of 32) per sequence length, one
//! thread: GFLOP/s (QKᵀ and P·V, 4·seq²·H FLOPs) as a share of the measured FMA peak,
//! and the per-head-range API (two halves, as two threads would run them) to show the
//! split costs nothing extra.
//! Run: `flock /tmp/e5embed-bench.lock cargo bench --bench attention`

mod common;

use common::*;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use e5embed_kernels::{attention, attention_f32, attention_f32_heads};
use std::time::Duration;

const HEADS: usize = 12;
const D: usize = 32;

fn bench_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_12x32");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800));
    for isa in isas() {
        let peak = fma_peak(isa);
        for seq in [16usize, 128, 512] {
            let h = HEADS * D;
            let qkv = fill(seq * 3 * h, seq as u64);
            let mut out = vec![0.0f32; seq * h];
            let flops = (4 * seq * seq * h) as u64;
            let secs = bench_median(
                &mut g,
                BenchmarkId::new(attention::kernel_name(isa), seq),
                flops,
                || attention_f32(isa, &qkv, seq, HEADS, D, &mut out).unwrap(),
            );
            let gf = flops as f64 / secs / 1e9;
            eprintln!(
                "attention {} seq={seq} heads={HEADS}x{D}: {:.1} us, {gf:.1} GFLOP/s = {:.1}% of \
                 measured peak {peak:.1}",
                isa.name(),
                secs * 1e6,
                100.0 * gf / peak
            );
            let mut a = vec![0.0f32; seq * h / 2];
            let mut b = vec![0.0f32; seq * h / 2];
            let split = bench_median(
                &mut g,
                BenchmarkId::new(format!("{}_heads_2x6", attention::kernel_name(isa)), seq),
                flops,
                || {
                    attention_f32_heads(isa, &qkv, seq, HEADS, D, 0..6, &mut a).unwrap();
                    attention_f32_heads(isa, &qkv, seq, HEADS, D, 6..12, &mut b).unwrap();
                },
            );
            eprintln!(
                "attention {} seq={seq}: heads 0..6 + 6..12 sequentially {:.1} us ({:.2}x the \
                 one call; each half is what one of 2 threads runs)",
                isa.name(),
                split * 1e6,
                split / secs
            );
        }
    }
    // As the engine runs it: a batch of 16 texts of 128 tokens, each text's qkv
    // (590 KB) written by the QKV GEMM before and the batch (9.4 MB) in L3, not L2.
    for isa in isas() {
        let peak = fma_peak(isa);
        let (seq, texts) = (128usize, 16usize);
        let h = HEADS * D;
        let qkv: Vec<Vec<f32>> = (0..texts)
            .map(|t| fill(seq * 3 * h, 100 + t as u64))
            .collect();
        let mut out = vec![0.0f32; seq * h];
        let flops = (4 * seq * seq * h * texts) as u64;
        let secs = bench_median(
            &mut g,
            BenchmarkId::new(format!("{}_batch16", attention::kernel_name(isa)), seq),
            flops,
            || {
                for q in &qkv {
                    attention_f32(isa, q, seq, HEADS, D, &mut out).unwrap();
                }
            },
        );
        let gf = flops as f64 / secs / 1e9;
        eprintln!(
            "attention {} batch of {texts} x seq={seq} (qkv from L3): {:.1} us per text, {gf:.1} \
             GFLOP/s = {:.1}% of measured peak {peak:.1}",
            isa.name(),
            secs * 1e6 / texts as f64,
            100.0 * gf / peak
        );
    }
    g.finish();
}

criterion_group!(benches, bench_attention);
criterion_main!(benches);
