//! int8 precision: accuracy against f32 on the fixture texts for every int8 path, a saved
//! quantized model gives bitwise the results of quantizing at load, and int8 keeps the
//! batch invariance of f32. (Under emulation tools/test-aarch64 may skip the scalar path and
//! take a subset of the texts: `tests/common`, said on stderr.)

mod common;

use common::*;
use e5embed::{pool::cosine, Embedder, EmbedderOptions, Precision};
use e5embed_kernels::qgemm::{QIsa, QIsaKind};

/// Budgets for int8 vs f32 embeddings on the fixture texts (the worst of both test models).
/// Measured with the defaults: VNNI and scalar (all four GEMMs int8, SmoothQuant on the QKV
/// and FFN-up inputs, unsigned GELU input of the FFN down projection) all-MiniLM-L6-v2 mean
/// 0.99887 min 0.99469; the AVX2 7-bit path (QKV f32, no smoothing, unsigned down input)
/// mean 0.99702 min 0.98810. Issue #5's target (mean >= 0.999, min >= 0.99 on
/// all-MiniLM-L6-v2) is measured on 3,000 sentences by tools/accuracy (README "int8").
const INT8_MEAN_COSINE: f64 = 0.9985;
const INT8_MIN_COSINE: f64 = 0.994;
/// The AVX2 path (7-bit weights).
const INT8_AVX2_MEAN_COSINE: f64 = 0.9965;
const INT8_AVX2_MIN_COSINE: f64 = 0.987;

fn texts(test: &str) -> Vec<String> {
    load_fixture("all-MiniLM-L6-v2").for_test(test).texts
}

fn load_f32(dir: &std::path::Path) -> Embedder {
    Embedder::load_with(dir, &EmbedderOptions::default().precision(Precision::F32)).unwrap()
}

fn load(dir: &std::path::Path, precision: Precision, qisa: QIsa) -> Embedder {
    let opts = EmbedderOptions::default()
        .precision(precision)
        .qisa(qisa.kind());
    Embedder::load_with(dir, &opts).unwrap()
}

#[test]
fn int8_is_close_to_f32_on_every_path() {
    const TEST: &str = "int8_is_close_to_f32_on_every_path";
    let texts = texts(TEST);
    let mut failures = Vec::new();
    for name in ["all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"] {
        let dir = model_dir(name);
        // f32 explicitly: the default precision is `auto` (bf16 where the tuning measured it faster).
        let f32_vecs = load_f32(&dir).embed(&texts).unwrap().vectors;
        for qisa in paths(TEST, QIsa::available()) {
            let e = load(&dir, Precision::Int8, qisa);
            assert_eq!(e.precision(), Precision::Int8);
            let v = e.embed(&texts).unwrap().vectors;
            let cos: Vec<f64> = v.iter().zip(&f32_vecs).map(|(a, b)| cosine(a, b)).collect();
            let mean = cos.iter().sum::<f64>() / cos.len() as f64;
            let min = cos.iter().cloned().fold(1.0, f64::min);
            eprintln!(
                "{name} int8 {}: cosine to f32 mean {mean:.6} min {min:.6}",
                qisa.name()
            );
            let (mean_budget, min_budget) = if qisa.kind() == QIsaKind::Avx2 {
                (INT8_AVX2_MEAN_COSINE, INT8_AVX2_MIN_COSINE)
            } else {
                (INT8_MEAN_COSINE, INT8_MIN_COSINE)
            };
            if mean < mean_budget || min < min_budget {
                failures.push(format!("{name} {}: mean {mean} min {min}", qisa.name()));
            }
        }
    }
    assert!(failures.is_empty(), "int8 below budget: {failures:?}");
}

#[test]
fn saved_quantized_model_is_bitwise_equal_to_quantizing_at_load() {
    const TEST: &str = "saved_quantized_model_is_bitwise_equal_to_quantizing_at_load";
    let texts = texts(TEST);
    let dir = model_dir("all-MiniLM-L6-v2");
    for qisa in paths(TEST, QIsa::available()) {
        let out = temp_dir(&format!("quant-{}", qisa.name()));
        let report = e5embed::quantize::save_quantized(&dir, &out, qisa).unwrap();
        // Defaults: all four GEMMs int8 (Q, K, V saved apart), QKV f32 on the AVX2 path.
        let expected = if qisa.kind() == QIsaKind::Avx2 {
            6 * 3
        } else {
            6 * 6
        };
        assert_eq!(report.linear_tensors, expected, "{}", qisa.name());
        assert!(report.bytes_after < report.bytes_before);
        let at_load = load(&dir, Precision::Int8, qisa).embed(&texts).unwrap();
        // Precision defaults to int8 for a quantized directory.
        let opts = EmbedderOptions::default().qisa(qisa.kind());
        let saved = Embedder::load_with(&out, &opts).unwrap();
        assert_eq!(saved.precision(), Precision::Int8);
        assert_eq!(saved.embed(&texts).unwrap(), at_load, "{}", qisa.name());
        // At f32 precision the saved model's weights are dequantized and un-smoothed
        // (divided by the stored SmoothQuant factors): close to the original f32 model.
        let opts = EmbedderOptions::default().precision(Precision::F32);
        let f32_saved = Embedder::load_with(&out, &opts)
            .unwrap()
            .embed(&texts)
            .unwrap();
        let f32_orig = load_f32(&dir).embed(&texts).unwrap();
        // (Weight quantization alone: min 0.9970 over the fixture texts on VNNI, 0.9916 on the
        // 7-bit AVX2 path; without the division by the factors the outlier channels would be
        // scaled by powers of two up to 2^20.)
        let min = f32_saved
            .vectors
            .iter()
            .zip(&f32_orig.vectors)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0, f64::min);
        eprintln!(
            "{}: saved model at f32 precision: min cosine {min:.6}",
            qisa.name()
        );
        assert!(
            min > 0.99,
            "{}: saved model at f32: min cosine {min}",
            qisa.name()
        );
    }
}

