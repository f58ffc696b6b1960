//! Batch invariance and determinism: a text's embedding is bitwise identical whether it is
//! embedded alone, in any batch, at any position, under any token budget, with 1 or 2
//! threads, on every ISA path; and results come back in input order. (Under emulation
//! tools/test-aarch64 may skip the scalar path and take a subset of the texts: `tests/common`.)

mod common;

use common::*;
use e5embed::{Embedder, EmbedderOptions, Isa};

fn load(isa: Isa, threads: usize, budget: Option<usize>) -> Embedder {
    let mut opts = EmbedderOptions::default().isa(isa.kind()).threads(threads);
    opts.max_batch_tokens = budget;
    Embedder::load_with(model_dir("all-MiniLM-L6-v2"), &opts).unwrap()
}

#[test]
fn embeddings_are_bitwise_batch_invariant() {
    const TEST: &str = "embeddings_are_bitwise_batch_invariant";
    let texts = fixture_texts(TEST);
    for isa in paths(TEST, Isa::available()) {
        let e1 = load(isa, 1, None);
        // Each text alone, one thread: the ground truth.
        let alone: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| e1.embed(&[t]).unwrap().vectors.remove(0))
            .collect();
        // All together, 1 and 2 threads, default and tiny token budgets.
        for (threads, budget) in [(1, None), (2, None), (2, Some(256)), (1, Some(300))] {
            let e = load(isa, threads, budget);
            let all = e.embed(&texts).unwrap();
            for (i, v) in all.vectors.iter().enumerate() {
                assert!(
                    v == &alone[i],
                    "{} threads {threads} budget {budget:?}: text {i} differs from its embedding alone",
                    isa.name()
                );
            }
        }
        // Each text alone on 2 threads (skinny column split, attention head split).
        let e2 = load(isa, 2, None);
        for (i, t) in texts.iter().enumerate() {
            assert!(
                e2.embed(&[t]).unwrap().vectors[0] == alone[i],
                "{}: text {i} alone on 2 threads",
                isa.name()
            );
        }
        // Reversed and rotated orders: results follow the input order, bit for bit.
        let mut rev = texts.clone();
        rev.reverse();
        let out = e2.embed(&rev).unwrap();
        for (i, v) in out.vectors.iter().enumerate() {
            assert!(
                v == &alone[texts.len() - 1 - i],
                "{}: reversed position {i}",
                isa.name()
            );
        }
        let rotated: Vec<&String> = texts.iter().cycle().skip(7).take(texts.len()).collect();
        let out = e2.embed(&rotated).unwrap();
        for (i, v) in out.vectors.iter().enumerate() {
            assert!(
                v == &alone[(i + 7) % texts.len()],
                "{}: rotated position {i}",
                isa.name()
            );
        }
        // Duplicates inside one batch get identical vectors.
        let dup = e2.embed(&[&texts[3], &texts[20], &texts[3]]).unwrap();
        assert!(dup.vectors[0] == dup.vectors[2] && dup.vectors[0] == alone[3]);
    }
}

#[test]
fn repeated_calls_are_deterministic() {
    let texts = fixture_texts("repeated_calls_are_deterministic");
    let e = load(Isa::best(), 2, None);
    let first = e.embed(&texts).unwrap();
    for _ in 0..3 {
        assert_eq!(e.embed(&texts).unwrap(), first);
    }
}
