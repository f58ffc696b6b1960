//! Batch invariance and determinism: a text's embedding is bitwise identical whether it is
//! embedded alone, in any batch, at any position, under any token budget, with 1 or 2
//! threads, on every ISA path; and results come back in input order. (Under emulation
//! tools/test-aarch64 may skip the scalar path and take a subset of the texts: `tests/common`.)

mod common;

use common::*;
use e5embed::{Embedder, EmbedderOptions, Isa};

fn load(isa: Isa, threads: usize, budget: Option<usize>) -> Embedder {
    let mut opts = EmbedderOptions::default().isa(isa.kind()).threads(threads);
    opts.max_batch_tokens = budget;
    Embedder::load_with(model_dir("all-MiniLM-L6-v2"), &opts).unwrap()
}

#[test]
fn embeddings_are_bitwise_batch_invariant() {
    const TEST: &str = "embeddings_are_bitwise_batch_invariant";
    let texts = fixture_texts(TEST);
    for isa in paths(TEST, Isa::available()) {
        let e1 = load(isa, 1, None);
        // Each text alone, one thread: the ground truth.
        let alone: Vec<Vec<f32>> = texts
            .iter()
            .map(|t| e1.embed(&[t]).unwrap().vectors.remove(0))
            .collect();
        // All together, 1 and 2 threads, default and tiny token budgets.
        for (threads, budget) in [(1, None), (2, None), (2, Some(256)), (1, Some(300))] {
            let e = load(isa, threads, budget);
            let all = e.embed(&texts).unwrap();
            for (i, v) in all.vectors.iter().enumerate() {
                assert!(
                    v == &alone[i],
                    "{} threads {threads} budget {budget:?}: text {i} differs from its embedding alone",
                    isa.name()
                );
            }
        }
        // Each text alone on 2 threads (skinny column split, attention head split).
        let e2 = load(isa, 2, None);
        for (i, t) in texts.iter().enumerate() {
            assert!(
                e2.embed(&[t]).unwrap().vectors[0] == alone[i],
                "{}: text {i} alone on 2 threads",
                isa.name()
            );
        }
        // Reversed and rotated orders: results follow the input order, bit for bit.
        let mut rev = texts.clone();
        rev.reverse();
        let out = e2.embed(&rev).unwrap();
        for (i, v) in out.vectors.iter().enumerate() {
            assert!(
                v == &alone[texts.len() - 1 - i],
                "{}: reversed position {i}",
                isa.name()
            );
        }
        let rotated: Vec<&String> = texts.iter().cycle().skip(7).take(texts.len()).collect();
        let out = e2.embed(&rotated).unwrap();
        for (i, v) in out.vectors.iter().enumerate() {
            assert!(
                v == &alone[(i + 7) % texts.len()],
                "{}: rotated position {i}",
                isa.name()
            );
        }
        // Duplicates inside one batch get identical vectors (text 20 beside them, or the last
        // one where E5EMBED_TEST_TEXTS=subset leaves 9).
        let other = &texts[20.min(texts.len() - 1)];
        let dup = e2.embed(&[&texts[3], other, &texts[3]]).unwrap();
        assert!(dup.vectors[0] == dup.vectors[2] && dup.vectors[0] == alone[3]);
    }
}

#[test]
fn repeated_calls_are_deterministic() {
    let texts = fixture_texts("repeated_calls_are_deterministic");
    let e = load(Isa::best(), 2, None);
    let first = e.embed(&texts).unwrap();
    for _ in 0..3 {
        assert_eq!(e.embed(&texts).unwrap(), first);
    }
}

/// Options for the packed-weights cache tests: a cache directory of their own, the fixed
/// kernel choice (no measurement), 2 threads.
fn cache_opts(p: e5embed::Precision, cache: &std::path::Path) -> EmbedderOptions {
    EmbedderOptions::default()
        .precision(p)
        .threads(2)
        .tune(false)
        .cache_dir(cache.to_owned())
}

/// The vectors of the 9-text subset (the first 8 and the longest: the cache's bitwise
/// equality does not depend on the texts, and each precision runs 4 loads' forwards; bf16
/// is the scalar path on CPUs without AVX-512), and the last hidden states of the first three.
fn cache_outputs(e: &Embedder) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let texts = subset_texts();
    let ids = e.tokenize(&texts[..3]).unwrap();
    let seqs: Vec<&[u32]> = ids.iter().map(|t| t.ids.as_slice()).collect();
    (
        e.embed(&texts).unwrap().vectors,
        e.last_hidden_states(&seqs).unwrap(),
    )
}

