//! The `e5embed` command line: `embed` texts to JSON lines or .npy, `bench` the forward pass,
//! `info` about the model and the kernels this CPU will run.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use e5embed::{Embedder, EmbedderOptions, Error, IsaKind, Tokens};

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
    Info(ModelArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// Model directory (Hugging Face layout). Default: the all-MiniLM-L6-v2 test model in
    /// $E5EMBED_MODELS or ~/.cache/e5embed/models (tools/fetch-models puts it there).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Worker threads (default: all CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Force a kernel path: scalar, avx2 or avx512 (default: $E5EMBED_ISA, else the best).
    #[arg(long)]
    isa: Option<IsaKind>,
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
    /// Write a float32 .npy matrix [texts, dim] to this file instead of JSON lines on stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Texts to embed; with none, texts are read from stdin, one per line (UTF-8).
    texts: Vec<String>,
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
    /// Timed runs (default: as many as fit in about 3 seconds, at least 5).
    #[arg(long)]
    iters: Option<usize>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(a) => run_embed(a),
        Command::Bench(a) => run_bench(a),
        Command::Info(a) => run_info(a),
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

fn load(m: &ModelArgs) -> Result<Embedder, Error> {
    let dir = m
        .model
        .clone()
        .unwrap_or_else(|| e5embed::models_dir().join("all-MiniLM-L6-v2"));
    let opts = EmbedderOptions {
        threads: m.threads,
        isa: m.isa,
        ..Default::default()
    };
    Embedder::load_with(dir, &opts)
}

fn io_err(path: &str, source: std::io::Error) -> Error {
    Error::Io {
        path: path.into(),
        source,
    }
}

/// Texts per call when streaming stdin: bounds memory whatever the input size.
const STREAM_CHUNK: usize = 1024;

fn run_embed(a: EmbedArgs) -> Result<(), Error> {
    let embedder = load(&a.model)?;
    let prefix = if a.query {
        e5embed::QUERY_PREFIX
    } else if a.passage {
        e5embed::PASSAGE_PREFIX
    } else {
        ""
    };
    let mut npy_rows: Vec<Vec<f32>> = Vec::new();
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut first_line = 1usize;
    let mut emit = |texts: Vec<String>, first_line: usize| -> Result<(), Error> {
        let texts: Vec<String> = texts.into_iter().map(|t| format!("{prefix}{t}")).collect();
        let res = embedder.embed(&texts)?;
        for &i in &res.truncated {
            eprintln!(
                "warning: text {} was truncated to {} tokens (the model's max_seq_length)",
                first_line + i,
                embedder.config().max_seq_length
            );
        }
        if a.output.is_some() {
            npy_rows.extend(res.vectors);
        } else {
            for v in &res.vectors {
                serde_json::to_writer(&mut out, v).map_err(|e| io_err("<stdout>", e.into()))?;
                out.write_all(b"\n").map_err(|e| io_err("<stdout>", e))?;
            }
        }
        Ok(())
    };
    if !a.texts.is_empty() {
        emit(a.texts, 1)?;
    } else {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut buf = Vec::new();
        let mut chunk = Vec::with_capacity(STREAM_CHUNK);
        let mut line_no = 0usize;
        loop {
            buf.clear();
            let n = input
                .read_until(b'\n', &mut buf)
                .map_err(|e| io_err("<stdin>", e))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            let text = String::from_utf8(std::mem::take(&mut buf)).map_err(|e| {
                Error::InvalidInput(format!(
                    "stdin line {line_no} is not valid UTF-8 (byte {} of the line)",
                    e.utf8_error().valid_up_to() + 1
                ))
            })?;
            chunk.push(text);
            if chunk.len() == STREAM_CHUNK {
                emit(std::mem::take(&mut chunk), first_line)?;
                first_line = line_no + 1;
            }
        }
        if !chunk.is_empty() {
            emit(chunk, first_line)?;
        } else if line_no == 0 {
            return Err(Error::EmptyInput);
        }
    }
    out.flush().map_err(|e| io_err("<stdout>", e))?;
    drop(out);
    if let Some(path) = &a.output {
        let f = std::fs::File::create(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        e5embed::npy::write_f32_matrix(BufWriter::new(f), &npy_rows, embedder.dim()).map_err(
            |source| Error::Io {
                path: path.clone(),
                source,
            },
        )?;
        eprintln!(
            "wrote {} x {} float32 to {}",
            npy_rows.len(),
            embedder.dim(),
            path.display()
        );
    }
    Ok(())
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

fn run_bench(a: BenchArgs) -> Result<(), Error> {
    let embedder = load(&a.model)?;
    let max = embedder.config().bert.max_position_embeddings;
    if a.batch == 0 || a.seq < 2 || a.seq > max {
        return Err(Error::InvalidInput(format!(
            "--batch must be >= 1 and --seq between 2 and {max}"
        )));
    }
    let tokens = synthetic_tokens(&embedder, a.batch, a.seq);
    // Warm-up: first-touch of buffers, thread pool start.
    let t0 = Instant::now();
    embedder.embed_tokens(&tokens)?;
    let first = t0.elapsed().as_secs_f64();
    let iters = a
        .iters
        .unwrap_or_else(|| ((3.0 / first.max(1e-6)) as usize).clamp(5, 200));
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        embedder.embed_tokens(&tokens)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|x, y| x.total_cmp(y));
    let median = if iters % 2 == 1 {
        times[iters / 2]
    } else {
        0.5 * (times[iters / 2 - 1] + times[iters / 2])
    };
    let (min, maxt) = (times[0], times[iters - 1]);
    let tokens_per_s = (a.batch * a.seq) as f64 / (median / 1e3);
    let model_name = embedder
        .model_dir()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if a.json {
        let obj = serde_json::json!({
            "model": model_name,
            "batch": a.batch,
            "seq": a.seq,
            "threads": embedder.threads(),
            "precision": "f32",
            "isa": embedder.isa().name(),
            "gemm_kernel": embedder.gemm_kernel_name(),
            "iters": iters,
            "median_ms": median,
            "min_ms": min,
            "max_ms": maxt,
            "tokens_per_s": tokens_per_s,
        });
        println!("{obj}");
    } else {
        println!(
            "model {model_name}  batch {} x seq {}  threads {}  precision f32  isa {} ({})",
            a.batch,
            a.seq,
            embedder.threads(),
            embedder.isa().name(),
            embedder.gemm_kernel_name()
        );
        println!(
            "{iters} runs: median {median:.3} ms  min {min:.3} ms  max {maxt:.3} ms  {tokens_per_s:.0} tokens/s"
        );
    }
    Ok(())
}

fn run_info(a: ModelArgs) -> Result<(), Error> {
    let embedder = load(&a)?;
    let c = embedder.config();
    let b = &c.bert;
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
    println!(
        "pooling          {:?}{}",
        c.pooling,
        if c.normalize { " + L2 normalize" } else { "" }
    );
    let avail: Vec<&str> = e5embed::Isa::available().iter().map(|i| i.name()).collect();
    println!("cpu paths        {}", avail.join(", "));
    println!("isa              {}", embedder.isa().name());
    println!("gemm kernel      {}", embedder.gemm_kernel_name());
    println!("precision        f32");
    println!("threads          {}", embedder.threads());
    Ok(())
}
