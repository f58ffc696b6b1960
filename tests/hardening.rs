//! Regression tests for issue #13's findings: each failed (or did not compile: the typed
//! errors are new) before its fix.
//! - re-quantizing a saved int8 model (smoothing applied twice: cosine 0.05 to f32);
//! - `quantize --out` equal to / inside the source (config.json truncated to 0 bytes);
//! - `threads` / `max_batch_tokens` without upper bounds (abort on allocation, thread panic);
//! - load-time validation: tokenizer vs embedding rows, position table, no modules.json,
//!   non-finite outputs.

mod common;

use common::*;
use e5embed::embedder::{MAX_BATCH_TOKENS, MAX_THREADS};
use e5embed::{Embedder, EmbedderOptions, Error, Precision};
use e5embed_kernels::qgemm::QIsa;
use safetensors::tensor::Dtype;

fn tiny_dir(tag: &str) -> TempDir {
    let dir = temp_dir(tag);
    write_tiny_model(&dir, &tiny_tensors(7), Dtype::F32);
    dir
}

fn load_err(dir: &std::path::Path, opts: &EmbedderOptions) -> Error {
    match Embedder::load_with(dir, opts) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

/// Every file under `dir` with its bytes (to show that nothing changed).
fn snapshot(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn requantizing_a_saved_int8_model_is_refused_and_writes_nothing() {
    let src = tiny_dir("requant-src");
    let q1 = temp_dir("requant-q1");
    let qisa = QIsa::best();
    e5embed::quantize::save_quantized(&src, &q1, qisa).unwrap();
    let q2_dir = temp_dir("requant-q2");
    let q2 = q2_dir.join("out");
    let err = e5embed::quantize::save_quantized(&q1, &q2, qisa).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::InvalidInput(_)) && msg.contains("already an int8 model"),
        "{msg}"
    );
    assert!(
        !q2.exists(),
        "nothing may be written for a refused quantize"
    );
}

#[test]
fn quantize_out_equal_to_or_inside_the_source_is_refused_before_writing() {
    // The model one level down, so the sibling output below is inside the scratch directory.
    let root = temp_dir("same-out");
    let src = root.join("model");
    write_tiny_model(&src, &tiny_tensors(7), Dtype::F32);
    let before = snapshot(&src);
    let qisa = QIsa::best();
    for out in [
        src.to_path_buf(),
        src.join("."),
        src.join("int8"),
        src.join("a/b"),
        src.join("../").join(src.file_name().unwrap()),
    ] {
        let err = e5embed::quantize::save_quantized(&src, &out, qisa).unwrap_err();
        assert!(
            err.to_string().contains("the source model directory"),
            "{}: {err}",
            out.display()
        );
    }
    assert_eq!(snapshot(&src), before, "the source directory changed");
    // A sibling directory is fine, and leaves no temporary file behind.
    let sibling = src.with_extension("int8");
    e5embed::quantize::save_quantized(&src, &sibling, qisa).unwrap();
    assert_eq!(snapshot(&src), before);
    for (p, _) in snapshot(&sibling) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".part"), "temporary file left: {name}");
    }
    let cfg = std::fs::read(sibling.join("config.json")).unwrap();
    assert_eq!(cfg, std::fs::read(src.join("config.json")).unwrap());
}

#[test]
fn threads_and_token_budget_have_upper_bounds_with_typed_errors() {
    let dir = tiny_dir("limits");
    let opts = EmbedderOptions::default().threads(100_000);
    match load_err(&dir, &opts) {
        Error::Limit {
            what, value, max, ..
        } => {
            assert_eq!(
                (what.as_str(), value, max),
                ("threads", 100_000, MAX_THREADS)
            )
        }
        other => panic!("{other:?}"),
    }
    let opts = EmbedderOptions::default().max_batch_tokens(100_000_000_000);
    match load_err(&dir, &opts) {
        Error::Limit { what, max, .. } => {
            assert_eq!((what.as_str(), max), ("max_batch_tokens", MAX_BATCH_TOKENS))
        }
        other => panic!("{other:?}"),
    }
    // The limit itself loads (the scratch is allocated on first use, not here).
    let opts = EmbedderOptions::default()
        .max_batch_tokens(MAX_BATCH_TOKENS)
        .threads(1);
    Embedder::load_with(&dir, &opts).unwrap();
}

