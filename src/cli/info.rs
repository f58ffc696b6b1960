//! `e5embed info`: the model, the CPU's paths, the kernels and precision that will run.

use clap::Args;
use e5embed::Error;

use super::{load, ModelArgs, PRECISIONS};

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<(), Error> {
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
            "attention_kernel": embedder.attention_kernel_name(),
            "precision": embedder.precision().name(),
            "precision_reason": embedder.precision_reason(),
            "int8_path": embedder.qisa().name(),
            "bf16_path": embedder.bisa().name(),
            "amx": e5embed_kernels::amx::status().to_string(),
            "precisions": PRECISIONS,
            "threads": embedder.threads(),
            "max_batch_tokens": embedder.max_batch_tokens(),
            "weights": match embedder.weight_source() {
                e5embed::WeightSource::Cache(p) => serde_json::json!({"source": "cache", "file": p}),
                e5embed::WeightSource::Packed { saved } => {
                    serde_json::json!({"source": "packed", "file": saved})
                }
            },
            "tuning": embedder.tuning().map(|t| serde_json::json!({
                "source": format!("{:?}", t.source).to_lowercase(),
                "cache": t.path,
                "measured": t.tuning,
            })),
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
    println!("attention kernel {}", embedder.attention_kernel_name());
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
    match embedder.tuning() {
        Some(t) => {
            let from = match (t.source, &t.path) {
                (e5embed::tune::Source::Cached, Some(p)) => format!("cached in {}", p.display()),
                (_, Some(p)) => format!(
                    "measured at this load in {:.1} ms, saved to {}",
                    t.tuning.measure_ms,
                    p.display()
                ),
                (_, None) => format!(
                    "measured at this load in {:.1} ms, no cache directory",
                    t.tuning.measure_ms
                ),
            };
            println!(
                "kernel choice    measured, {} x GEMMs of {} rows in cache + {} rows from memory ({from})",
                t.tuning.shapes.nk.len(),
                t.tuning.shapes.m,
                t.tuning.shapes.streamed_m()
            );
            for line in t.tuning.summary() {
                println!("                 {line}");
            }
        }
        None => println!("kernel choice    fixed rule (--no-tune or --isa)"),
    }
    match embedder.weight_source() {
        e5embed::WeightSource::Cache(p) => {
            println!(
                "weights          mapped from the packed-weights cache {}",
                p.display()
            )
        }
        e5embed::WeightSource::Packed { saved: Some(p) } => println!(
            "weights          packed at this load, saved to {}",
            p.display()
        ),
        e5embed::WeightSource::Packed { saved: None } => println!(
            "weights          packed at this load (packed-weights cache off: \
             --no-weight-cache, --isa, a model under 8 MiB or no cache directory)"
        ),
    }
    println!("threads          {}", embedder.threads());
    println!("max batch tokens {}", embedder.max_batch_tokens());
    Ok(())
}
