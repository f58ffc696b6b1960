//! Shared test helpers: locating the fetched test models and the ONNX Runtime fixtures, and
//! writing tiny synthetic model directories for error-path tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

/// The directory of a fetched test model; fails with the command to run when it is missing.
pub fn model_dir(name: &str) -> PathBuf {
    let dir = e5embed::models_dir().join(name);
    assert!(
        dir.join("model.safetensors").is_file(),
        "test model `{name}` is missing at {}: run `tools/fetch-models` first",
        dir.display()
    );
    dir
}

// ---- Switches for runs under emulation (test side only) ----
//
// tools/test-aarch64 runs these tests under qemu-user, where one pass of the model over the
// fixture texts costs minutes (about 50x native, the scalar kernels several times more). Two
// environment variables, read here and **never by the library**, make that run feasible; unset
// (every native run) nothing changes. A test that skips or trims anything because of them
// prints it on stderr with `***` ([`loud`]: shown even when the harness captures output).
//
// - `E5EMBED_TEST_SKIP_SCALAR=1`: a test that loops over the kernel paths of a family skips the
//   scalar path where the CPU has another one of that family (the scalar kernels are held to
//   their references, and the SIMD ones to them, by the kernels crate's tests; natively every
//   path runs here too).
// - `E5EMBED_TEST_TEXTS=subset`: the tests over the fixture texts take 9 of the 31: the first
//   8 (plain, query, passage, empty, a word, accents, CJK, emoji) and the longest (truncated
//   at max_seq_length on both models). `all` or unset: every text.
// - `E5EMBED_TEST_RUNNER="qemu-aarch64 -cpu ..."`: the emulator these tests run under. The CLI
//   tests run the e5embed binary through it (a process under qemu-user cannot exec a foreign
//   binary without binfmt_misc), and the two resident-memory tests skip (the RSS is the
//   emulator's, translated code included, and their 100k-250k tokens take hours emulated).

/// `E5EMBED_TEST_SKIP_SCALAR` (see above).
pub const SKIP_SCALAR_ENV: &str = "E5EMBED_TEST_SKIP_SCALAR";
/// `E5EMBED_TEST_TEXTS` (see above).
pub const TEXTS_ENV: &str = "E5EMBED_TEST_TEXTS";

/// `E5EMBED_TEST_RUNNER` (see above).
pub const RUNNER_ENV: &str = "E5EMBED_TEST_RUNNER";

/// Says what a test skipped, straight to the process's stderr: not through `eprintln!`, which
/// the test harness captures and shows only for a failing test.
pub fn loud(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "*** {msg}");
}

/// The emulator command these tests run under (`E5EMBED_TEST_RUNNER`), if any.
pub fn runner() -> Option<String> {
    std::env::var(RUNNER_ENV)
        .ok()
        .filter(|r| !r.trim().is_empty())
}

/// Whether `test` skips itself under emulation (`E5EMBED_TEST_RUNNER` set): says so and why on
/// stderr.
pub fn skip_under_emulation(test: &str, why: &str) -> bool {
    match runner() {
        Some(r) => {
            loud(&format!(
                "{test}: SKIPPED under emulation ({RUNNER_ENV}={r:?}): {why}"
            ));
            true
        }
        None => false,
    }
}

fn skip_scalar() -> bool {
    match std::env::var(SKIP_SCALAR_ENV).as_deref() {
        Err(_) | Ok("") | Ok("0") => false,
        Ok("1") => true,
        Ok(v) => panic!("{SKIP_SCALAR_ENV}={v}: use 1 (skip) or 0"),
    }
}

pub fn texts_subset() -> bool {
    match std::env::var(TEXTS_ENV).as_deref() {
        Err(_) | Ok("") | Ok("all") => false,
        Ok("subset") => true,
        Ok(v) => panic!("{TEXTS_ENV}={v}: use subset or all"),
    }
}

/// The paths of one kernel family that `test` loops over: every path this CPU has, or with
/// `E5EMBED_TEST_SKIP_SCALAR=1` all but the scalar one when another exists (said on stderr).
pub fn paths<F: e5embed_kernels::isa::Family>(
    test: &str,
    available: Vec<e5embed_kernels::isa::Path<F>>,
) -> Vec<e5embed_kernels::isa::Path<F>> {
    if !skip_scalar() {
        return available;
    }
    let rest: Vec<_> = available
        .iter()
        .copied()
        .filter(|p| p.kind() != F::SCALAR)
        .collect();
    if rest.is_empty() || rest.len() == available.len() {
        return available;
    }
    let names: Vec<&str> = rest.iter().map(|p| p.name()).collect();
    loud(&format!(
        "{test}: SKIPPED the scalar {} path ({SKIP_SCALAR_ENV}=1, set by tools/test-aarch64 \
         under emulation; the scalar kernels are tested against their references in the kernels \
         crate); running {names:?}",
        F::TOKEN
    ));
    rest
}

