//! Arbitrary `config.json`, `sentence_bert_config.json`, `modules.json` and
//! `1_Pooling/config.json` through `ModelConfig::from_dir`. The input is split on NUL bytes
//! into those four files in that order; a file with no part is absent (an empty part is an
//! empty file). Errors are expected; a panic or an accepted configuration that breaks what
//! the loader promises is a bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use e5embed::ModelConfig;
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 4] = [
    "config.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
];

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = e5embed_fuzz::scratch_dir("model_config");
        std::fs::create_dir_all(d.join("1_Pooling")).expect("create 1_Pooling");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    let mut parts = data.split(|&b| b == 0);
    for name in FILES {
        e5embed_fuzz::put(&dir.join(name), parts.next());
    }
    let Ok(c) = ModelConfig::from_dir(dir) else {
        return;
    };
    let b = &c.bert;
    for v in [
        b.vocab_size,
        b.hidden_size,
        b.num_hidden_layers,
        b.num_attention_heads,
        b.intermediate_size,
        b.max_position_embeddings,
        b.type_vocab_size,
    ] {
        assert!(v > 0);
    }
    assert_eq!(b.hidden_size % b.num_attention_heads, 0);
    assert!(b.head_dim() > 0);
    assert!(b.layer_norm_eps.is_finite() && b.layer_norm_eps > 0.0);
    assert!(c.max_seq_length <= b.max_position_embeddings);
    // Reading the same files again gives the same answer.
    assert_eq!(ModelConfig::from_dir(dir).ok(), Some(c));
});
