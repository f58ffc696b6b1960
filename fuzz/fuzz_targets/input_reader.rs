//! Arbitrary bytes through the CLI's streamed reader `e5embed::internals::input::TextReader`, in both
//! formats, in small chunks through a small `BufReader`. The first byte picks the format,
//! the chunk size (1-8) and the buffer size (1-16 bytes); the rest is the input. Plain lines
//! and JSON Lines are checked against a model of each format (`lines`, `model_lines`,
//! `model_jsonl` below): the same texts, and an error exactly when the model has a bad line.
#![no_main]

use std::io::BufReader;

use e5embed::internals::input::{Format, TextReader};
use libfuzzer_sys::fuzz_target;

/// The input's lines as the reader sees them: split after each `\n`; a line that ended with
/// `\n` loses it and then one `\r` before it (a last line without `\n` keeps its `\r`).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split_inclusive(|&b| b == b'\n')
        .map(|l| match l.strip_suffix(b"\n") {
            Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
            None => l,
        })
}

/// What the reader should return for `data` in `Lines` format: the texts before the first
/// bad line, and the 1-based number of the first line that is not UTF-8, if any.
fn model_lines(data: &[u8]) -> (Vec<String>, Option<usize>) {
    let mut texts = Vec::new();
    for (n, line) in lines(data).enumerate() {
        match std::str::from_utf8(line) {
            Ok(s) => texts.push(s.to_owned()),
            Err(_) => return (texts, Some(n + 1)),
        }
    }
    (texts, None)
}

/// The same for `JsonLines { field: "text" }`: the `text` strings of the non-blank lines
/// before the first bad line (not UTF-8, not JSON, no string `text`), and whether there is one.
fn model_jsonl(data: &[u8]) -> (Vec<String>, bool) {
    let mut texts = Vec::new();
    for line in lines(data) {
        let Ok(s) = std::str::from_utf8(line) else {
            return (texts, true);
        };
        if s.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(serde_json::Value::Object(o)) => match o.get("text") {
                Some(serde_json::Value::String(t)) => texts.push(t.clone()),
                _ => return (texts, true),
            },
            _ => return (texts, true),
        }
    }
    (texts, false)
}

fn read_all<R: std::io::BufRead>(
    mut r: TextReader<R>,
    chunk: usize,
) -> (Vec<String>, Option<String>) {
    let mut all = Vec::new();
    let mut buf = Vec::new();
    loop {
        match r.read_chunk(chunk, &mut buf) {
            Ok(0) => return (all, None),
            Ok(n) => {
                assert!(n <= chunk);
                assert_eq!(n, buf.len());
                all.append(&mut buf);
            }
            Err(e) => {
                // The texts before the bad line stay in `buf` (the CLI embeds them).
                assert!(buf.len() < chunk);
                all.append(&mut buf);
                return (all, Some(e.to_string()));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let chunk = 1 + (ctl & 7) as usize;
    let cap = 1 + ((ctl >> 3) & 15) as usize;
    let jsonl = ctl & 0x80 != 0;
    let format = if jsonl {
        Format::JsonLines {
            field: "text".into(),
        }
    } else {
        Format::Lines
    };
    let reader = TextReader::new(BufReader::with_capacity(cap, input), format, "fuzz");
    let (texts, err) = read_all(reader, chunk);
    if !jsonl {
        let (want, bad) = model_lines(input);
        assert_eq!(texts, want);
        match (bad, &err) {
            (None, None) => {}
            (Some(n), Some(e)) => assert!(e.contains(&format!("line {n} ")), "{e}"),
            _ => panic!("bad line {bad:?}, error {err:?}"),
        }
    } else {
        let (want, bad) = model_jsonl(input);
        assert_eq!(texts, want, "error {err:?}");
        assert_eq!(err.is_some(), bad, "error {err:?}");
    }
});