/// The indices of the fixture texts `test` runs on: all, or with `E5EMBED_TEST_TEXTS=subset`
/// the first 8 and the longest (said on stderr).
pub fn text_indices(test: &str, texts: &[String]) -> Vec<usize> {
    if !texts_subset() || texts.len() <= 9 {
        return (0..texts.len()).collect();
    }
    let (idx, longest) = subset_indices(texts);
    loud(&format!(
        "{test}: {} of the {} fixture texts ({TEXTS_ENV}=subset, set by tools/test-aarch64 \
         under emulation: the first 8 and the longest, text {longest}); SKIPPED the other {}",
        idx.len(),
        texts.len(),
        texts.len() - idx.len()
    ));
    idx
}

/// The 9-text subset: the first 8 fixture texts and the longest (which the model truncates),
/// and the longest's index.
pub fn subset_indices(texts: &[String]) -> (Vec<usize>, usize) {
    let longest = (0..texts.len()).max_by_key(|&i| texts[i].len()).unwrap();
    let mut idx: Vec<usize> = (0..texts.len().min(8)).collect();
    if !idx.contains(&longest) {
        idx.push(longest);
    }
    (idx, longest)
}

/// The 9-text subset of the fixture texts (the first 8 and the longest), for tests whose
/// property does not depend on the texts (a cache's bitwise equality, say) and that run
/// the forward many times: the same subset `E5EMBED_TEST_TEXTS=subset` selects.
pub fn subset_texts() -> Vec<String> {
    let all = read_texts();
    subset_indices(&all)
        .0
        .into_iter()
        .map(|i| all[i].clone())
        .collect()
}

/// The fixture texts (tests/fixtures/texts.json) `test` runs on ([`text_indices`]).
pub fn fixture_texts(test: &str) -> Vec<String> {
    let all = read_texts();
    text_indices(test, &all)
        .into_iter()
        .map(|i| all[i].clone())
        .collect()
}

fn read_texts() -> Vec<String> {
    let texts_json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixtures_dir("").join("texts.json")).expect("tests/fixtures/texts.json"),
    )
    .unwrap();
    texts_json
        .get("texts")
        .unwrap_or(&texts_json)
        .as_array()
        .expect("texts.json: a list of texts (or {\"texts\": [...]})")
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

pub fn fixtures_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One model's ONNX Runtime reference outputs (tests/fixtures/<model>/).
pub struct Fixture {
    pub meta: serde_json::Value,
    pub texts: Vec<String>,
    pub input_ids: Vec<Vec<u32>>,
    pub last_hidden: Vec<Vec<f32>>,
    pub embedding: Vec<Vec<f32>>,
    pub truncated: Vec<bool>,
}

pub fn load_fixture(name: &str) -> Fixture {
    let dir = fixtures_dir(name);
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("meta.json"))
            .unwrap_or_else(|e| panic!("{}: {e}: run tools/make-reference", dir.display())),
    )
    .unwrap();
    let texts = read_texts();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let n = texts.len();
    let mut fx = Fixture {
        meta,
        texts,
        input_ids: Vec::new(),
        last_hidden: Vec::new(),
        embedding: Vec::new(),
        truncated: Vec::new(),
    };
    for i in 0..n {
        let ids = st.tensor(&format!("input_ids.{i}")).unwrap();
        assert_eq!(ids.dtype(), Dtype::I64);
        fx.input_ids.push(
            ids.data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32)
                .collect(),
        );
        fx.last_hidden
            .push(f32s(&st.tensor(&format!("last_hidden.{i}")).unwrap()));
        fx.embedding
            .push(f32s(&st.tensor(&format!("embedding.{i}")).unwrap()));
        let tr = st
            .tensor(&format!("truncated.{i}"))
            .map(|t| t.data().iter().any(|&b| b != 0))
            .unwrap_or(false);
        fx.truncated.push(tr);
    }
    fx
}

