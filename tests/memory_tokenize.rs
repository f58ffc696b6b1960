//! Tokenizing a large call holds only token ids: what `embed` adds on top of its warm scratch
//! is the ids and the output vectors, not the tokenizer's `Encoding` objects (token strings,
//! offsets, masks: they made `tokenizers`' `encode_batch` hold ~150 bytes per token until the
//! whole call was tokenized, ~20 MB for this test's 125,000-token call: above the allowed
//! growth).
//! One test per binary so no other test's allocations share the process.

mod common;

use common::*;
use e5embed::{Embedder, EmbedderOptions};

/// Texts in the measured call, of about `WORDS` tokens each (every word is one token):
/// 1024 x 122 tokens, enough that holding every `Encoding` (~20 MB) exceeds
/// [`MAX_PEAK_GROWTH_BYTES`], while the forwards take ~40 s of CI's time, not ~80.
const TEXTS: usize = 1024;
const WORDS: usize = 120;

/// Allowed peak growth during the call: its ids (0.5 MB), output vectors (1.5 MB), allocator
/// slack and one Encoding per thread in flight.
const MAX_PEAK_GROWTH_BYTES: u64 = 12 << 20;

#[test]
fn a_large_call_does_not_hold_every_encoding() {
    if skip_under_emulation(
        "a_large_call_does_not_hold_every_encoding",
        "the RSS is the emulator's and the 250k-token call takes hours emulated; run natively",
    ) {
        return;
    }
    let opts = EmbedderOptions::default().threads(2);
    // The 3-layer model: the memory behaviour is the same, the forwards take half the time.
    let e = Embedder::load_with(model_dir("paraphrase-MiniLM-L3-v2"), &opts).unwrap();
    let words = [
        "the", "river", "market", "energy", "system", "study", "report", "health", "school",
        "family", "music", "science",
    ];
    let texts: Vec<String> = (0..TEXTS)
        .map(|i| {
            (0..WORDS)
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    // Warm-up: the scratch arena and the threads' kernel buffers, at the full token budget.
    e.embed(&texts[..e.max_batch_tokens() / (WORDS + 2)])
        .unwrap();
    let before = e5embed::internals::mem::rss_bytes().expect("/proc/self/status");
    if !e5embed::internals::mem::reset_peak_rss() {
        eprintln!("/proc/self/clear_refs is not writable here: peak not measured");
        return;
    }
    let out = e.embed(&texts).unwrap();
    let peak = e5embed::internals::mem::peak_rss_bytes().unwrap();
    assert_eq!(out.vectors.len(), TEXTS);
    assert!(out.token_counts.iter().all(|&n| n == WORDS + 2));
    eprintln!(
        "RSS before the call {:.1} MB, peak during it {:.1} MB",
        before as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(
        peak <= before + MAX_PEAK_GROWTH_BYTES,
        "peak RSS grew from {before} to {peak} bytes while embedding {TEXTS} texts"
    );
}
