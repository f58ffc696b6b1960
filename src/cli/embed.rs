//! `e5embed embed`: texts from arguments, a file or stdin, streamed in chunks, to JSON lines
//! or .npy.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use e5embed::{Embedder, Error};

use super::{io_err, load, mb, ModelArgs};

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prefix every text with `query: ` (E5 queries, symmetric tasks).
    #[arg(long, conflicts_with = "passage")]
    query: bool,
    /// Prefix every text with `passage: ` (E5 documents).
    #[arg(long, conflicts_with = "prompt_name")]
    passage: bool,
    /// Prefix every text with the model's prompt of this name (its
    /// config_sentence_transformers.json prompts, or E5's query / passage).
    #[arg(long, conflicts_with = "query")]
    prompt_name: Option<String>,
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

/// Texts per call when streaming input: bounds memory whatever the input size (the chunk's
/// strings, ids and output vectors: ~2 MB for 1024 mixed texts, 4x that at 4096), and gives
/// the length sort enough texts to fill its forwards (1024 texts of a mixed corpus are ~55k
/// tokens: dozens of forwards). Measured on 10k mixed texts, e5-small-v2-shape, 2 threads:
/// same texts/s as 4096 (int8 176-177, f32 98.5-98.8), peak RSS 2 MB lower.
const STREAM_CHUNK: usize = 1024;

/// Truncation warnings printed before they are only counted in the summary.
const MAX_TRUNCATION_WARNINGS: usize = 10;

/// Where embeddings go.
///
/// A file is written under a temporary name beside it (`.NAME.part`) and renamed into place
/// when the run ends, so an existing file of that name is replaced whole or not at all.
enum Sink {
    /// One JSON array per line (stdout or a .jsonl file: its temporary and final paths).
    JsonLines(Box<dyn Write>, Option<(PathBuf, PathBuf)>),
    Npy(
        e5embed::internals::npy::NpyWriter<BufWriter<std::fs::File>>,
        PathBuf,
        PathBuf,
    ),
}

/// The temporary name a file is written under before it is renamed to `path`.
fn part_path(path: &std::path::Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.part"))
}

/// Renames the finished temporary file into place.
fn rename_into_place(tmp: &std::path::Path, path: &std::path::Path) -> Result<(), Error> {
    std::fs::rename(tmp, path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

impl Sink {
    fn open(path: Option<&PathBuf>, dim: usize) -> Result<Sink, Error> {
        let Some(path) = path else {
            return Ok(Sink::JsonLines(
                Box::new(BufWriter::new(std::io::stdout())),
                None,
            ));
        };
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let tmp = part_path(path);
        let create = || {
            std::fs::File::create(&tmp).map_err(|source| Error::Io {
                path: tmp.clone(),
                source,
            })
        };
        match ext {
            "npy" => {
                let w = e5embed::internals::npy::NpyWriter::new(BufWriter::new(create()?), dim)
                    .map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                Ok(Sink::Npy(w, tmp.clone(), path.clone()))
            }
            "jsonl" | "ndjson" | "json" => Ok(Sink::JsonLines(
                Box::new(BufWriter::new(create()?)),
                Some((tmp.clone(), path.clone())),
            )),
            _ => Err(Error::InvalidInput(format!(
                "--output {}: use a .npy or .jsonl file name",
                path.display()
            ))),
        }
    }

    fn write(&mut self, v: &[f32]) -> std::io::Result<()> {
        match self {
            Sink::JsonLines(w, _) => {
                serde_json::to_writer(&mut *w, v)?;
                w.write_all(b"\n")
            }
            Sink::Npy(w, _, _) => w.write_row(v),
        }
    }

    /// Flushes (and for .npy writes the final shape) and renames the file into place: what
    /// was embedded is never lost, even when the run stops on an error.
    fn finish(self) -> Result<(), Error> {
        match self {
            Sink::JsonLines(mut w, paths) => {
                w.flush().map_err(|e| io_err("<output>", e))?;
                drop(w);
                match paths {
                    Some((tmp, path)) => rename_into_place(&tmp, &path),
                    None => Ok(()),
                }
            }
            Sink::Npy(w, tmp, path) => {
                w.finish().map_err(|source| Error::Io {
                    path: tmp.clone(),
                    source,
                })?;
                rename_into_place(&tmp, &path)
            }
        }
    }
}

pub fn run(a: EmbedArgs) -> Result<(), Error> {
    let mut stages = e5embed::internals::timing::StageTimes::from_env();
    let embedder = load(&a.model)?;
    stages.extend(embedder.load_timings());
    if a.texts.is_empty() {
        // A file or stdin: possibly many texts. Claim the full scratch and read in the mapped
        // embedding table now, so the resident memory is flat from the first text (and the
        // summary's "after load" is what the job then holds, as issue #4's check expects).
        embedder.prepare_for_bulk();
        stages.lap("prepare for bulk (scratch at the token budget, table read in)");
    }
    let rss_after_load = e5embed::internals::mem::rss_bytes();
    let peak_during_load = e5embed::internals::mem::peak_rss_bytes();
    e5embed::internals::mem::reset_peak_rss();
    let prompt = if a.query {
        Some("query")
    } else if a.passage {
        Some("passage")
    } else {
        a.prompt_name.as_deref()
    };
    let mut sink = Sink::open(a.output.as_ref(), embedder.dim())?;
    let result = embed_stream(&a, &embedder, prompt, &mut sink);
    let finished = sink.finish();
    let summary = result?;
    finished?;
    stages.lap("embed (tokenize, forward, write)");
    // The load's own peak last: the peak reset above hides it from /usr/bin/time's maximum.
    eprintln!(
        "{summary}; RSS after load {:.1} MB, peak while embedding {:.1} MB; peak during load \
         {:.1} MB",
        mb(rss_after_load),
        mb(e5embed::internals::mem::peak_rss_bytes()),
        mb(peak_during_load)
    );
    if stages.enabled() {
        eprint!("{}{}", stages.report(), embedder.timings().report());
    }
    // The process ends here: the OS takes the memory back whole. Dropping the embedder first
    // (the tokenizer's maps, the tables, the pool) cost 15-18 ms of a ~200 ms cold start
    // (kernels/PERF.md); everything written is flushed and renamed above.
    std::mem::forget(embedder);
    Ok(())
}

/// Reads texts (arguments, a file or stdin) in chunks, embeds, writes; returns the summary.
fn embed_stream(
    a: &EmbedArgs,
    embedder: &Embedder,
    prompt: Option<&str>,
    sink: &mut Sink,
) -> Result<String, Error> {
    use e5embed::internals::input::{Format, TextReader};
    let start = Instant::now();
    let mut n = Counts::default();
    if !a.texts.is_empty() {
        let chunk = &a.texts;
        embed_chunk(embedder, prompt, sink, &mut n, chunk, 1)?;
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
                embed_chunk(embedder, prompt, sink, &mut n, &chunk, first_line)?;
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

/// Embeds one chunk of texts (with the named prompt, else the model's default), warns about
/// truncation, writes the vectors.
fn embed_chunk(
    embedder: &Embedder,
    prompt: Option<&str>,
    sink: &mut Sink,
    n: &mut Counts,
    chunk: &[String],
    first_line: usize,
) -> Result<(), Error> {
    let res = match prompt {
        Some(name) => embedder.embed_with_prompt_name(chunk, name)?,
        None => embedder.embed(chunk)?,
    };
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
