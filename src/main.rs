//! The `e5embed` command line: `embed` texts to JSON lines or .npy, `bench` the forward pass,
//! `info` about the model and the kernels this CPU will run.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use e5embed::{Embedder, EmbedderOptions, Error, Precision, Tokens};

#[derive(Parser)]
#[command(
    name = "e5embed",
    version,
    about = "Fast CPU text embeddings for BERT models (intfloat/e5-small-v2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embed texts (arguments, or one per line on stdin); one JSON array per line on stdout.
    Embed(EmbedArgs),
    /// Time the forward pass on synthetic token ids.
    Bench(BenchArgs),
    /// Show the model, the detected CPU features and the kernels that will run.
    Info(InfoArgs),
    /// Save an int8 copy of a model (per-channel int8 Linear weights + scales) that loads
    /// instantly and runs at --precision int8.
    Quantize(QuantizeArgs),
}

#[derive(Args)]
struct QuantizeArgs {
    /// Source model directory (or hub repo id).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (created; its model.safetensors is replaced).
    #[arg(long)]
    out: PathBuf,
    /// The int8 path the file is for: vnni / avxvnni / avx512 (full 8-bit range) or avx2
    /// (7-bit range, no vpmaddubsw saturation). Default: the best this CPU has.
    #[arg(long, env = "E5EMBED_ISA")]
    isa: Option<String>,
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory (Hugging Face layout), or a Hugging Face hub repo id
    /// (`owner/name[@revision]`, e.g. intfloat/e5-small-v2), downloaded once into
    /// $E5EMBED_HUB_CACHE or ~/.cache/e5embed/hub (HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE are
    /// honoured). Default: the all-MiniLM-L6-v2 test model in $E5EMBED_MODELS or
    /// ~/.cache/e5embed/models (tools/fetch-models puts it there).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Worker threads (default: the physical cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Force a kernel path: scalar, avx2, avxvnni, avx512, vnni, avx512bf16 or avx512widen
    /// (default: the best this CPU has).
    #[arg(long, env = "E5EMBED_ISA")]
    isa: Option<String>,
    /// Tokens per forward pass (texts are sorted by length and packed up to this budget; at
    /// most 65536).
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Developer experiment: the GEMMs that run in int8 at --precision int8 (comma list of
    /// qkv, out, up, down; default: the measured recipe). Used by tools/accuracy.
    #[arg(long, hide = true)]
    int8_gemms: Option<String>,
    /// GEMM precision: f32, int8, bf16 or auto (default auto: int8 for a model saved by
    /// `e5embed quantize`, else f32 unless the CPU's bf16 path is faster; `info` says why).
    #[arg(long)]
    precision: Option<String>,
}

#[derive(Args)]
struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prefix every text with `query: ` (E5 queries, symmetric tasks).
    #[arg(long, conflicts_with = "passage")]
    query: bool,
    /// Prefix every text with `passage: ` (E5 documents).
    #[arg(long)]
    passage: bool,
    /// Read texts from this file: one text per line, or JSON Lines if it ends in .jsonl
    /// (the text in --field). `-` is stdin.
    #[arg(long, conflicts_with = "texts")]
    input: Option<PathBuf>,
    /// The JSON field holding the text, for .jsonl input.
    #[arg(long, default_value = "text")]
    field: String,
    /// Write to this file instead of stdout: .npy (float32 [texts, dim]) or .jsonl (one JSON
    /// array per line).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Never show the progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Texts to embed; with none (and no --input), texts are read from stdin, one per line.
    texts: Vec<String>,
}