impl Fixture {
    /// The fixture restricted to the texts `test` runs on ([`text_indices`]).
    pub fn for_test(self, test: &str) -> Fixture {
        let idx = text_indices(test, &self.texts);
        if idx.len() == self.texts.len() {
            return self;
        }
        let pick =
            |v: &[Vec<f32>]| -> Vec<Vec<f32>> { idx.iter().map(|&i| v[i].clone()).collect() };
        Fixture {
            texts: idx.iter().map(|&i| self.texts[i].clone()).collect(),
            input_ids: idx.iter().map(|&i| self.input_ids[i].clone()).collect(),
            last_hidden: pick(&self.last_hidden),
            embedding: pick(&self.embedding),
            truncated: idx.iter().map(|&i| self.truncated[i]).collect(),
            meta: self.meta,
        }
    }
}

fn f32s(t: &TensorView<'_>) -> Vec<f32> {
    assert_eq!(t.dtype(), Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// A tiny BERT (hidden 64, 2 heads of 32, intermediate 128, 2 layers, the MiniLM vocabulary)
/// with seeded random weights: tensor name -> (shape, values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub const TINY_HIDDEN: usize = 64;

pub fn tiny_config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": TINY_HIDDEN, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 128, "max_position_embeddings": 64, "type_vocab_size": 2,
        "vocab_size": 30522, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"
    })
}

pub fn tiny_tensors(seed: u64) -> Tensors {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 / (1u64 << 53) as f64) as f32 * 2.0 - 1.0
    };
    let (h, i, v, p, layers) = (TINY_HIDDEN, 128, 30522, 64, 2);
    let mut t = Tensors::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let vals = (0..n).map(|_| offset + scale * rnd()).collect();
        t.insert(name, (shape, vals));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![v, h],
        0.5,
        0.0,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![p, h],
        0.5,
        0.0,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, h],
        0.5,
        0.0,
    );
    add("embeddings.LayerNorm.weight".into(), vec![h], 0.1, 1.0);
    add("embeddings.LayerNorm.bias".into(), vec![h], 0.1, 0.0);
    for l in 0..layers {
        let p = format!("encoder.layer.{l}.");
        for m in ["query", "key", "value"] {
            add(
                format!("{p}attention.self.{m}.weight"),
                vec![h, h],
                0.2,
                0.0,
            );
            add(format!("{p}attention.self.{m}.bias"), vec![h], 0.1, 0.0);
        }
        add(
            format!("{p}attention.output.dense.weight"),
            vec![h, h],
            0.2,
            0.0,
        );
        add(format!("{p}attention.output.dense.bias"), vec![h], 0.1, 0.0);
        add(
            format!("{p}attention.output.LayerNorm.weight"),
            vec![h],
            0.1,
            1.0,
        );
        add(
            format!("{p}attention.output.LayerNorm.bias"),
            vec![h],
            0.1,
            0.0,
        );
        add(
            format!("{p}intermediate.dense.weight"),
            vec![i, h],
            0.2,
            0.0,
        );
        add(format!("{p}intermediate.dense.bias"), vec![i], 0.1, 0.0);
        add(format!("{p}output.dense.weight"), vec![h, i], 0.2, 0.0);
        add(format!("{p}output.dense.bias"), vec![h], 0.1, 0.0);
        add(format!("{p}output.LayerNorm.weight"), vec![h], 0.1, 1.0);
        add(format!("{p}output.LayerNorm.bias"), vec![h], 0.1, 0.0);
    }
    t
}

/// Serializes tensors to safetensors bytes in the given dtype (F32, F16 or BF16).
pub fn safetensors_bytes(t: &Tensors, dtype: Dtype, prefix: &str) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = t
        .iter()
        .map(|(name, (shape, vals))| {
            let bytes: Vec<u8> = match dtype {
                Dtype::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Dtype::F16 => vals
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
                Dtype::BF16 => vals
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
                other => panic!("unsupported test dtype {other:?}"),
            };
            (format!("{prefix}{name}"), shape.clone(), bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, &None).unwrap()
}

/// A fresh temporary directory (`e5embed-test-<tag>-XXXXXX` in the system's temporary
/// directory), removed with everything in it when the guard is dropped, so test runs do not
/// leave model copies behind (they did: ~1.8 GB after a few runs). Derefs to its `Path`; keep
/// the guard alive for as long as the directory is used.
pub struct TempDir(tempfile::TempDir);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    TempDir(
        tempfile::Builder::new()
            .prefix(&format!("e5embed-test-{tag}-"))
            .tempdir()
            .unwrap(),
    )
}

/// Writes a complete tiny model directory (config, weights, MiniLM tokenizer).
pub fn write_tiny_model(dir: &Path, tensors: &Tensors, dtype: Dtype) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), tiny_config().to_string()).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        safetensors_bytes(tensors, dtype, ""),
    )
    .unwrap();
    std::fs::copy(
        model_dir("all-MiniLM-L6-v2").join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
}
