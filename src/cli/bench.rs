//! `e5embed bench`: time the forward on synthetic ids or a corpus.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use e5embed::{Embedder, Error, Tokens};

use super::{isa_label, load, mb, median, ModelArgs};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per text, `[CLS]` and `[SEP]` included.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Instead of synthetic ids: embed every line of this text file per run (texts/s).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Timed runs (default: as many as fit in about 3 seconds, at least 5).
    #[arg(long)]
    iters: Option<usize>,
    /// Idle time before each timed run, in microseconds (0: back to back). A server's or an
    /// interactive caller's requests arrive with gaps in which the pool's workers may fall
    /// asleep; this measures the latency such a lone call sees.
    #[arg(long, default_value_t = 0)]
    gap_us: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also measure this machine's single-thread FMA peak (every ISA path), the AVX512-BF16
    /// dot-product peak and latency (`vdpbf16ps`, where present) and DRAM read bandwidth, and print the forward's GFLOP/s as a fraction of the peak.
    #[arg(long)]
    peak: bool,
}

/// Synthetic token ids: `[CLS]`, `seq - 2` ids from a fixed pseudo-random sequence, `[SEP]`.
fn synthetic_tokens(embedder: &Embedder, batch: usize, seq: usize) -> Vec<Tokens> {
    let vocab = embedder.config().bert.vocab_size as u64;
    let cls = embedder.tokenizer().token_id("[CLS]").unwrap_or(101);
    let sep = embedder.tokenizer().token_id("[SEP]").unwrap_or(102);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..batch)
        .map(|_| {
            let mut ids = vec![cls];
            for _ in 2..seq {
                // xorshift64*: deterministic, no dependency.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                ids.push((1000 + r % (vocab.saturating_sub(1000)).max(1)) as u32);
            }
            ids.push(sep);
            Tokens {
                ids,
                truncated: false,
            }
        })
        .collect()
}

/// FLOPs of one forward over `tokens` (multiply-add = 2): the four GEMMs per layer plus the
/// two attention products (Q·Kᵀ and P·V) per text; elementwise ops are not counted.
fn forward_flops(c: &e5embed::ModelConfig, tokens: &[Tokens]) -> f64 {
    let b = &c.bert;
    let (h, i, l) = (
        b.hidden_size as f64,
        b.intermediate_size as f64,
        b.num_hidden_layers as f64,
    );
    tokens
        .iter()
        .map(|t| {
            let n = t.ids.len() as f64;
            l * (2.0 * n * (4.0 * h * h + 2.0 * h * i) + 4.0 * n * n * h)
        })
        .sum()
}