#[derive(Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per text, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Instead of synthetic ids: embed every line of this text file per run (texts/s).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Timed runs (default: as many as fit in about 3 seconds, at least 5).
    #[arg(long)]
    iters: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also measure this machine's single-thread FMA peak (every ISA path) and DRAM read
    /// bandwidth, and print the forward's GFLOP/s as a fraction of the peak.
    #[arg(long)]
    peak: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(a) => run_embed(a),
        Command::Bench(a) => run_bench(a),
        Command::Info(a) => run_info(a),
        Command::Quantize(a) => run_quantize(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// The model directory: a local directory, a hub repo id, or the default test model.
fn model_dir(model: &Option<PathBuf>) -> Result<PathBuf, Error> {
    Ok(match model {
        Some(spec) if spec.is_dir() => spec.clone(),
        Some(spec) => e5embed::hub::resolve_model(&spec.to_string_lossy())?,
        None => e5embed::models_dir().join("all-MiniLM-L6-v2"),
    })
}

fn run_quantize(a: QuantizeArgs) -> Result<(), Error> {
    let src = model_dir(&a.model)?;
    let req = match &a.isa {
        Some(spec) => e5embed::embedder::parse_isa_spec(spec)?,
        None => Default::default(),
    };
    let qisa = e5embed::embedder::resolve_paths(req.isa, req.qisa, req.bisa)?.qisa;
    let r = e5embed::quantize::save_quantized(&src, &a.out, qisa)?;
    eprintln!(
        "quantized {} Linear weights for the {} int8 path (range ±{}): {:.1} MB -> {:.1} MB in {}",
        r.linear_tensors,
        qisa.name(),
        r.qmax,
        r.bytes_before as f64 / 1e6,
        r.bytes_after as f64 / 1e6,
        a.out.display()
    );
    Ok(())
}

fn load(m: &ModelArgs) -> Result<Embedder, Error> {
    let dir = model_dir(&m.model)?;
    let req = match &m.isa {
        Some(spec) => e5embed::embedder::parse_isa_spec(spec)?,
        None => Default::default(),
    };
    let precision = match &m.precision {
        Some(p) => Precision::parse_request(p)?,
        None => None,
    };
    let paths = e5embed::embedder::resolve_paths(req.isa, req.qisa, req.bisa)?;
    let int8_recipe = match &m.int8_gemms {
        Some(list) => Some(e5embed::Int8Recipe {
            gemms: e5embed::Int8Recipe::parse_gemms(list)?,
            ..e5embed::Int8Recipe::default_for(paths.qisa)
        }),
        None => None,
    };
    let opts = EmbedderOptions {
        threads: m.threads,
        isa: req.isa,
        qisa: req.qisa,
        bisa: req.bisa,
        max_batch_tokens: m.max_batch_tokens,
        precision,
        int8_recipe,
        ..Default::default()
    };
    Embedder::load_with(dir, &opts)
}

/// The kernel path that runs the GEMMs at the embedder's precision.
fn isa_label(e: &Embedder) -> &'static str {
    match e.precision() {
        Precision::F32 => e.isa().name(),
        Precision::Int8 => e.qisa().name(),
        Precision::Bf16 => e.bisa().name(),
    }
}

fn io_err(path: &str, source: std::io::Error) -> Error {
    Error::Io {
        path: path.into(),
        source,
    }
}

/// Precisions this build can run.
const PRECISIONS: [&str; 3] = ["f32", "int8", "bf16"];

/// Texts per call when streaming input: bounds memory whatever the input size (the chunk's
/// strings, ids and output vectors: ~2 MB for 1024 mixed texts, 4x that at 4096), and gives
/// the length sort enough texts to fill its forwards (1024 texts of a mixed corpus are ~55k
/// tokens: dozens of forwards). Measured on 10k mixed texts, e5-small-v2-shape, 2 threads:
/// same texts/s as 4096 (int8 176-177, f32 98.5-98.8), peak RSS 2 MB lower.
const STREAM_CHUNK: usize = 1024;

/// Truncation warnings printed before they are only counted in the summary.
const MAX_TRUNCATION_WARNINGS: usize = 10;

/// Where embeddings go.
enum Sink {
    /// One JSON array per line (stdout or a .jsonl file).
    JsonLines(Box<dyn Write>),
    Npy(e5embed::npy::NpyWriter<BufWriter<std::fs::File>>, PathBuf),
}

impl Sink {
    fn open(path: Option<&PathBuf>, dim: usize) -> Result<Sink, Error> {
        let Some(path) = path else {
            return Ok(Sink::JsonLines(Box::new(BufWriter::new(std::io::stdout()))));
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let create = || {
            std::fs::File::create(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })
        };
        match ext {
            "npy" => {
                let w = e5embed::npy::NpyWriter::new(BufWriter::new(create()?), dim).map_err(
                    |source| Error::Io {
                        path: path.clone(),
                        source,
                    },
                )?;
                Ok(Sink::Npy(w, path.clone()))
            }
            "jsonl" | "ndjson" | "json" => Ok(Sink::JsonLines(Box::new(BufWriter::new(create()?)))),
            _ => Err(Error::InvalidInput(format!(
                "--output {}: use a .npy or .jsonl file name",
                path.display()
            ))),
        }
    }

    fn write(&mut self, v: &[f32]) -> std::io::Result<()> {
        match self {
            Sink::JsonLines(w) => {
                serde_json::to_writer(&mut *w, v)?;
                w.write_all(b"\n")
            }
            Sink::Npy(w, _) => w.write_row(v),
        }
    }