#[test]
fn a_scratch_too_large_for_the_budget_is_refused_not_aborted() {
    // A (legal) wide config whose scratch at the maximum budget exceeds the memory limit.
    let dir = temp_dir("wide");
    write_tiny_model(&dir, &tiny_tensors(7), Dtype::F32);
    let mut cfg = tiny_config();
    cfg["intermediate_size"] = 65536.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let opts = EmbedderOptions::default().max_batch_tokens(MAX_BATCH_TOKENS);
    match load_err(&dir, &opts) {
        Error::Limit { what, .. } => assert_eq!(what, "forward scratch bytes"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokenizer_ids_beyond_the_embedding_table_are_refused_at_load() {
    // The MiniLM tokenizer has 30522 ids; a model with fewer embedding rows cannot run it.
    let dir = temp_dir("vocab");
    let mut t = tiny_tensors(7);
    let rows = 1000;
    let emb = t.get_mut("embeddings.word_embeddings.weight").unwrap();
    emb.0 = vec![rows, TINY_HIDDEN];
    emb.1.truncate(rows * TINY_HIDDEN);
    write_tiny_model(&dir, &t, Dtype::F32);
    let mut cfg = tiny_config();
    cfg["vocab_size"] = rows.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let err = load_err(&dir, &EmbedderOptions::default());
    assert!(
        matches!(err, Error::Tokenizer { .. }) && err.to_string().contains("1000 rows"),
        "{err}"
    );
}

#[test]
fn a_position_table_without_room_for_cls_and_sep_is_refused() {
    for n in [0usize, 1] {
        let dir = tiny_dir(&format!("pos{n}"));
        let mut cfg = tiny_config();
        cfg["max_position_embeddings"] = n.into();
        std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let err = load_err(&dir, &EmbedderOptions::default());
        assert!(
            matches!(err, Error::Config { .. })
                && (err.to_string().contains("[CLS] and [SEP]") || n == 0),
            "{n}: {err}"
        );
    }
}

#[test]
fn without_modules_json_vectors_are_mean_pooled_and_not_normalized_as_in_sentence_transformers() {
    let dir = tiny_dir("no-modules");
    assert!(!dir.join("modules.json").exists());
    let e = Embedder::load(&dir).unwrap();
    assert!(!e.config().normalize && !e.config().has_modules_json);
    assert!(e
        .config()
        .pipeline_description()
        .contains("no modules.json"));
    let v = &e.embed(&["hello world"]).unwrap().vectors[0];
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "norm {norm}: normalized");
    // The option overrides it.
    let opts = EmbedderOptions::default().normalize(true);
    let n = Embedder::load_with(&dir, &opts).unwrap();
    let v = &n.embed(&["hello world"]).unwrap().vectors[0];
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    // With modules.json naming Normalize, the model's vectors are normalized.
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    let m = Embedder::load(&dir).unwrap();
    assert!(m.config().normalize && m.config().has_modules_json);
}

#[test]
fn non_finite_outputs_are_an_error_naming_the_text() {
    // Finite but huge weights: the first LayerNorm's input overflows for every token.
    let dir = temp_dir("overflow");
    let mut t = tiny_tensors(7);
    for v in t
        .get_mut("embeddings.word_embeddings.weight")
        .unwrap()
        .1
        .iter_mut()
    {
        *v *= 3.0e38;
    }
    write_tiny_model(&dir, &t, Dtype::F32);
    for precision in [Precision::F32, Precision::Int8, Precision::Bf16] {
        let opts = EmbedderOptions::default().precision(precision);
        let e = Embedder::load_with(&dir, &opts).unwrap();
        match e.embed(&["fine", "hello world overflows"]) {
            Err(Error::NonFiniteOutput { index, text }) => {
                assert!(index < 2);
                assert!(
                    text.contains("fine") || text.contains("overflows"),
                    "{text}"
                );
            }
            other => panic!("{precision}: {other:?}"),
        }
    }
}