pub fn run(a: BenchArgs) -> Result<(), Error> {
    let embedder = load(&a.model)?;
    let rss_after_load = e5embed::internals::mem::rss_bytes();
    // Peak RSS is measured from here: what embedding costs on top of the loaded model.
    e5embed::internals::mem::reset_peak_rss();
    let max = embedder.config().max_seq_length;
    // The workload: synthetic ids, or a corpus tokenized once up front (peers in
    // tools/compare are also timed on token ids).
    let (tokens, corpus_texts, tokenize_ms) = match &a.corpus {
        Some(path) => {
            let data = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let mut reader = e5embed::internals::input::TextReader::new(
                &data[..],
                e5embed::internals::input::Format::Lines,
                path.display().to_string(),
            );
            let mut texts = Vec::new();
            reader.read_chunk(usize::MAX, &mut texts)?;
            let t0 = Instant::now();
            let tokens = embedder.tokenize(&texts)?;
            (tokens, Some(texts.len()), t0.elapsed().as_secs_f64() * 1e3)
        }
        None => {
            if a.batch == 0 || a.seq < 2 || a.seq > max {
                return Err(Error::InvalidInput(format!(
                    "--batch must be >= 1 and --seq between 2 and {max} (the model's max_seq_length)"
                )));
            }
            // Bounded: the synthetic ids are held in memory (4 bytes a token).
            const MAX_BENCH_TOKENS: usize = 1 << 24;
            if a.batch
                .checked_mul(a.seq)
                .is_none_or(|t| t > MAX_BENCH_TOKENS)
            {
                return Err(Error::Limit {
                    what: "--batch x --seq".into(),
                    value: a.batch.saturating_mul(a.seq),
                    max: MAX_BENCH_TOKENS,
                    why: " tokens".into(),
                });
            }
            (synthetic_tokens(&embedder, a.batch, a.seq), None, 0.0)
        }
    };
    let total_tokens: usize = tokens.iter().map(|t| t.ids.len()).sum();
    let gflop = forward_flops(embedder.config(), &tokens) / 1e9;
    // Peak probes before the timed runs (they allocate 1 GiB for the bandwidth probe, freed).
    let peaks: Vec<(&'static str, f64)> = if a.peak {
        e5embed::Isa::available()
            .into_iter()
            .map(|isa| (isa.name(), e5embed_kernels::peak::fma_peak_gflops(isa, 0.5)))
            .collect()
    } else {
        Vec::new()
    };
    let bf16_peak = if a.peak {
        e5embed_kernels::peak::bf16_dot_peak(1.0)
    } else {
        None
    };
    let bandwidth = a
        .peak
        .then(|| e5embed_kernels::peak::memory_bandwidth_gbs(1.0));
    if a.peak {
        e5embed::internals::mem::reset_peak_rss();
    }
    // Warm-up: first touch of the scratch arena, thread pool start.
    let t0 = Instant::now();
    embedder.embed_tokens(&tokens)?;
    let first = t0.elapsed().as_secs_f64();
    let iters = a
        .iters
        .unwrap_or_else(|| ((3.0 / first.max(1e-6)) as usize).clamp(5, 200))
        .max(1);
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        if a.gap_us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(a.gap_us));
        }
        let t = Instant::now();
        embedder.embed_tokens(&tokens)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|x, y| x.total_cmp(y));
    let med = median(&times);
    let (min, maxt) = (times[0], times[iters - 1]);
    let tokens_per_s = total_tokens as f64 / (med / 1e3);
    let gflops = gflop / (med / 1e3);
    // The peak of the path the f32 GEMMs run on, times the threads used.
    let peak_path = peaks
        .iter()
        .find(|(n, _)| *n == embedder.isa().name())
        .map(|p| p.1);
    let peak_rss = e5embed::internals::mem::peak_rss_bytes();
    let model_name = embedder
        .model_dir()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if embedder.timings().enabled() {
        eprint!("{}", embedder.timings().report());
    }
    if a.json {
        let mut obj = serde_json::json!({
            "model": model_name,
            "batch": corpus_texts.unwrap_or(a.batch),
            "seq": if corpus_texts.is_some() { serde_json::Value::Null } else { a.seq.into() },
            "threads": embedder.threads(),
            "precision": embedder.precision().name(),
            "isa": isa_label(&embedder),
            "gemm_kernel": embedder.gemm_kernel_name(),
            "max_batch_tokens": embedder.max_batch_tokens(),
            "iters": iters,
            "gap_us": a.gap_us,
            "median_ms": med,
            "min_ms": min,
            "max_ms": maxt,
            "tokens": total_tokens,
            "tokens_per_s": tokens_per_s,
            "rss_after_load_mb": mb(rss_after_load),
            "peak_rss_mb": mb(peak_rss),
            "gflop_per_run": gflop,
            "gflops": gflops,
        });
        if let Some(p) = peak_path {
            obj["peak_gflops_per_thread"] = p.into();
            obj["fraction_of_peak"] = (gflops / (p * embedder.threads() as f64)).into();
            obj["peaks_gflops_per_thread"] = serde_json::json!(peaks
                .iter()
                .map(|(n, g)| (n.to_string(), *g))
                .collect::<std::collections::BTreeMap<_, _>>());
        }
        if let Some(p) = bf16_peak {
            obj["bf16_dot_gflops_per_thread"] = p.gflops.into();
            obj["bf16_dot_latency_ns"] = p.dot_latency_ns.into();
            obj["fma_latency_ns"] = p.fma_latency_ns.into();
        }
        if let Some(bw) = bandwidth {
            obj["dram_read_gbs"] = bw.into();
        }
        if let Some(n) = corpus_texts {
            obj["texts"] = n.into();
            obj["texts_per_s"] = (n as f64 / (med / 1e3)).into();
            obj["tokenize_ms"] = tokenize_ms.into();
        }
        println!("{obj}");
    } else {
        let what = match corpus_texts {
            Some(n) => format!("corpus of {n} texts ({total_tokens} tokens)"),
            None => format!("batch {} x seq {}", a.batch, a.seq),
        };
        println!(
            "model {model_name}  {what}  threads {}  precision {}  isa {} ({})",
            embedder.threads(),
            embedder.precision(),
            isa_label(&embedder),
            embedder.gemm_kernel_name()
        );
        let per_text = corpus_texts
            .map(|n| {
                format!(
                    "  {:.1} texts/s (tokenization {tokenize_ms:.0} ms, not timed)",
                    n as f64 / (med / 1e3)
                )
            })
            .unwrap_or_default();
        println!(
            "{iters} runs: median {med:.3} ms  min {min:.3} ms  max {maxt:.3} ms  {tokens_per_s:.0} tokens/s{per_text}"
        );
        println!(
            "memory: RSS after load {:.1} MB, peak RSS while embedding {:.1} MB",
            mb(rss_after_load),
            mb(peak_rss)
        );
        for (name, g) in &peaks {
            println!("peak: {name} FMA {g:.1} GFLOP/s per thread");
        }
        if let Some(p) = bf16_peak {
            println!(
                "peak: vdpbf16ps zmm {:.1} GFLOP/s per thread ({:.2}x the f32 FMA {:.1}), \
                 latency {:.2} ns = {:.2}x the FMA's {:.2} ns, {:.1} independent accumulators needed",
                p.gflops,
                p.gflops / p.fma_gflops,
                p.fma_gflops,
                p.dot_latency_ns,
                p.latency_ratio(),
                p.fma_latency_ns,
                p.chains_needed()
            );
        }
        if let Some(bw) = bandwidth {
            println!("peak: DRAM read {bw:.1} GB/s (one thread)");
        }
        match peak_path {
            Some(p) => println!(
                "forward: {gflop:.2} GFLOP per run, {gflops:.1} GFLOP/s = {:.1}% of the {} peak x {} thread(s)",
                100.0 * gflops / (p * embedder.threads() as f64),
                embedder.isa().name(),
                embedder.threads()
            ),
            None => println!("forward: {gflop:.2} GFLOP per run, {gflops:.1} GFLOP/s"),
        }
    }
    Ok(())
}