    /// Flushes (and for .npy writes the final shape): what was embedded is never lost, even
    /// when the run stops on an error.
    fn finish(self) -> Result<(), Error> {
        match self {
            Sink::JsonLines(mut w) => w.flush().map_err(|e| io_err("<output>", e)),
            Sink::Npy(w, path) => w
                .finish()
                .map(|_| ())
                .map_err(|source| Error::Io { path, source }),
        }
    }
}

fn run_embed(a: EmbedArgs) -> Result<(), Error> {
    let embedder = load(&a.model)?;
    let rss_after_load = e5embed::mem::rss_bytes();
    e5embed::mem::reset_peak_rss();
    let prefix = if a.query {
        e5embed::QUERY_PREFIX
    } else if a.passage {
        e5embed::PASSAGE_PREFIX
    } else {
        ""
    };
    let mut sink = Sink::open(a.output.as_ref(), embedder.dim())?;
    let result = embed_stream(&a, &embedder, prefix, &mut sink);
    let finished = sink.finish();
    let summary = result?;
    finished?;
    eprintln!(
        "{summary}; RSS after load {:.1} MB, peak while embedding {:.1} MB",
        mb(rss_after_load),
        mb(e5embed::mem::peak_rss_bytes())
    );
    Ok(())
}

/// Reads texts (arguments, a file or stdin) in chunks, embeds, writes; returns the summary.
fn embed_stream(
    a: &EmbedArgs,
    embedder: &Embedder,
    prefix: &str,
    sink: &mut Sink,
) -> Result<String, Error> {
    use e5embed::input::{Format, TextReader};
    let start = Instant::now();
    let mut n = Counts::default();
    if !a.texts.is_empty() {
        let mut chunk = a.texts.clone();
        embed_chunk(embedder, prefix, sink, &mut n, &mut chunk, 1)?;
    } else {
        let path = a.input.as_ref().filter(|p| p.as_os_str() != "-");
        let is_jsonl = path
            .and_then(|p| p.extension())
            .is_some_and(|e| e == "jsonl" || e == "ndjson");
        let format = if is_jsonl {
            Format::JsonLines {
                field: a.field.clone(),
            }
        } else {
            Format::Lines
        };
        let (reader, name, size): (Box<dyn BufRead>, String, Option<u64>) = match path {
            Some(p) => {
                let f = std::fs::File::open(p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })?;
                let size = f.metadata().ok().map(|m| m.len());
                (
                    Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
                    p.display().to_string(),
                    size,
                )
            }
            None => (
                Box::new(std::io::BufReader::new(std::io::stdin())),
                "stdin".to_owned(),
                None,
            ),
        };
        let mut reader = TextReader::new(reader, format, name);
        let bar = progress_bar(size, a.no_progress);
        let mut chunk = Vec::with_capacity(STREAM_CHUNK);
        let mut first_line = 1;
        loop {
            let read = reader.read_chunk(STREAM_CHUNK, &mut chunk);
            // Embed what was read before an input error, then report the error.
            let got = chunk.len();
            if got > 0 {
                embed_chunk(embedder, prefix, sink, &mut n, &mut chunk, first_line)?;
            }
            first_line = reader.lines_read() + 1;
            if let Some(bar) = &bar {
                bar.set_position(reader.bytes_read());
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "{} texts, {:.0} texts/s",
                    n.texts,
                    n.texts as f64 / secs
                ));
            }
            if read? == 0 || got == 0 {
                break;
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if n.texts == 0 {
            return Err(Error::EmptyInput);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(format!(
        "embedded {} texts ({} tokens, {} truncated) in {secs:.2} s: {:.1} texts/s",
        n.texts,
        n.tokens,
        n.truncated,
        n.texts as f64 / secs.max(1e-9)
    ))
}

#[derive(Default)]
struct Counts {
    texts: usize,
    tokens: usize,
    truncated: usize,
}

/// Embeds one chunk of texts (adding the prefix), warns about truncation, writes the vectors.
fn embed_chunk(
    embedder: &Embedder,
    prefix: &str,
    sink: &mut Sink,
    n: &mut Counts,
    chunk: &mut [String],
    first_line: usize,
) -> Result<(), Error> {
    if !prefix.is_empty() {
        for t in chunk.iter_mut() {
            t.insert_str(0, prefix);
        }
    }
    let res = embedder.embed(chunk)?;
    for &i in &res.truncated {
        n.truncated += 1;
        if n.truncated <= MAX_TRUNCATION_WARNINGS {
            let more = if n.truncated == MAX_TRUNCATION_WARNINGS {
                "; further warnings are only counted"
            } else {
                ""
            };
            eprintln!(
                "warning: text {} was truncated to {} tokens (the model's max_seq_length){more}",
                first_line + i,
                embedder.config().max_seq_length
            );
        }
    }
    for v in &res.vectors {
        sink.write(v).map_err(|e| io_err("<output>", e))?;
    }
    n.texts += chunk.len();
    n.tokens += res.token_counts.iter().sum::<usize>();
    Ok(())
}

/// A progress bar on stderr (bytes of the input file, texts/s, ETA), only when stderr is a
/// terminal.
fn progress_bar(size: Option<u64>, disabled: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if disabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match size {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    Some(bar)
}

/// Synthetic token ids: [CLS], `seq - 2` ids from a fixed pseudo-random sequence, [SEP].
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

/// Median of a sorted, non-empty slice.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

fn mb(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0))
}

