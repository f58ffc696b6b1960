//! Arbitrary bytes as a `model.safetensors` through the engine's real loader
//! (`BertWeights::from_bytes`, the code path of `BertWeights::load` once the file is mapped),
//! against a small fixed encoder (hidden 4, 2 heads, 1 layer, FFN 8, vocab 8, 8 positions):
//! lying offsets, overlapping ranges, overflowing shapes, wrong dtypes, int8 + `_scale` /
//! `_smooth` tensors. Errors are expected; a panic, an abort or an accepted file whose
//! tensors do not have the configured sizes (or hold a non-finite value) is a bug.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e5embed::internals::weights::{BertWeights, Matrix};
use e5embed::BertConfig;
use libfuzzer_sys::fuzz_target;

/// The encoder `fuzz/make_seeds.py` writes its seeds for. Read through `config.json` (not a
/// struct literal) so the target follows the engine's own parsing and defaults.
const CONFIG_JSON: &str = r#"{"model_type": "bert", "vocab_size": 8, "hidden_size": 4,
  "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
  "max_position_embeddings": 8, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#;

fn config() -> &'static BertConfig {
    static CONFIG: OnceLock<BertConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let dir: PathBuf = e5embed_fuzz::scratch_dir("safetensors_weights");
        let path = dir.join("config.json");
        e5embed_fuzz::put(&path, Some(CONFIG_JSON.as_bytes()));
        BertConfig::from_file(&path).expect("the fixed fuzz config is valid")
    })
}

fn check_matrix(m: &Matrix, rows: usize, cols: usize) {
    match m {
        Matrix::F32(w) => {
            assert_eq!(w.len(), rows * cols);
            assert!(w.iter().all(|v| v.is_finite()));
        }
        Matrix::Int8 { q, scales } => {
            assert_eq!(q.len(), rows * cols);
            assert_eq!(scales.len(), rows);
            assert!(scales.iter().all(|v| v.is_finite()));
            assert!(q.iter().all(|&v| v != i8::MIN));
        }
    }
}

fn check_vec(v: &[f32], len: usize) {
    assert_eq!(v.len(), len);
    assert!(v.iter().all(|x| x.is_finite()));
}

fuzz_target!(|data: &[u8]| {
    let c = config();
    let Ok(w) = BertWeights::from_bytes(data, Path::new("fuzz/model.safetensors"), c) else {
        return;
    };
    let (h, i) = (c.hidden_size, c.intermediate_size);
    check_vec(&w.word_emb, c.vocab_size * h);
    check_vec(&w.pos_emb, c.max_position_embeddings * h);
    check_vec(&w.type_emb, c.type_vocab_size * h);
    check_vec(&w.emb_ln_g, h);
    check_vec(&w.emb_ln_b, h);
    assert_eq!(w.layers.len(), c.num_hidden_layers);
    for l in &w.layers {
        check_matrix(&l.qkv_w, 3 * h, h);
        check_vec(&l.qkv_b, 3 * h);
        check_matrix(&l.attn_out_w, h, h);
        check_vec(&l.attn_out_b, h);
        check_vec(&l.attn_ln_g, h);
        check_vec(&l.attn_ln_b, h);
        check_matrix(&l.ffn_up_w, i, h);
        check_vec(&l.ffn_up_b, i);
        check_matrix(&l.ffn_down_w, h, i);
        check_vec(&l.ffn_down_b, h);
        check_vec(&l.ffn_ln_g, h);
        check_vec(&l.ffn_ln_b, h);
        for (g, s) in l.smooth.iter().enumerate() {
            if let Some(s) = s {
                let k = if g == 3 { i } else { h };
                check_vec(s, k);
                assert!(s.iter().all(|&x| x > 0.0));
                assert!(matches!(l.linear(g), Matrix::Int8 { .. }));
            }
        }
    }
});
