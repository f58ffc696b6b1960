//! The ASCII shortcut of the tokenizer (`src/tokenize.rs`, module `ascii`) against the
//! `tokenizers` crate it replaces for ASCII text: the same ids and truncation flag for every
//! fixture text and for random ASCII texts (words from the fixtures, random letters and
//! digits in both cases, every ASCII punctuation character, each kind of whitespace and
//! control byte, `[`, words longer than WordPiece's limit, texts past the token limit), on
//! each test model at two token limits.

mod common;

use common::*;
use e5embed::tokenize::TextTokenizer;
use rand::{Rng, SeedableRng};

const MODELS: [&str; 3] = [
    "all-MiniLM-L6-v2",
    "paraphrase-MiniLM-L3-v2",
    "e5-small-v2-shape",
];

/// One random ASCII text of up to about `max_chars` characters.
fn random_text(rng: &mut impl Rng, words: &[String], max_chars: usize) -> String {
    const PUNCT: &[u8] = b"!\"#$%&'()*+,-./:;<=>?@\\]^_`{|}~";
    const SPACE: &[u8] = b" \t\n\r\x0b\x0c";
    const CONTROL: &[u8] = b"\x00\x01\x08\x0e\x1b\x1f\x7f";
    let target = rng.gen_range(0..=max_chars);
    let mut s = String::new();
    while s.len() < target {
        match rng.gen_range(0..100) {
            0..=39 => {
                let w = &words[rng.gen_range(0..words.len())];
                if rng.gen_bool(0.2) {
                    s.push_str(&w.to_uppercase());
                } else {
                    s.push_str(w);
                }
            }
            40..=54 => {
                for _ in 0..rng.gen_range(1..12) {
                    let c = match rng.gen_range(0..3) {
                        0 => rng.gen_range(b'a'..=b'z'),
                        1 => rng.gen_range(b'A'..=b'Z'),
                        _ => rng.gen_range(b'0'..=b'9'),
                    };
                    s.push(c as char);
                }
            }
            55..=69 => s.push(PUNCT[rng.gen_range(0..PUNCT.len())] as char),
            70..=89 => s.push(SPACE[rng.gen_range(0..SPACE.len())] as char),
            90..=95 => s.push(CONTROL[rng.gen_range(0..CONTROL.len())] as char),
            96 => s.push('['),
            97 => s.push_str("##"),
            _ => {
                // Around WordPiece's per-word limit (100 characters).
                let n = rng.gen_range(95..110);
                s.extend(std::iter::repeat_n('q', n));
            }
        }
    }
    s
}

#[test]
fn ascii_shortcut_equals_the_tokenizers_crate() {
    let fixtures: Vec<String> = fixture_texts("ascii_shortcut_equals_the_tokenizers_crate");
    let mut words: Vec<String> = fixtures
        .iter()
        .flat_map(|t| t.split_whitespace())
        .filter(|w| w.is_ascii())
        .map(str::to_owned)
        .collect();
    words.extend(
        [
            "unaffable",
            "playing",
            "e5",
            "query:",
            "passage:",
            "COVID-19",
        ]
        .map(String::from),
    );
    // Fewer random texts under emulation (E5EMBED_TEST_TEXTS=subset, tools/test-aarch64).
    let n = if texts_subset() {
        loud("ascii_shortcut_equals_the_tokenizers_crate: 2,000 random texts per model and limit (E5EMBED_TEST_TEXTS=subset), not 10,000");
        2_000
    } else {
        10_000
    };
    for name in MODELS {
        for max_len in [128, 512] {
            let path = model_dir(name).join("tokenizer.json");
            let t = TextTokenizer::from_file(&path, max_len).unwrap();
            assert!(t.ascii_fast(), "{name}: the ASCII shortcut is not in use");
            let mut rng = rand::rngs::StdRng::seed_from_u64(max_len as u64);
            let mut cut = 0;
            let texts = fixtures.iter().cloned().chain(
                (0..n).map(|i| random_text(&mut rng, &words, if i % 50 == 0 { 4000 } else { 200 })),
            );
            for (i, text) in texts.enumerate() {
                let fast = t.encode(&text).unwrap();
                let slow = t.encode_with_crate(&text).unwrap();
                assert_eq!(fast, slow, "{name}, max_len {max_len}: text {i} {text:?}");
                cut += fast.truncated as usize;
            }
            assert!(
                cut > 0,
                "{name}, max_len {max_len}: no text reached the limit"
            );
        }
    }
}

/// A tokenizer the shortcut does not reproduce (here: no text cleaning) runs without it.
#[test]
fn other_tokenizers_do_not_take_the_shortcut() {
    let src =
        std::fs::read_to_string(model_dir("all-MiniLM-L6-v2").join("tokenizer.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&src).unwrap();
    json["normalizer"]["clean_text"] = serde_json::Value::Bool(false);
    let dir = temp_dir("no-clean");
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    let t = TextTokenizer::from_file(&path, 128).unwrap();
    assert!(!t.ascii_fast());
    assert_eq!(
        t.encode("a\x0bb").unwrap(),
        t.encode_with_crate("a\x0bb").unwrap()
    );
}
