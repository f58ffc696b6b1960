//! Flat memory: after the first call, many calls with random mixes of lengths do not grow the
//! process's resident memory (scratch grows to the largest forward, at most the token budget, and is reused).
//! One test per binary so no other test's allocations share the process.

mod common;

use common::*;
use e5embed::{Embedder, EmbedderOptions, Tokens};

/// Allowed RSS growth over 120 calls after warm-up (allocator noise, tokenizer caches).
const MAX_RSS_GROWTH_BYTES: u64 = 8 << 20;

#[test]
fn rss_stays_flat_across_calls_with_random_lengths() {
    if skip_under_emulation(
        "rss_stays_flat_across_calls_with_random_lengths",
        "the RSS is the emulator's and 120 calls (~100k tokens) take hours emulated; run natively",
    ) {
        return;
    }
    let opts = EmbedderOptions::default().threads(2);
    // The 3-layer model: the memory behaviour is the same, the forwards take half the time.
    let e = Embedder::load_with(model_dir("paraphrase-MiniLM-L3-v2"), &opts).unwrap();
    let max_len = e.config().max_seq_length;
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut rnd = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let make_call = |rnd: &mut dyn FnMut(usize) -> usize| -> Vec<Tokens> {
        let texts = 1 + rnd(12);
        (0..texts)
            .map(|_| {
                let len = 2 + rnd(max_len - 1);
                let mut ids = vec![101u32];
                ids.extend((2..len).map(|_| 1000 + rnd(29_000) as u32));
                ids.push(102);
                Tokens {
                    ids,
                    truncated: false,
                }
            })
            .collect()
    };
    // Warm-up: a few calls, and one that fills the whole token budget with the longest texts
    // (it reaches the largest per-thread kernel scratch too).
    for _ in 0..5 {
        e.embed_tokens(&make_call(&mut rnd)).unwrap();
    }
    let full: Vec<Tokens> = (0..e.max_batch_tokens() / max_len)
        .map(|_| Tokens {
            ids: [101]
                .into_iter()
                .chain(vec![2000u32; max_len - 2])
                .chain([102])
                .collect(),
            truncated: false,
        })
        .collect();
    e.embed_tokens(&full).unwrap();
    let words: Vec<String> = (0..64).map(|i| format!("word{i} ")).collect();
    e.embed(&[words.concat()]).unwrap();
    let before = e5embed::internals::mem::rss_bytes().expect("/proc/self/status");
    let scratch_before = e.scratch_bytes();
    for i in 0..120 {
        let call = make_call(&mut rnd);
        let out = e.embed_tokens(&call).unwrap();
        assert_eq!(out.vectors.len(), call.len());
        if i % 20 == 0 {
            let text: String = (0..rnd(300)).map(|j| words[j % 64].as_str()).collect();
            e.embed(&[text]).unwrap();
        }
    }
    let after = e5embed::internals::mem::rss_bytes().unwrap();
    assert_eq!(
        e.scratch_bytes(),
        scratch_before,
        "scratch grew after warm-up"
    );
    eprintln!(
        "RSS before {:.1} MB, after 120 calls {:.1} MB, scratch {:.1} MB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
        scratch_before as f64 / 1048576.0
    );
    assert!(
        after <= before + MAX_RSS_GROWTH_BYTES,
        "RSS grew from {before} to {after} bytes over 120 calls"
    );
}
