//! Shared by the kernel benches: measured speed of light (FMA peak per ISA, DRAM
//! bandwidth), the ISAs to run, the token counts, and criterion timing helpers that
//! also keep the per-sample times so the bench can print its own summary line.
#![allow(dead_code)]

use criterion::{BenchmarkGroup, BenchmarkId, Throughput};
use e5embed_kernels::{peak, Isa};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Token counts T of the issue: batch-1 queries up to large batches.
pub const TS: [usize; 7] = [1, 8, 16, 32, 128, 512, 4096];

/// `E5EMBED_BENCH_T=1,128` restricts the token counts; default [`TS`].
pub fn ts() -> Vec<usize> {
    match std::env::var("E5EMBED_BENCH_T") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .expect("E5EMBED_BENCH_T: comma-separated integers")
            })
            .collect(),
        _ => TS.to_vec(),
    }
}

/// ISAs to bench: `E5EMBED_ISA` if set (one), else the best this CPU has plus AVX2
/// when the best is AVX-512 (the two targets).
pub fn isas() -> Vec<Isa> {
    match std::env::var("E5EMBED_ISA") {
        Ok(v) if !v.trim().is_empty() => vec![Isa::from_name(&v).expect("E5EMBED_ISA")],
        _ => {
            let best = Isa::best();
            let mut v = vec![best];
            if best.kind() == e5embed_kernels::IsaKind::Avx512 {
                if let Some(a) = Isa::new(e5embed_kernels::IsaKind::Avx2) {
                    v.push(a);
                }
            }
            v
        }
    }
}

/// Measured single-thread FMA peak of `isa` in GFLOP/s (once per process per ISA,
/// 0.5 s, printed).
pub fn fma_peak(isa: Isa) -> f64 {
    static PEAKS: OnceLock<std::sync::Mutex<HashMap<Isa, f64>>> = OnceLock::new();
    let m = PEAKS.get_or_init(Default::default);
    let mut m = m.lock().unwrap();
    *m.entry(isa).or_insert_with(|| {
        let p = peak::fma_peak_gflops(isa, 0.5);
        eprintln!(
            "measured fma peak {}: {p:.1} GFLOP/s (1 thread)",
            isa.name()
        );
        p
    })
}

/// Measured single-thread DRAM read bandwidth in GB/s (once, 1 GiB buffer, printed).
pub fn dram_bw() -> f64 {
    static BW: OnceLock<f64> = OnceLock::new();
    *BW.get_or_init(|| {
        let bw = peak::memory_bandwidth_gbs(1.5);
        eprintln!("measured DRAM read bandwidth: {bw:.1} GB/s (1 thread, 1 GiB stream)");
        bw
    })
}

/// Measured single-thread read bandwidth of a 64 MiB buffer (L3 on big-L3 parts).
pub fn l3_bw() -> f64 {
    static BW: OnceLock<f64> = OnceLock::new();
    *BW.get_or_init(|| {
        let bw = peak::read_bandwidth_gbs(Isa::best(), 64 << 20, 0.5);
        eprintln!("measured 64 MiB read bandwidth: {bw:.1} GB/s (1 thread)");
        bw
    })
}

/// Benchmarks `f` under `id` with criterion (`iter_custom`, so the sample times are
/// ours too) and returns the median seconds per call over criterion's samples.
pub fn bench_median<M: criterion::measurement::Measurement<Value = Duration>>(
    g: &mut BenchmarkGroup<'_, M>,
    id: BenchmarkId,
    elements: u64,
    mut f: impl FnMut(),
) -> f64 {
    let samples: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    g.throughput(Throughput::Elements(elements));
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            let d = t.elapsed();
            samples
                .borrow_mut()
                .push(d.as_secs_f64() / iters.max(1) as f64);
            d
        })
    });
    let mut s = samples.into_inner();
    // Criterion's warm-up calls come first; keep the measured samples (the last
    // `sample_size`, 10 here) and take their median.
    let keep = s.len().min(10);
    let mut tail: Vec<f64> = s.split_off(s.len() - keep);
    tail.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if tail.is_empty() {
        return f64::NAN;
    }
    tail[tail.len() / 2]
}

/// Deterministic pseudo-random values in [-0.5, 0.5) (no RNG dependency needed).
/// Big buffers are advised onto transparent huge pages, as the engine's scratch is
/// (`e5embed_kernels::hugepage`).
pub fn fill(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = e5embed_kernels::hugepage::filled_vec(len, 0.0f32);
    for y in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *y = (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
    }
    v
}