/// The packed-weights cache (`model::packed_cache`): at f32, int8 and bf16 the first load
/// packs and writes the file, the next maps it, and both give bitwise the vectors (and last
/// hidden states) of a load with the cache off; the cache off writes nothing.
#[test]
fn packed_weights_cache_is_bitwise_the_packed_load_at_every_precision() {
    use e5embed::{Precision, WeightSource};
    let dir = model_dir("all-MiniLM-L6-v2");
    let cache = temp_dir("packed-cache");
    for p in Precision::ALL {
        let off = Embedder::load_with(&dir, &cache_opts(p, &cache).weight_cache(false)).unwrap();
        assert_eq!(off.weight_source(), &WeightSource::Packed { saved: None });
        let want = cache_outputs(&off);
        drop(off);
        let files = std::fs::read_dir(cache.join("packed")).map_or(0, |d| d.count());
        assert_eq!(files, 0, "{p}: the cache off wrote a file");
        let first = Embedder::load_with(&dir, &cache_opts(p, &cache)).unwrap();
        let WeightSource::Packed { saved: Some(file) } = first.weight_source().clone() else {
            panic!(
                "{p}: the first load did not write the cache: {:?}",
                first.weight_source()
            );
        };
        assert!(
            cache_outputs(&first) == want,
            "{p}: the load that wrote the cache"
        );
        drop(first);
        let cached = Embedder::load_with(&dir, &cache_opts(p, &cache)).unwrap();
        assert_eq!(
            cached.weight_source(),
            &WeightSource::Cache(file.clone()),
            "{p}"
        );
        assert!(cached.weight_cache_warnings().is_empty(), "{p}");
        assert_eq!(cached.gemm_kernel_name(), {
            let o = Embedder::load_with(&dir, &cache_opts(p, &cache).weight_cache(false));
            o.unwrap().gemm_kernel_name()
        });
        assert!(
            cache_outputs(&cached) == want,
            "{p}: a load from the packed-weights cache differs from packing at load"
        );
        std::fs::remove_file(&file).unwrap();
    }
}

/// A packed-weights file that is corrupt (a flipped byte: checksum), truncated, not ours (bad
/// magic, impossible header), or stale (the model's config.json changed) is a warning and a
/// new pack that rewrites it, never a panic or other vectors; the next load maps it again.
/// Written through a temporary name: a write that cannot be renamed into place is a warning,
/// leaves no file under either name, and the load still works.
#[test]
fn packed_weights_cache_corrupt_truncated_stale_files_are_rebuilt() {
    use e5embed::{Precision, WeightSource};
    let src = model_dir("all-MiniLM-L6-v2");
    // A copy of the model (its config.json's time is changed below).
    let dir = temp_dir("packed-model");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), dir.join(f.file_name())).unwrap();
        }
    }
    if src.join("1_Pooling").is_dir() {
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        for f in std::fs::read_dir(src.join("1_Pooling")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), dir.join("1_Pooling").join(f.file_name())).unwrap();
        }
    }
    let cache = temp_dir("packed-cache-bad");
    let p = Precision::Int8;
    let load = || Embedder::load_with(&dir, &cache_opts(p, &cache)).unwrap();
    let first = load();
    let WeightSource::Packed { saved: Some(file) } = first.weight_source().clone() else {
        panic!("not written: {:?}", first.weight_source());
    };
    let want = cache_outputs(&first);
    drop(first);
    let good = std::fs::read(&file).unwrap();
    // Each damage: one warning naming it, packed again (the file rewritten), same outputs;
    // then the file maps again.
    let check = |what: &str, expect: &str| {
        let e = load();
        assert_eq!(
            e.weight_source(),
            &WeightSource::Packed {
                saved: Some(file.clone())
            },
            "{what}"
        );
        let w = e.weight_cache_warnings();
        assert!(w.len() == 1 && w[0].contains(expect), "{what}: {w:?}");
        assert!(cache_outputs(&e) == want, "{what}: other outputs");
        drop(e);
        let again = load();
        assert_eq!(
            again.weight_source(),
            &WeightSource::Cache(file.clone()),
            "{what}"
        );
        assert!(again.weight_cache_warnings().is_empty(), "{what}");
        assert!(
            cache_outputs(&again) == want,
            "{what}: other outputs once rewritten"
        );
    };
    let mut flipped = good.clone();
    let at = flipped.len() * 2 / 3;
    flipped[at] ^= 0x10;
    std::fs::write(&file, &flipped).unwrap();
    check(
        "a flipped byte in the weights",
        "corrupt (checksum mismatch)",
    );
    std::fs::write(&file, &good[..good.len() - 4096]).unwrap();
    check("truncated", "truncated");
    std::fs::write(&file, &good[..20]).unwrap();
    check("cut inside the preamble", "not a packed-weights file");
    let mut magic = good.clone();
    magic[0] = b'X';
    std::fs::write(&file, &magic).unwrap();
    check("bad magic", "not a packed-weights file");
    let mut header = good.clone();
    header[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&file, &header).unwrap();
    check("an impossible header length", "truncated");
    let mut json = good.clone();
    json[24] = b'[';
    std::fs::write(&file, &json).unwrap();
    check("an unreadable header", "unreadable header");
    std::fs::write(&file, b"").unwrap();
    check("empty", "not a packed-weights file");
    // Stale: config.json rewritten (another modification time): the same entry, rebuilt.
    let config = std::fs::File::options()
        .append(true)
        .open(dir.join("config.json"))
        .unwrap();
    config
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(config);
    check("config.json changed", "stale");
    let names = |d: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&cache.join("packed")).len(),
        1,
        "one entry, replaced in place"
    );
    // A write that cannot be renamed into place (a directory holds the name): a warning, the
    // load works, no temporary file is left and nothing else appears under the name.
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir_all(file.join("blocker")).unwrap();
    let e = load();
    assert_eq!(e.weight_source(), &WeightSource::Packed { saved: None });
    let w = e.weight_cache_warnings();
    assert!(
        w.iter().any(|w| w.contains("could not be written")),
        "{w:?}"
    );
    assert!(cache_outputs(&e) == want);
    assert_eq!(
        names(&cache.join("packed")),
        vec![file.file_name().unwrap().to_string_lossy().into_owned()]
    );
    assert_eq!(names(&file), vec!["blocker".to_owned()]);
}