fn run_bench(a: BenchArgs) -> Result<(), Error> {
    let embedder = load(&a.model)?;
    let rss_after_load = e5embed::mem::rss_bytes();
    // Peak RSS is measured from here: what embedding costs on top of the loaded model.
    e5embed::mem::reset_peak_rss();
    let max = embedder.config().max_seq_length;
    // The workload: synthetic ids, or a corpus tokenized once up front (peers in
    // tools/compare are also timed on token ids).
    let (tokens, corpus_texts, tokenize_ms) = match &a.corpus {
        Some(path) => {
            let data = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let mut reader = e5embed::input::TextReader::new(
                &data[..],
                e5embed::input::Format::Lines,
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
    let bandwidth = a
        .peak
        .then(|| e5embed_kernels::peak::memory_bandwidth_gbs(1.0));
    if a.peak {
        e5embed::mem::reset_peak_rss();
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
    let peak_rss = e5embed::mem::peak_rss_bytes();
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

fn run_info(a: InfoArgs) -> Result<(), Error> {
    let embedder = load(&a.model)?;
    let c = embedder.config();
    let b = &c.bert;
    let avail: Vec<&str> = e5embed::Isa::available().iter().map(|i| i.name()).collect();
    if a.json {
        let obj = serde_json::json!({
            "model": embedder.model_dir(),
            "layers": b.num_hidden_layers,
            "hidden_size": b.hidden_size,
            "heads": b.num_attention_heads,
            "intermediate_size": b.intermediate_size,
            "vocab_size": b.vocab_size,
            "max_seq_length": c.max_seq_length,
            "pooling": format!("{:?}", c.pooling).to_lowercase(),
            "normalize": c.normalize,
            "pipeline": c.pipeline_description(),
            "cpu_paths": avail,
            "isa": embedder.isa().name(),
            "gemm_kernel": embedder.gemm_kernel_name(),
            "attention_kernel": e5embed_kernels::attention::kernel_name(embedder.isa()),
            "precision": embedder.precision().name(),
            "precision_reason": embedder.precision_reason(),
            "int8_path": embedder.qisa().name(),
            "bf16_path": embedder.bisa().name(),
            "amx": e5embed_kernels::amx::status().to_string(),
            "precisions": PRECISIONS,
            "threads": embedder.threads(),
            "max_batch_tokens": embedder.max_batch_tokens(),
        });
        println!("{obj}");
        return Ok(());
    }
    println!("model            {}", embedder.model_dir().display());
    println!(
        "encoder          BERT, {} layers, hidden {}, {} heads of {}, intermediate {}, vocab {}",
        b.num_hidden_layers,
        b.hidden_size,
        b.num_attention_heads,
        b.head_dim(),
        b.intermediate_size,
        b.vocab_size
    );
    println!("max_seq_length   {}", c.max_seq_length);
    println!("pooling          {}", c.pipeline_description());
    println!("cpu paths        {}", avail.join(", "));
    println!("amx              {}", e5embed_kernels::amx::status());
    println!("isa              {}", embedder.isa().name());
    println!("gemm kernel      {}", embedder.gemm_kernel_name());
    println!(
        "attention kernel {}",
        e5embed_kernels::attention::kernel_name(embedder.isa())
    );
    println!(
        "precision        {} ({}; available: {}, auto)",
        embedder.precision(),
        embedder.precision_reason(),
        PRECISIONS.join(", ")
    );
    println!(
        "kernel paths     f32 {}, int8 {}, bf16 {}",
        embedder.isa().name(),
        embedder.qisa().name(),
        embedder.bisa().name()
    );
    println!("threads          {}", embedder.threads());
    println!("max batch tokens {}", embedder.max_batch_tokens());
    Ok(())
}
