//! The `e5embed` binary: embed from arguments and stdin, .npy output, invalid UTF-8, bench JSON.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_e5embed");

/// A `Command` running the binary: directly, or under emulation through the runner in
/// `E5EMBED_TEST_RUNNER` (test side only: tools/test-aarch64 sets it to the same
/// `qemu-aarch64 -cpu ...` that runs this test, since a process under qemu-user cannot exec a
/// foreign binary without binfmt_misc).
fn bin() -> Command {
    match runner() {
        Some(r) => {
            let mut words = r.split_whitespace();
            let mut c = Command::new(words.next().unwrap());
            c.args(words).arg(BIN);
            c
        }
        _ => Command::new(BIN),
    }
}

fn tiny_model() -> TempDir {
    let dir = temp_dir("cli");
    write_tiny_model(&dir, &tiny_tensors(3), safetensors::tensor::Dtype::F32);
    dir
}

fn run(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn json_lines(out: &[u8]) -> Vec<Vec<f32>> {
    String::from_utf8(out.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn embed_arguments_and_stdin_agree() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    let a = run(&["embed", "--model", m, "--query", "first", "second"], b"");
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = run(&["embed", "--model", m, "--query"], b"first\nsecond\n");
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let (va, vb) = (json_lines(&a.stdout), json_lines(&b.stdout));
    assert_eq!(va.len(), 2);
    assert_eq!(va, vb);
    assert_eq!(va[0].len(), TINY_HIDDEN);
    // --query is exactly the `query: ` prefix.
    let c = run(&["embed", "--model", m, "query: first"], b"");
    assert_eq!(json_lines(&c.stdout)[0], va[0]);
}

#[test]
fn invalid_utf8_names_the_line() {
    let m = tiny_model();
    let out = run(
        &["embed", "--model", m.to_str().unwrap()],
        b"ok line\nbad \xff\xfe line\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
}

#[test]
fn truncation_warns_on_stderr() {
    let m = tiny_model();
    let long = "word ".repeat(300);
    let out = run(
        &["embed", "--model", m.to_str().unwrap(), "short", &long],
        b"",
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text 2 was truncated"), "{err}");
}

#[test]
fn npy_output_holds_the_same_vectors() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    let npy = temp_dir("npy");
    let path = npy.join("out.npy");
    let out = run(
        &[
            "embed",
            "--model",
            m,
            "--output",
            path.to_str().unwrap(),
            "alpha",
            "beta",
            "",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = json_lines(&run(&["embed", "--model", m, "alpha", "beta", ""], b"").stdout);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains(&format!("'shape': (3, {TINY_HIDDEN})")),
        "{header}"
    );
    assert_eq!((10 + hlen) % 64, 0);
    let data: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(data, json.concat());
}

#[test]
fn missing_model_is_a_clear_error() {
    let out = run(&["embed", "--model", "/nonexistent/model", "text"], b"");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tools/fetch-models"), "{err}");
}

#[test]
fn bench_json_has_the_documented_keys() {
    let m = tiny_model();
    let out = run(
        &[
            "bench",
            "--model",
            m.to_str().unwrap(),
            "--batch",
            "2",
            "--seq",
            "16",
            "--iters",
            "3",
            "--json",
            "--no-tune",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "batch",
        "seq",
        "threads",
        "precision",
        "isa",
        "median_ms",
        "min_ms",
        "max_ms",
        "tokens_per_s",
    ] {
        assert!(v.get(key).is_some(), "missing key {key} in {v}");
    }
    assert_eq!(v["batch"], 2);
    assert_eq!(v["seq"], 16);
    assert_eq!(v["precision"], "f32");
    assert!(v["median_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn input_files_txt_and_jsonl_with_jsonl_and_npy_outputs() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    let dir = temp_dir("files");
    let txt = dir.join("in.txt");
    std::fs::write(&txt, "alpha\n\nbeta gamma\n").unwrap();
    let jsonl = dir.join("in.jsonl");
    std::fs::write(
        &jsonl,
        "{\"id\": 1, \"body\": \"alpha\"}\n{\"body\": \"\"}\n{\"body\": \"beta gamma\"}\n",
    )
    .unwrap();
    let want = json_lines(&run(&["embed", "--model", m, "alpha", "", "beta gamma"], b"").stdout);
    assert_eq!(want.len(), 3);

    let out_jsonl = dir.join("out.jsonl");
    let r = run(
        &[
            "embed",
            "--model",
            m,
            "--input",
            txt.to_str().unwrap(),
            "--output",
            out_jsonl.to_str().unwrap(),
        ],
        b"",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(json_lines(&std::fs::read(&out_jsonl).unwrap()), want);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("embedded 3 texts") && err.contains("texts/s"),
        "summary line: {err}"
    );

    let r = run(
        &[
            "embed",
            "--model",
            m,
            "--input",
            jsonl.to_str().unwrap(),
            "--field",
            "body",
        ],
        b"",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(json_lines(&r.stdout), want);

    let r = run(
        &["embed", "--model", m, "--input", jsonl.to_str().unwrap()],
        b"",
    );
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("line 1: no field `text`"));

    let bad = dir.join("out.csv");
    let r = run(
        &[
            "embed",
            "--model",
            m,
            "--output",
            bad.to_str().unwrap(),
            "x",
        ],
        b"",
    );
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains(".npy or .jsonl"));
}

#[test]
fn an_input_error_keeps_what_was_embedded_before_it() {
    let m = tiny_model();
    let dir = temp_dir("partial");
    let out = dir.join("out.npy");
    let r = run(
        &[
            "embed",
            "--model",
            m.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        b"one\ntwo\nthree \xff\n",
    );
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("line 3"));
    let bytes = std::fs::read(&out).unwrap();
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains(&format!("'shape': (2, {TINY_HIDDEN})")),
        "{header}"
    );
    assert_eq!(bytes.len(), 10 + hlen + 2 * TINY_HIDDEN * 4);
}

#[test]
fn bench_corpus_and_info_json() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    let corpus_dir = temp_dir("corpus");
    let corpus = corpus_dir.join("c.txt");
    std::fs::write(
        &corpus,
        "a short one\na somewhat longer text than the first\n\nx\n",
    )
    .unwrap();
    let r = run(
        &[
            "bench",
            "--model",
            m,
            "--corpus",
            corpus.to_str().unwrap(),
            "--iters",
            "2",
            "--json",
        ],
        b"",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["texts"], 4);
    for key in ["texts_per_s", "peak_rss_mb", "rss_after_load_mb", "tokens"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    let r = run(&["info", "--model", m, "--json"], b"");
    assert!(r.status.success());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["precisions"][0], "f32");
    let r = run(&["bench", "--model", m, "--precision", "int4"], b"");
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("'int4'") && err.contains("--precision"),
        "{err}"
    );
}

/// `e5embed` with its cache directory at `cache` (`XDG_CACHE_HOME`).
fn run_cached(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    bin()
        .args(args)
        .env("XDG_CACHE_HOME", cache)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn tune_writes_the_cache_that_info_reads_and_a_corrupt_cache_is_a_warning() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    let cache = temp_dir("cli-tune-cache");
    let file = cache.join("e5embed").join(e5embed::tune::CACHE_FILE);
    // First load: measured and saved.
    let out = run_cached(&["info", "--model", m], &cache);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("measured at this load"), "{text}");
    assert!(file.is_file());
    // Second load: read from the cache.
    let out = run_cached(&["info", "--model", m, "--json"], &cache);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tuning"]["source"], "cached");
    // `tune` measures again and rewrites the file.
    let before = std::fs::read(&file).unwrap();
    let out = run_cached(&["tune", "--model", m], &cache);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("auto ") && text.contains("saved "), "{text}");
    assert_ne!(
        std::fs::read(&file).unwrap(),
        before,
        "tune rewrites the cache"
    );
    // A corrupt file: a warning, a new measurement, and the load succeeds.
    std::fs::write(&file, b"{\"machine\": [1, 2").unwrap();
    let out = run_cached(&["embed", "--model", m, "hello"], &cache);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("unreadable"),
        "{err}"
    );
    assert_eq!(json_lines(&out.stdout).len(), 1);
    let out = run_cached(&["info", "--model", m, "--json"], &cache);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["tuning"]["source"], "cached",
        "the file was rewritten whole"
    );
    // --no-tune and a forced --isa bypass it.
    let out = run_cached(&["info", "--model", m, "--json", "--isa", "scalar"], &cache);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["tuning"].is_null());
    assert_eq!(v["precision"], "f32");
}