/// A forced kernel path (an experiment, as for tuning) and a model below
/// `packed_cache::MIN_MODEL_BYTES` leave the cache alone.
#[test]
fn packed_weights_cache_skips_forced_paths_and_tiny_models() {
    use e5embed::WeightSource;
    let cache = temp_dir("packed-cache-skip");
    let forced = cache_opts(e5embed::Precision::F32, &cache).isa(Isa::best().kind());
    let e = Embedder::load_with(model_dir("all-MiniLM-L6-v2"), &forced).unwrap();
    assert_eq!(e.weight_source(), &WeightSource::Packed { saved: None });
    let tiny = temp_dir("packed-tiny");
    write_tiny_model(&tiny, &tiny_tensors(5), safetensors::tensor::Dtype::F32);
    let e = Embedder::load_with(&tiny, &cache_opts(e5embed::Precision::F32, &cache)).unwrap();
    assert_eq!(e.weight_source(), &WeightSource::Packed { saved: None });
    assert!(!cache.join("packed").exists());
}

/// Options for every precision on every SIMD path this CPU has (not the scalar ones), named
/// "f32 avx2", "bf16 avx512bf16", ...
fn fast_paths() -> Vec<(String, EmbedderOptions)> {
    use e5embed::Precision;
    use e5embed_kernels::bgemm::BIsaKind;
    use e5embed_kernels::isa::{Family, IsaKind, Path};
    use e5embed_kernels::qgemm::QIsaKind;
    fn simd<F: Family>() -> impl Iterator<Item = Path<F>> {
        Path::<F>::available()
            .into_iter()
            .filter(|p| p.kind() != F::SCALAR)
    }
    let base = |p: Precision| EmbedderOptions::default().precision(p);
    let mut runs: Vec<(String, EmbedderOptions)> = Vec::new();
    runs.extend(simd::<IsaKind>().map(|i| {
        let o = base(Precision::F32).isa(i.kind());
        (format!("f32 {}", i.name()), o)
    }));
    runs.extend(simd::<BIsaKind>().map(|b| {
        let o = base(Precision::Bf16).bisa(b.kind());
        (format!("bf16 {}", b.name()), o)
    }));
    runs.extend(simd::<QIsaKind>().map(|q| {
        let o = base(Precision::Int8).qisa(q.kind());
        (format!("int8 {}", q.name()), o)
    }));
    runs
}

