//! The fast forward against the plain reference forward on a tiny random BERT (every ISA path),
//! weight dtypes and tensor-name prefixes, batching, prefixes and thread safety.

mod common;

use common::*;
use e5embed::{pool::cosine, Embedder, EmbedderOptions, Isa, Tokens};
use safetensors::tensor::Dtype;

/// Fast vs reference forward on the tiny model (hidden states after LayerNorm are O(1)).
const FAST_VS_REFERENCE_MAX_ABS_DIFF: f32 = 2e-5;

fn tiny(tag: &str, dtype: Dtype) -> TempDir {
    let dir = temp_dir(tag);
    write_tiny_model(&dir, &tiny_tensors(11), dtype);
    dir
}

fn seqs_of_lengths(lengths: &[usize]) -> Vec<Vec<u32>> {
    lengths
        .iter()
        .enumerate()
        .map(|(s, &len)| {
            let mut ids = vec![101u32];
            ids.extend((2..len).map(|j| 1000 + ((s * 7919 + j * 104_729) % 29_000) as u32));
            ids.push(102);
            ids
        })
        .collect()
}

#[test]
fn fast_forward_matches_reference_on_every_isa() {
    let dir = tiny("fastref", Dtype::F32);
    let cfg = e5embed::ModelConfig::from_dir(&dir).unwrap();
    let w = e5embed::internals::weights::BertWeights::load(&dir, &cfg.bert).unwrap();
    let seqs = seqs_of_lengths(&[2, 3, 7, 17, 33, 64, 5]);
    let want: Vec<Vec<f32>> = seqs
        .iter()
        .map(|s| e5embed::internals::model::reference::forward(&w, s).unwrap())
        .collect();
    for isa in Isa::available() {
        for threads in [1, 2] {
            let opts = EmbedderOptions::default().isa(isa.kind()).threads(threads);
            let e = Embedder::load_with(&dir, &opts).unwrap();
            let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
            let got = e.last_hidden_states(&refs).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let d = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    d <= FAST_VS_REFERENCE_MAX_ABS_DIFF,
                    "{} threads {threads}: seq {i} (len {}) max abs diff {d}",
                    isa.name(),
                    seqs[i].len()
                );
            }
        }
    }
}

#[test]
fn half_precision_weights_load_as_their_f32_values() {
    // f16 / bf16 files must give exactly what an f32 file holding the same rounded values gives.
    for (dtype, round) in [
        (
            Dtype::F16,
            (|v: f32| half::f16::from_f32(v).to_f32()) as fn(f32) -> f32,
        ),
        (Dtype::BF16, |v: f32| half::bf16::from_f32(v).to_f32()),
    ] {
        let mut rounded = tiny_tensors(11);
        for (_, vals) in rounded.values_mut() {
            for v in vals.iter_mut() {
                *v = round(*v);
            }
        }
        let d16 = temp_dir("half");
        write_tiny_model(&d16, &tiny_tensors(11), dtype);
        let d32 = temp_dir("halfref");
        write_tiny_model(&d32, &rounded, Dtype::F32);
        let a = Embedder::load(&d16)
            .unwrap()
            .embed(&["half precision weights"])
            .unwrap();
        let b = Embedder::load(&d32)
            .unwrap()
            .embed(&["half precision weights"])
            .unwrap();
        assert_eq!(a.vectors, b.vectors, "{dtype:?}");
    }
}

#[test]
fn bert_prefixed_tensor_names_are_accepted() {
    let plain = tiny("plain", Dtype::F32);
    let prefixed = temp_dir("prefixed");
    write_tiny_model(&prefixed, &tiny_tensors(11), Dtype::F32);
    std::fs::write(
        prefixed.join("model.safetensors"),
        safetensors_bytes(&tiny_tensors(11), Dtype::F32, "bert."),
    )
    .unwrap();
    let a = Embedder::load(&plain)
        .unwrap()
        .embed(&["a prefixed checkpoint"])
        .unwrap();
    let b = Embedder::load(&prefixed)
        .unwrap()
        .embed(&["a prefixed checkpoint"])
        .unwrap();
    assert_eq!(a.vectors, b.vectors);
}

#[test]
fn batch_results_match_single_results_in_input_order() {
    let e = Embedder::load(tiny("order", Dtype::F32)).unwrap();
    let texts = [
        "first text",
        "",
        "a somewhat longer third text with more tokens in it",
        "x",
    ];
    let batch = e.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let single = e.embed(&[*t]).unwrap();
        let c = cosine(&single.vectors[0], &batch.vectors[i]);
        assert!(c > 0.999999, "text {i}: cosine {c}");
    }
}

#[test]
fn query_and_passage_prefixes() {
    let e = Embedder::load(tiny("prefix", Dtype::F32)).unwrap();
    let q = e.embed_queries(&["how tall is everest"]).unwrap();
    let manual = e.embed(&["query: how tall is everest"]).unwrap();
    assert_eq!(q.vectors, manual.vectors);
    let p = e.embed_passages(&["everest is 8849 m tall"]).unwrap();
    let manual = e.embed(&["passage: everest is 8849 m tall"]).unwrap();
    assert_eq!(p.vectors, manual.vectors);
    assert_ne!(
        q.vectors,
        e.embed(&["how tall is everest"]).unwrap().vectors
    );
}

#[test]
fn long_texts_are_truncated_and_reported() {
    // The tiny model has 64 positions and no sentence_bert_config.json: the limit is 64.
    let e = Embedder::load(tiny("trunc", Dtype::F32)).unwrap();
    let long = "word ".repeat(500);
    let out = e.embed(&["short", long.as_str()]).unwrap();
    assert_eq!(out.truncated, vec![1]);
    assert_eq!(out.token_counts[1], 64);
}

#[test]
fn many_batches_respect_the_token_budget() {
    let dir = tiny("budget", Dtype::F32);
    let small =
        Embedder::load_with(&dir, &EmbedderOptions::default().max_batch_tokens(64)).unwrap();
    let big = Embedder::load(&dir).unwrap();
    let seqs: Vec<Tokens> = seqs_of_lengths(&[20, 30, 40, 64, 2, 9])
        .into_iter()
        .map(|ids| Tokens {
            ids,
            truncated: false,
        })
        .collect();
    let a = small.embed_tokens(&seqs).unwrap();
    let b = big.embed_tokens(&seqs).unwrap();
    for (x, y) in a.vectors.iter().zip(&b.vectors) {
        assert!(cosine(x, y) > 0.999999);
    }
}

#[test]
fn embedder_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Embedder>();
    let e = std::sync::Arc::new(Embedder::load(tiny("threads", Dtype::F32)).unwrap());
    let want = e.embed(&["shared embedder"]).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let e = e.clone();
            std::thread::spawn(move || e.embed(&["shared embedder"]).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().vectors, want.vectors);
    }
}
