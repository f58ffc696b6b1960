//! `e5embed tune`: measure the kernel paths at the model's GEMM shapes and rewrite the cache.

use clap::Args;
use e5embed::Error;

use super::model_dir;

#[derive(Args)]
pub struct TuneArgs {
    /// Model directory or hub id (its shapes are measured; the weights are not read).
    /// Default: the all-MiniLM-L6-v2 test model.
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Print the measurement as JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: TuneArgs) -> Result<(), Error> {
    let dir = model_dir(&a.model)?;
    let config = e5embed::ModelConfig::from_dir(&dir)?;
    let cache = e5embed::tune::default_cache_dir();
    let t = e5embed::tune::load_or_measure(cache.as_deref(), &config.bert, true)?;
    for w in &t.warnings {
        eprintln!("e5embed: warning: {w}");
    }
    if a.json {
        let obj = serde_json::json!({ "cache": t.path, "cpu": e5embed::tune::cpu_model(), "measured": t.tuning });
        println!("{obj}");
        return Ok(());
    }
    println!("cpu              {}", e5embed::tune::cpu_model());
    println!(
        "shapes           m = {} (in cache) + {} (from memory), (n, k) = {:?}",
        t.tuning.shapes.m,
        t.tuning.shapes.streamed_m(),
        t.tuning.shapes.nk
    );
    for line in t.tuning.summary() {
        println!("measured         {line}");
    }
    println!(
        "auto             {} ({})",
        t.tuning.auto, t.tuning.auto_reason
    );
    println!("took             {:.1} ms", t.tuning.measure_ms);
    match &t.path {
        Some(p) => println!("saved            {}", p.display()),
        None => println!("saved            nowhere (no $XDG_CACHE_HOME or $HOME)"),
    }
    Ok(())
}
