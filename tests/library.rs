//! Library conveniences sentence-transformers users expect: empty input gives an empty result,
//! a flat `[n, dim]` output written in place, prompts by name (the model's own from
//! `config_sentence_transformers.json`, E5's `query`/`passage`, the model's default prompt),
//! and normalize / pooling overrides.

mod common;

use common::*;
use e5embed::{Embedder, EmbedderOptions, Error, Pooling};
use safetensors::tensor::Dtype;

fn tiny_dir(tag: &str) -> TempDir {
    let dir = temp_dir(tag);
    write_tiny_model(&dir, &tiny_tensors(7), Dtype::F32);
    dir
}

#[test]
fn an_empty_list_gives_an_empty_result() {
    let e = Embedder::load(tiny_dir("empty")).unwrap();
    let none: [&str; 0] = [];
    for out in [
        e.embed(&none).unwrap(),
        e.embed_queries(&none).unwrap(),
        e.embed_tokens(&[]).unwrap(),
    ] {
        assert!(out.vectors.is_empty() && out.token_counts.is_empty());
    }
    let mut buf: [f32; 0] = [];
    assert!(e
        .embed_into(&none, &mut buf)
        .unwrap()
        .token_counts
        .is_empty());
}

#[test]
fn embed_into_writes_the_same_rows_in_place_and_checks_the_buffer() {
    let e = Embedder::load(model_dir("paraphrase-MiniLM-L3-v2")).unwrap();
    let texts = [
        "hello world",
        "",
        "a somewhat longer sentence about rivers and bridges",
    ];
    let expected = e.embed(&texts).unwrap();
    let mut flat = vec![f32::NAN; texts.len() * e.dim()];
    let info = e.embed_into(&texts, &mut flat).unwrap();
    assert_eq!(flat, expected.to_flat());
    assert_eq!(info.token_counts, expected.token_counts);
    let mut short = vec![0f32; e.dim()];
    assert!(matches!(
        e.embed_into(&texts, &mut short),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn prompts_by_name_from_the_model_and_e5_defaults() {
    let dir = tiny_dir("prompts");
    let e = Embedder::load(&dir).unwrap();
    // E5's prefixes by name, without any model prompt.
    assert_eq!(e.prompt("query"), Some("query: "));
    assert_eq!(
        e.embed_queries(&["x"]).unwrap(),
        e.embed(&["query: x"]).unwrap()
    );
    assert_eq!(
        e.embed_with_prompt_name(&["x"], "passage").unwrap(),
        e.embed(&["passage: x"]).unwrap()
    );
    assert!(matches!(
        e.embed_with_prompt_name(&["x"], "nope"),
        Err(Error::InvalidInput(_))
    ));
    // The model's own prompts, and its default prompt applied by `embed`.
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        r#"{"prompts": {"query": "Represent this query: ", "doc": ""}, "default_prompt_name": "query"}"#,
    )
    .unwrap();
    let m = Embedder::load(&dir).unwrap();
    assert_eq!(m.prompt("query"), Some("Represent this query: "));
    assert_eq!(m.prompt("doc"), Some(""));
    assert_eq!(
        m.embed(&["x"]).unwrap(),
        m.embed_as_given(&["Represent this query: x"]).unwrap()
    );
    assert_eq!(m.embed_as_given(&["x"]).unwrap(), e.embed(&["x"]).unwrap());
    // A default that names no prompt is refused at load.
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        r#"{"prompts": {}, "default_prompt_name": "query"}"#,
    )
    .unwrap();
    assert!(matches!(Embedder::load(&dir), Err(Error::Config { .. })));
}

#[test]
fn pooling_override() {
    let dir = tiny_dir("pooling");
    let opts = EmbedderOptions::default().pooling(Pooling::Cls);
    let cls = Embedder::load_with(&dir, &opts).unwrap();
    let mean = Embedder::load(&dir).unwrap();
    assert_eq!(cls.pooling(), Pooling::Cls);
    assert_ne!(
        cls.embed(&["hello world"]).unwrap(),
        mean.embed(&["hello world"]).unwrap()
    );
}

/// `prepare_for_bulk` (what `embed` does before a file) grows the scratch to the token budget
/// once, is idempotent, and changes no vector.
#[test]
fn prepare_for_bulk_claims_the_budget_scratch_and_changes_no_vector() {
    let e = Embedder::load(tiny_dir("bulk")).unwrap();
    let texts = [
        "a query",
        "another text, a little longer than the first one",
    ];
    let before = e.embed(&texts).unwrap();
    let grown_to_need = e.scratch_bytes();
    e.prepare_for_bulk();
    let at_budget = e.scratch_bytes();
    assert!(
        at_budget > grown_to_need,
        "scratch {grown_to_need} -> {at_budget} bytes: not grown to the budget"
    );
    e.prepare_for_bulk();
    assert_eq!(e.scratch_bytes(), at_budget, "a second call grows nothing");
    assert_eq!(e.embed(&texts).unwrap(), before);
}
