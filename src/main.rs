//! The `e5embed` command line: `embed` texts to JSON lines or .npy, `bench` the forward pass,
//! `info` about the model and the kernels this CPU will run, `quantize` a model to int8,
//! `tune` the kernel choice.
//! Each subcommand lives in `src/cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Embed(cli::embed::EmbedArgs),
    /// Time the forward pass on synthetic token ids.
    Bench(cli::bench::BenchArgs),
    /// Show the model, the detected CPU features and the kernels that will run.
    Info(cli::info::InfoArgs),
    /// Save an int8 copy of a model (per-channel int8 Linear weights + scales) that loads
    /// instantly and runs at --precision int8.
    Quantize(cli::quantize::QuantizeArgs),
    /// Measure the kernel paths on this CPU at the model's GEMM shapes and rewrite the cache
    /// that loads read (the choice `info` shows).
    Tune(cli::tune::TuneArgs),
    /// Serve embeddings over HTTP (OpenAI /v1/embeddings and TEI /embed): runs the
    /// e5embed-server binary with these arguments.
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    e5embed::tokenize::quiet_caught_panics();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Embed(a) => cli::embed::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::Quantize(a) => cli::quantize::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Tune(a) => cli::tune::run(a),
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