#[test]
fn int8_is_batch_invariant() {
    let texts = texts("int8_is_batch_invariant");
    let dir = model_dir("all-MiniLM-L6-v2");
    let qisa = QIsa::best();
    let one = Embedder::load_with(
        &dir,
        // The same int8 path as `two`.
        &EmbedderOptions::default()
            .precision(Precision::Int8)
            .threads(1)
            .qisa(qisa.kind()),
    )
    .unwrap();
    let two = load(&dir, Precision::Int8, qisa);
    let all = two.embed(&texts).unwrap();
    for (i, t) in texts.iter().enumerate() {
        assert!(
            one.embed(&[t]).unwrap().vectors[0] == all.vectors[i],
            "text {i}"
        );
    }
}

/// The int8 calibration cache (`smooth::calibrate_cached`): computed once and written, read
/// back bitwise, a corrupt or mismatching file is a warning and a new calibration, a model
/// file with another modification time is another key; and an embedder loaded through the
/// cache gives bitwise the vectors of one without it.
#[test]
fn calibration_cache_round_trip_corrupt_and_stale() {
    use e5embed::internals::model::smooth::{
        calibrate, calibrate_cached, CalibrationSource, CALIBRATION_DIR,
    };
    use e5embed::internals::weights::BertWeights;
    use e5embed::Int8Recipe;
    let dir = temp_dir("calib-model");
    write_tiny_model(&dir, &tiny_tensors(11), safetensors::tensor::Dtype::F32);
    let config = e5embed::ModelConfig::from_dir(&dir).unwrap();
    let tok = e5embed::tokenize::TextTokenizer::from_file(
        &dir.join("tokenizer.json"),
        config.max_seq_length,
    )
    .unwrap();
    let qisa = QIsa::best();
    let recipe = Int8Recipe::default_for(qisa);
    let cache = temp_dir("calib-cache");
    let load = || BertWeights::load(&dir, &config.bert).unwrap();
    let factors =
        |w: &BertWeights| -> Vec<_> { w.layers.iter().map(|l| l.smooth.clone()).collect() };
    let run = |w: &mut BertWeights| {
        let mut warnings = Vec::new();
        let s =
            calibrate_cached(w, &tok, qisa, &recipe, Some((&cache, &dir)), &mut warnings).unwrap();
        (s, warnings)
    };
    let mut plain = load();
    calibrate(&mut plain, &tok, qisa, &recipe).unwrap();
    let expected = factors(&plain);
    if recipe.smoothed.is_empty() {
        return; // the AVX2 int8 path smooths nothing: no calibration to cache
    }
    assert!(expected.iter().any(|l| l.iter().any(|s| s.is_some())));
    let mut a = load();
    assert_eq!(run(&mut a), (CalibrationSource::Computed, vec![]));
    assert_eq!(factors(&a), expected);
    let mut b = load();
    assert_eq!(run(&mut b), (CalibrationSource::Cached, vec![]));
    assert_eq!(
        factors(&b),
        expected,
        "cached factors are bitwise the computed ones"
    );
    let files: Vec<_> = std::fs::read_dir(cache.join(CALIBRATION_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let good = std::fs::read(file).unwrap();
    // Corrupt: a warning, computed again, the file rewritten whole.
    std::fs::write(file, b"{\"key\": nul").unwrap();
    let mut c = load();
    let (src, warnings) = run(&mut c);
    assert_eq!(src, CalibrationSource::Computed);
    assert!(
        warnings.iter().any(|w| w.contains("unreadable")),
        "{warnings:?}"
    );
    assert_eq!(factors(&c), expected);
    assert_eq!(run(&mut load()).0, CalibrationSource::Cached);
    // Factors of the wrong length under the right key: a warning, computed again.
    let mut v: serde_json::Value = serde_json::from_slice(&good).unwrap();
    v["factors"][0]["bits"].as_array_mut().unwrap().pop();
    std::fs::write(file, serde_json::to_vec(&v).unwrap()).unwrap();
    let (src, warnings) = run(&mut load());
    assert_eq!(src, CalibrationSource::Computed);
    assert!(
        warnings.iter().any(|w| w.contains("does not fit")),
        "{warnings:?}"
    );
    // The model file changed (another modification time): another key, computed again.
    let st = std::fs::File::options()
        .append(true)
        .open(dir.join("model.safetensors"))
        .unwrap();
    st.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(st);
    assert_eq!(run(&mut load()).0, CalibrationSource::Computed);
    assert_eq!(run(&mut load()).0, CalibrationSource::Cached);
    // Through the embedder: the same vectors with and without the cache.
    let texts = ["hello world", "a longer text about calibration caches"];
    let with = |cache_dir: Option<std::path::PathBuf>| {
        let mut o = EmbedderOptions::default()
            .precision(Precision::Int8)
            .qisa(qisa.kind());
        o.cache_dir = cache_dir;
        let e = Embedder::load_with(&dir, &o).unwrap();
        e.embed(&texts).unwrap().vectors
    };
    let cached = with(Some(cache.to_path_buf()));
    let fresh_cache = temp_dir("calib-cache-2");
    let fresh = with(Some(fresh_cache.to_path_buf()));
    assert_eq!(cached, fresh);
}