/// A long batch runs its layers group by group, one task per group of whole texts
/// (`forward::layer_groups`); a text alone (or a short batch) runs them op by op across the
/// pool. Both compute every row with the same kernels in the same order: each text's last
/// hidden state in the grouped batch is bitwise the one it has alone, at every precision, on
/// every path, on 1 and 2 threads. The lengths straddle the group size (128 rows) and the
/// FFN's passes of about 128 rows inside a group (groups of 200-300 rows run two), and the
/// last texts (60 tokens) join the group before them.
#[test]
fn grouped_layers_are_bitwise_the_op_by_op_forward() {
    use e5embed::internals::model::forward::layer_groups;
    const TEST: &str = "grouped_layers_are_bitwise_the_op_by_op_forward";
    // 1,602 tokens: 9 groups (8 needed on 2 threads).
    let lens: &[usize] = &[
        130, 7, 1, 200, 128, 60, 70, 3, 255, 129, 40, 90, 127, 2, 300, 60,
    ];
    let seqs: Vec<Vec<u32>> = {
        let mut s = 0x2545_f491_u32;
        lens.iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        1000 + (s >> 8) % 29_000
                    })
                    .collect()
            })
            .collect()
    };
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let groups = layer_groups(lens, 2).expect("grouped on 2 threads");
    assert_eq!(groups.len(), 9);
    assert_eq!((groups[1].clone(), groups[8].clone()), (1..4, 14..16));
    for threads in [1, 2] {
        assert!(
            layer_groups(lens, threads).is_some(),
            "grouped on {threads}"
        );
        for &n in lens {
            assert!(layer_groups(&[n], threads).is_none(), "{n} tokens alone");
        }
    }
    // Not the scalar paths (~50x slower: a 1,602-token forward there takes ~20 s); their
    // grouped forwards are the long batches of `embeddings_are_bitwise_batch_invariant`
    // (1,024-token forwards: 8 groups) and tests/bf16.rs's and tests/int8.rs's invariance.
    let runs = fast_paths();
    if runs.is_empty() {
        loud(&format!(
            "{TEST}: NOT RUN here: this CPU has only the scalar paths (see above for where \
             their grouped forwards are tested)"
        ));
        return;
    }
    let dir = model_dir("all-MiniLM-L6-v2");
    for (name, mut opts) in runs {
        opts.max_batch_tokens = Some(2048);
        for threads in [1, 2] {
            let e = Embedder::load_with(&dir, &opts.clone().threads(threads)).unwrap();
            let batch = e.last_hidden_states(&refs).unwrap();
            for (i, s) in refs.iter().enumerate() {
                let alone = e.last_hidden_states(&[s]).unwrap().remove(0);
                assert!(
                    batch[i] == alone,
                    "{name}, {threads} thread(s): text {i} ({} tokens) in the grouped batch \
                     differs from its op-by-op forward alone",
                    s.len()
                );
            }
        }
    }
}

/// A long text on several threads runs each layer's output projection, FFN and LayerNorms by
/// row shares, one task per share (`forward::layer_rows`: 4 parallel regions per layer
/// instead of 7), once it is longer than every GEMM's column-split limit. Its last hidden
/// state must be bitwise the one-thread op-by-op forward's, at every precision and on every
/// path; the lengths straddle the limits (32 rows bf16 and int8, 96 f32) and split into
/// uneven shares (97, 301 rows), and 8 texts of 64 go together (512 rows: 4 tasks).
#[test]
fn row_share_layers_are_bitwise_the_op_by_op_forward() {
    const TEST: &str = "row_share_layers_are_bitwise_the_op_by_op_forward";
    let lens: &[usize] = &[31, 33, 96, 97, 128, 301, 512];
    let mut s = 0x1234_5678_u32;
    let mut text = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                1000 + (s >> 8) % 29_000
            })
            .collect()
    };
    let seqs: Vec<Vec<u32>> = lens.iter().map(|&n| text(n)).collect();
    let eight: Vec<Vec<u32>> = (0..8).map(|_| text(64)).collect();
    let runs = fast_paths();
    if runs.is_empty() {
        loud(&format!(
            "{TEST}: NOT RUN here: this CPU has only the scalar paths (their 2-thread \
             forwards are checked by embeddings_are_bitwise_batch_invariant)"
        ));
        return;
    }
    let dir = model_dir("all-MiniLM-L6-v2");
    for (name, opts) in runs {
        let one = Embedder::load_with(&dir, &opts.clone().threads(1)).unwrap();
        let two = Embedder::load_with(&dir, &opts.clone().threads(2)).unwrap();
        for s in &seqs {
            let a = one.last_hidden_states(&[s]).unwrap();
            let b = two.last_hidden_states(&[s]).unwrap();
            assert!(
                a == b,
                "{name}: a {}-token text on 2 threads differs from 1 thread",
                s.len()
            );
        }
        let refs: Vec<&[u32]> = eight.iter().map(|s| s.as_slice()).collect();
        let a = one.last_hidden_states(&refs).unwrap();
        let b = two.last_hidden_states(&refs).unwrap();
        assert!(
            a == b,
            "{name}: 8 texts of 64 tokens on 2 threads differ from 1 thread"
        );
    }
}
