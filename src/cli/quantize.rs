//! `e5embed quantize`: save an int8 copy of a model.

use std::path::PathBuf;

use clap::Args;
use e5embed::Error;

use super::{model_dir, IsaArg};

#[derive(Args)]
pub struct QuantizeArgs {
    /// Source model directory (or hub repo id).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (created; its model.safetensors is replaced).
    #[arg(long)]
    out: PathBuf,
    /// The int8 path the file is for: vnni / avxvnni / avx512 (full 8-bit range) or avx2
    /// (7-bit range, no vpmaddubsw saturation). Default: the best this CPU has.
    #[arg(long, env = "E5EMBED_ISA", value_enum, ignore_case = true)]
    isa: Option<IsaArg>,
}

pub fn run(a: QuantizeArgs) -> Result<(), Error> {
    let src = model_dir(&a.model)?;
    let req = match a.isa {
        Some(isa) => e5embed::embedder::parse_isa_spec(isa.name())?,
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
