//! Latency coupling between callers of one shared `Embedder` (issue #13): a short query in a
//! loop on one thread while another thread embeds a large batch of long passages.
//!
//! ```sh
//! cargo bench --bench contention -- [--precision f32|int8|bf16] [--passages N] [--model DIR]
//! ```
//!
//! Prints the query's median / p99 / max latency alone and under load, one forward of the
//! other caller at the default token budget, and the long call's time alone and shared. The
//! bound to meet: worst query wait <= its own time + one forward of the other caller; the
//! aim: p99 under load within 3x the median alone. Bounded: the load is one call of N
//! passages (default 300), the query loop stops when it ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use e5embed::{Embedder, EmbedderOptions, Precision};

const QUERY: &str = "how much protein should a female eat";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64, usize) {
    v.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        *v.last().unwrap_or(&f64::NAN),
        v.len(),
    )
}

/// A long English-like passage (well over 512 tokens: the model truncates it).
fn passage(seed: usize) -> String {
    const WORDS: &[&str] = &[
        "the", "river", "flows", "north", "through", "valley", "before", "turning", "east",
        "towards", "sea", "passing", "three", "small", "villages", "and", "an", "old", "stone",
        "bridge", "engine", "measures", "latency", "under", "load", "while", "another", "request",
        "waits", "for", "its", "turn", "protein", "energy", "glucose", "light",
    ];
    let mut x = seed as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
    (0..700)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            WORDS[(x % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn query_ms(e: &Embedder) -> f64 {
    let t = Instant::now();
    e.embed_queries(&[QUERY]).expect("query");
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let precision: Precision = arg("--precision")
        .map(|p| p.parse().expect("--precision f32|int8|bf16"))
        .unwrap_or(Precision::F32);
    let passages: usize = arg("--passages")
        .map(|p| p.parse().expect("--passages N"))
        .unwrap_or(300);
    let model = arg("--model")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| e5embed::models_dir().join("e5-small-v2-shape"));
    let opts = EmbedderOptions::default().precision(precision).threads(2);
    let e = Embedder::load_with(&model, &opts)
        .unwrap_or_else(|err| panic!("{}: {err} (run tools/fetch-models)", model.display()));
    let long: Vec<String> = (0..passages).map(passage).collect();

    // Alone.
    for _ in 0..20 {
        query_ms(&e);
    }
    let alone = stats((0..300).map(|_| query_ms(&e)).collect());
    // One forward of the other caller at the default budget: budget / 512 passages of 512.
    let per_forward = (e.max_batch_tokens() / 512).max(1);
    let one: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            e.embed_passages(&long[..per_forward]).expect("forward");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let forward = stats(one);
    let t = Instant::now();
    e.embed_passages(&long).expect("long call");
    let long_alone = t.elapsed().as_secs_f64();

    // Under load.
    let done = AtomicBool::new(false);
    let mut loaded = Vec::new();
    let mut long_shared = 0.0;
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let t = Instant::now();
            e.embed_passages(&long).expect("long call");
            done.store(true, Ordering::SeqCst);
            t.elapsed().as_secs_f64()
        });
        while !done.load(Ordering::SeqCst) {
            loaded.push(query_ms(&e));
        }
        long_shared = h.join().expect("long thread");
    });
    let under = stats(loaded);

    println!(
        "# contention: {} at {precision}, 2 threads, budget {} tokens; query {QUERY:?}",
        model.display(),
        e.max_batch_tokens()
    );
    println!("| measure | median ms | p99 ms | max ms | n |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| query alone | {:.2} | {:.2} | {:.2} | {} |",
        alone.0, alone.1, alone.2, alone.3
    );
    println!(
        "| query while {passages} passages embed | {:.2} | {:.2} | {:.2} | {} |",
        under.0, under.1, under.2, under.3
    );
    println!(
        "| one forward of {per_forward} x 512 tokens | {:.1} | | {:.1} | {} |",
        forward.0, forward.2, forward.3
    );
    println!(
        "long call: {long_alone:.2} s alone, {long_shared:.2} s while the queries ran ({:.1}% slower)",
        (long_shared / long_alone - 1.0) * 100.0
    );
    let bound = alone.0 + forward.0;
    println!(
        "bound (query alone + one forward): {bound:.1} ms; worst query {:.1} ms: {}",
        under.2,
        if under.2 <= bound { "met" } else { "NOT met" }
    );
    println!(
        "aim (p99 <= 3x median alone = {:.2} ms): p99 {:.2} ms: {}",
        3.0 * alone.0,
        under.1,
        if under.1 <= 3.0 * alone.0 {
            "met"
        } else {
            "not met"
        }
    );
}