#[test]
fn precision_and_isa_choices_are_reported_or_refused_clearly() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    // auto: the choice and its reason are printed by info.
    let out = run(&["info", "--model", m, "--json"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The measured choice (f32 or bf16, whichever measured faster here).
    assert_eq!(info["precision"], info["tuning"]["measured"]["auto"]);
    assert!(info["precision_reason"]
        .as_str()
        .unwrap()
        .starts_with("auto: "));
    // No tuning: f32, by the fixed rule.
    let out = run(&["info", "--model", m, "--json", "--no-tune"], b"");
    let fixed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fixed["precision"], "f32");
    assert!(fixed["tuning"].is_null());
    assert!(info["amx"].as_str().unwrap().contains("AMX"));
    assert_eq!(
        info["precisions"],
        serde_json::json!(["f32", "int8", "bf16"])
    );
    // bf16 requested: runs, and says so.
    let out = run(
        &["info", "--model", m, "--precision", "bf16", "--json"],
        b"",
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["precision"], "bf16");
    assert_eq!(info["precision_reason"], "requested");
    let out = run(
        &["embed", "--model", m, "--precision", "bf16", "hello"],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_lines(&out.stdout).len(), 1);
    // Unknown precision and the AMX path: clear errors, no panic.
    let out = run(&["embed", "--model", m, "--precision", "fp8", "hello"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("f32, int8, bf16"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = run(&["embed", "--model", m, "--isa", "amx", "hello"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("AMX"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn outputs_are_renamed_into_place_and_knobs_over_their_limits_are_clear_errors() {
    let m = tiny_model();
    let m = m.to_str().unwrap();
    let dir = temp_dir("cli-out");
    let out = dir.join("x.jsonl");
    std::fs::write(&out, "old contents\n").unwrap();
    let r = run(
        &[
            "embed",
            "--model",
            m,
            "--output",
            out.to_str().unwrap(),
            "a",
            "b",
        ],
        b"",
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(json_lines(&std::fs::read(&out).unwrap()).len(), 2);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["x.jsonl"], "a temporary file was left behind");
    // --prompt-name query is --query.
    let a = run(&["embed", "--model", m, "--query", "x"], b"");
    let b = run(&["embed", "--model", m, "--prompt-name", "query", "x"], b"");
    assert!(a.status.success() && a.stdout == b.stdout);
    for (args, want) in [
        (vec!["--threads", "100000"], "limit of 1024"),
        (vec!["--max-batch-tokens", "100000000000"], "limit of 65536"),
        (vec!["--isa", "avx1024"], "possible values"),
        (vec!["--prompt-name", "nope"], "unknown prompt name"),
    ] {
        let mut full = vec!["embed", "--model", m];
        full.extend(&args);
        full.push("x");
        let r = run(&full, b"");
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let r = run(
        &["bench", "--model", m, "--batch", "100000000", "--seq", "60"],
        b"",
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("limit"), "{err}");
}

/// A `tokenizer.json` on which the `tokenizers` crate panics (its template names `[CLS]`,
/// its special-token map has it under another key: found by the `tokenizer_json` fuzz
/// target) is a one-line error, exit 1, with no panic message before it: the engine catches
/// the crate's panic and the CLI's hook keeps the caught one quiet.
#[test]
fn a_tokenizer_the_library_panics_on_is_a_clean_error() {
    let m = tiny_model();
    let path = m.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let specials = json["post_processor"]["special_tokens"]
        .as_object_mut()
        .expect("the test tokenizer has a TemplateProcessing post-processor");
    let cls = specials.remove("[CLS]").unwrap();
    specials.insert("CLR".into(), cls);
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let out = run(&["embed", "--model", m.to_str().unwrap(), "hello"], b"");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(
        err.starts_with("error: tokenizer ") && err.contains("cannot tokenize the empty text"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
