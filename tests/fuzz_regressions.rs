//! Inputs found by the fuzz targets (`fuzz/`, `tools/fuzz`) that once made the engine panic
//! or misbehave: each must now give a clear, typed error. Files are written under Cargo's
//! per-target temporary directory.

use std::path::PathBuf;

use e5embed::tokenize::TextTokenizer;
use e5embed::Error;

fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("fuzz-regressions-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small valid WordPiece tokenizer.json with `{decoder}` and `{normalizer}` spliced in.
fn tokenizer_json(normalizer: &str, decoder: &str) -> String {
    r###"{"version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "special": true, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
    {"id": 1, "special": true, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
    {"id": 2, "special": true, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false},
    {"id": 3, "special": true, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
  "normalizer": NORMALIZER,
  "pre_tokenizer": {"type": "BertPreTokenizer"},
  "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
  "decoder": DECODER,
  "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
    "max_input_chars_per_word": 100,
    "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hello": 4, "world": 5}}}"###
        .replace("NORMALIZER", normalizer)
        .replace("DECODER", decoder)
}

fn load(tag: &str, json: &str) -> e5embed::Result<TextTokenizer> {
    let path = scratch(tag).join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    TextTokenizer::from_file(&path, 16)
}

#[test]
fn the_regression_tokenizer_is_valid() {
    // The base file loads and encodes, so the cases below fail for the spliced part alone.
    let t = load(
        "valid",
        &tokenizer_json(
            r###"{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}"###,
            r###"{"type": "WordPiece", "prefix": "##", "cleanup": true}"###,
        ),
    )
    .unwrap();
    assert_eq!(t.encode("Hello world").unwrap().ids, vec![2, 4, 5, 3]);
}

/// tokenizer_json fuzz target: a JSON syntax error inside `"decoder"` made `tokenizers`
/// 0.21 panic (`expect("Helper")` in its decoder deserializer) instead of returning an error.
#[test]
fn tokenizer_json_syntax_error_in_decoder_is_an_error() {
    let json = tokenizer_json(
        r###"{"type": "Lowercase"}"###,
        r###"{"type": "WordPiece", "prefix" "##", "cleanup": true}"###,
    );
    let e = load("decoder-syntax", &json).expect_err("a malformed decoder must not load");
    assert!(matches!(e, Error::Tokenizer { .. }), "{e:?}");
}

/// The same library panics (`expect("Precompiled")`) on a `Precompiled` normalizer whose
/// character map is not valid base64 of a charsmap.
#[test]
fn tokenizer_json_bad_precompiled_normalizer_is_an_error() {
    let json = tokenizer_json(
        r###"{"type": "Precompiled", "precompiled_charsmap": "not a charsmap!"}"###,
        r###"{"type": "WordPiece", "prefix": "##", "cleanup": true}"###,
    );
    let e = load("precompiled", &json).expect_err("a malformed normalizer must not load");
    assert!(matches!(e, Error::Tokenizer { .. }), "{e:?}");
}

/// tokenizer_json fuzz target: a `TemplateProcessing` post-processor whose template names
/// `[CLS]` while its `special_tokens` map has it under another key made `tokenizers` 0.21
/// panic at every encode (`no entry found for key`, processors/template.rs), first inside
/// the ASCII shortcut's set-up, outside the engine's guard. Now the file is refused at load.
#[test]
fn tokenizer_json_template_naming_a_missing_special_token_is_an_error() {
    let template = r###""post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
               {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
    "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
             {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
    "special_tokens": {"CLR": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                       "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},"###;
    let base = tokenizer_json(
        r###"{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}"###,
        r###"{"type": "WordPiece", "prefix": "##", "cleanup": true}"###,
    );
    let bert = r###""post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},"###;
    assert!(base.contains(bert));
    // The same template with the map keyed right loads and encodes as BertProcessing does.
    let good = base.replace(bert, &template.replace("\"CLR\"", "\"[CLS]\""));
    let t = load("template-good", &good).unwrap();
    assert_eq!(t.encode("Hello world").unwrap().ids, vec![2, 4, 5, 3]);
    let e = load("template-missing", &base.replace(bert, template))
        .expect_err("a template naming a missing special token must not load");
    assert!(matches!(e, Error::Tokenizer { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("empty text") && msg.contains("no entry found for key"),
        "{msg}"
    );
}
