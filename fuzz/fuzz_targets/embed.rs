//! Arbitrary UTF-8 (lossily decoded) split on `\n` into up to 8 texts through
//! `Embedder::embed` of paraphrase-MiniLM-L3-v2 (from `e5embed::models_dir()`, loaded once,
//! one thread, a small token budget so a call spans several forwards). Every vector must be
//! finite and have the model's dimension; an error is fine, a panic is not.
#![no_main]

use std::sync::OnceLock;

use e5embed::{Embedder, EmbedderOptions};
use libfuzzer_sys::fuzz_target;

const MODEL: &str = "paraphrase-MiniLM-L3-v2";

fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| {
        let dir = e5embed::models_dir().join(MODEL);
        if !dir.join("model.safetensors").is_file() {
            panic!(
                "the embed fuzz target needs {} (run tools/fetch-models first)",
                dir.display()
            );
        }
        let opts = EmbedderOptions::default().threads(1).max_batch_tokens(256);
        Embedder::load_with(&dir, &opts)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", dir.display()))
    })
}

fuzz_target!(|data: &[u8]| {
    let e = embedder();
    let text = String::from_utf8_lossy(data);
    let texts: Vec<&str> = text.split('\n').take(8).collect();
    let Ok(out) = e.embed(&texts) else {
        return;
    };
    assert_eq!(out.vectors.len(), texts.len());
    for (t, v) in texts.iter().zip(&out.vectors) {
        assert_eq!(v.len(), e.dim(), "{t:?}");
        assert!(
            v.iter().all(|x| x.is_finite()),
            "non-finite vector for {t:?}"
        );
    }
});
