//! End-to-end forward + pooling on the e5-small-v2-shape model (fp32), at the batch shapes the
//! README quotes. Run: `cargo bench --bench forward` (after `tools/fetch-models`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use e5embed::{Embedder, EmbedderOptions, Tokens};

fn model() -> std::path::PathBuf {
    let dir = e5embed::models_dir().join("e5-small-v2-shape");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run tools/fetch-models",
        dir.display()
    );
    dir
}

fn tokens(batch: usize, seq: usize) -> Vec<Tokens> {
    (0..batch)
        .map(|b| {
            let mut ids = vec![101u32];
            ids.extend((2..seq).map(|j| 1000 + ((b * 7919 + j * 104_729) % 29_000) as u32));
            ids.push(102);
            Tokens {
                ids,
                truncated: false,
            }
        })
        .collect()
}

fn forward(c: &mut Criterion) {
    let dir = model();
    for threads in [1usize, 2] {
        let opts = EmbedderOptions::default().threads(threads);
        let e = Embedder::load_with(&dir, &opts).unwrap();
        let mut g = c.benchmark_group(format!("forward_f32_{}_t{threads}", e.isa().name()));
        g.sample_size(10);
        for (batch, seq) in [(1usize, 16usize), (1, 128), (32, 128)] {
            let t = tokens(batch, seq);
            g.throughput(Throughput::Elements((batch * seq) as u64));
            g.bench_with_input(
                BenchmarkId::from_parameter(format!("{batch}x{seq}")),
                &t,
                |b, t| b.iter(|| e.embed_tokens(t).unwrap()),
            );
        }
        g.finish();
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
