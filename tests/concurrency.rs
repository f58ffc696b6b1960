//! Several threads sharing one `Embedder`: every result bitwise equal to the text's embedding
//! alone, no deadlock, every caller served, at f32 and int8, with small token budgets (many
//! forwards per call, so calls pause and resume between forward steps: `src/turns.rs`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use e5embed::{Embedder, EmbedderOptions, Precision};
use rand::{Rng, SeedableRng};

/// The fixture texts plus longer ones built from them (up to the 128-token limit of the model).
fn texts() -> Vec<String> {
    let fx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures_dir("").join("texts.json")).unwrap())
            .unwrap();
    let arr = fx.get("texts").unwrap_or(&fx).as_array().unwrap().clone();
    let base: Vec<String> = arr.iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    let mut all = base.clone();
    for (i, t) in base.iter().enumerate() {
        all.push(format!("{t} {}", base[(i + 3) % base.len()]));
        all.push(format!("{t} {t} {t} {t} {t} {t}"));
    }
    all
}

fn stress(precision: Precision, seconds: f64) {
    let opts = EmbedderOptions::default()
        .precision(precision)
        .threads(2)
        .max_batch_tokens(256);
    let e = Embedder::load_with(model_dir("paraphrase-MiniLM-L3-v2"), &opts).unwrap();
    let texts = texts();
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| e.embed(&[t]).unwrap().vectors.remove(0))
        .collect();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let calls = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for thread in 0..8u64 {
            let (e, texts, alone, calls, failed) = (&e, &texts, &alone, &calls, &failed);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(thread);
                let mut mine = 0;
                while Instant::now() < deadline && !failed.load(Ordering::Relaxed) {
                    // Threads 0-1 make big calls (many forwards, chunked tokenization); the
                    // others small ones, some of a single text (inline tokenization).
                    let n = match thread {
                        0 | 1 => rng.gen_range(40..=texts.len()),
                        2 | 3 => 1,
                        _ => rng.gen_range(2..12),
                    };
                    let pick: Vec<usize> = (0..n).map(|_| rng.gen_range(0..texts.len())).collect();
                    let batch: Vec<&str> = pick.iter().map(|&i| texts[i].as_str()).collect();
                    let out = e.embed(&batch).unwrap();
                    for (j, &i) in pick.iter().enumerate() {
                        if out.vectors[j] != alone[i] {
                            failed.store(true, Ordering::Relaxed);
                            panic!("{precision} thread {thread}: text {i} differs from alone");
                        }
                    }
                    mine += 1;
                }
                assert!(mine > 0, "{precision} thread {thread} was never served");
                calls.fetch_add(mine, Ordering::Relaxed);
            });
        }
    });
    eprintln!(
        "{precision}: {} calls from 8 threads in {seconds} s, all bitwise equal to alone",
        calls.load(Ordering::Relaxed)
    );
}

#[test]
fn eight_threads_random_batches_f32_bitwise_equal_to_alone() {
    stress(Precision::F32, 4.0);
}

#[test]
fn eight_threads_random_batches_int8_bitwise_equal_to_alone() {
    stress(Precision::Int8, 4.0);
}

#[test]
fn a_query_is_served_while_a_long_call_runs() {
    // Ordering, not timing: the query must come back while the long call (hundreds of
    // forwards) is still running, i.e. it did not queue behind the whole call.
    let opts = EmbedderOptions::default().threads(2).max_batch_tokens(128);
    let e = Embedder::load_with(model_dir("paraphrase-MiniLM-L3-v2"), &opts).unwrap();
    let long: Vec<String> = (0..3000)
        .map(|i| format!("passage number {i} about nothing in particular, repeated {i} times"))
        .collect();
    let started = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            started.store(true, Ordering::SeqCst);
            e.embed(&long).unwrap();
            finished.store(true, Ordering::SeqCst);
        });
        while !started.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut served_during = 0;
        for _ in 0..5 {
            e.embed(&["how much protein should a female eat"]).unwrap();
            if !finished.load(Ordering::SeqCst) {
                served_during += 1;
            }
        }
        assert!(
            served_during >= 4,
            "only {served_during} of 5 queries came back before the long call ended"
        );
    });
}
