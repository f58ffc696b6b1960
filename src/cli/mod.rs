//! The `e5embed` subcommands, one file each, and what they share: the model arguments and
//! their value lists, loading, small formatting helpers.

pub mod bench;
pub mod embed;
pub mod info;
pub mod quantize;
pub mod serve;
pub mod tune;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use e5embed::{Embedder, EmbedderOptions, Error, Pooling, Precision};

/// `--isa` values: a forced kernel path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IsaArg {
    /// Plain Rust, any CPU.
    Scalar,
    /// AVX2 + FMA (int8: vpmaddubsw with 7-bit weights).
    Avx2,
    /// AVX2 f32 with the AVX-VNNI int8 path.
    Avxvnni,
    /// AVX-512 (int8: the best AVX-512 int8 path).
    Avx512,
    /// AVX-512 with the AVX-512 VNNI int8 path.
    Vnni,
    /// AVX-512 with the AVX512-BF16 (vdpbf16ps) bf16 path.
    Avx512bf16,
    /// AVX-512 with the bf16-weights-widened-to-f32 bf16 path.
    Avx512widen,
    /// AVX-512 with the AMX int8 (tdpbusd) and bf16 (tdpbf16ps) tile paths (refused
    /// with the reason where the CPU, OS or Linux lack AMX).
    Amx,
    /// aarch64 NEON (int8: the best aarch64 int8 path; bf16: the best aarch64 bf16 path).
    Neon,
    /// aarch64 NEON with the FEAT_BF16 `bfmmla` bf16 path.
    Neonbf16,
    /// aarch64 NEON with the bf16-weights-widened-to-f32 bf16 path.
    Neonwiden,
}

impl IsaArg {
    /// The name `e5embed::embedder::parse_isa_spec` takes.
    pub fn name(self) -> &'static str {
        match self {
            IsaArg::Scalar => "scalar",
            IsaArg::Avx2 => "avx2",
            IsaArg::Avxvnni => "avxvnni",
            IsaArg::Avx512 => "avx512",
            IsaArg::Vnni => "vnni",
            IsaArg::Avx512bf16 => "avx512bf16",
            IsaArg::Avx512widen => "avx512widen",
            IsaArg::Amx => "amx",
            IsaArg::Neon => "neon",
            IsaArg::Neonbf16 => "neonbf16",
            IsaArg::Neonwiden => "neonwiden",
        }
    }
}

/// `--precision` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    Int8,
    Bf16,
    /// The engine's choice (`info` says which and why).
    Auto,
}

impl PrecisionArg {
    fn precision(self) -> Option<Precision> {
        match self {
            PrecisionArg::F32 => Some(Precision::F32),
            PrecisionArg::Int8 => Some(Precision::Int8),
            PrecisionArg::Bf16 => Some(Precision::Bf16),
            PrecisionArg::Auto => None,
        }
    }
}

/// `--pooling` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    Mean,
    Cls,
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model directory (Hugging Face layout), or a Hugging Face hub repo id
    /// (`owner/name[@revision]`, e.g. intfloat/e5-small-v2): taken from the shared Hugging Face
    /// cache (~/.cache/huggingface/hub, $HF_HOME, $HF_HUB_CACHE) when it is there, else
    /// downloaded once into $E5EMBED_HUB_CACHE or ~/.cache/e5embed/hub (HF_TOKEN, HF_ENDPOINT
    /// and HF_HUB_OFFLINE are honoured). Default: the all-MiniLM-L6-v2 test model in $E5EMBED_MODELS or
    /// ~/.cache/e5embed/models (tools/fetch-models puts it there).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Worker threads (default: the physical cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Force a kernel path (default: the best this CPU has).
    #[arg(long, env = "E5EMBED_ISA", value_enum, ignore_case = true)]
    pub isa: Option<IsaArg>,
    /// Tokens per forward pass (texts are sorted by length and packed up to this budget; at
    /// most 65536).
    #[arg(long)]
    pub max_batch_tokens: Option<usize>,
    /// Developer experiment: the GEMMs that run in int8 at --precision int8 (comma list of
    /// qkv, out, up, down; default: the measured recipe). Used by tools/accuracy.
    #[arg(long, hide = true)]
    pub int8_gemms: Option<String>,
    /// GEMM precision (default auto: int8 for a model saved by `e5embed quantize`, else bf16
    /// where it measured at least 1.2x faster than f32 on this CPU, else f32; `info` says why).
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,
    /// Pooling (default: the model's 1_Pooling/config.json, else mean).
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingArg>,
    /// L2-normalize the vectors: true or false (default: the model's modules.json; without
    /// one, false, as sentence-transformers).
    #[arg(long)]
    pub normalize: Option<bool>,
    /// Do not choose kernels by measurement: the best path of each family by the fixed rule,
    /// and auto = f32 (reproducible benchmarks). Default: measured once per CPU and model
    /// shape, cached in $XDG_CACHE_HOME/e5embed or ~/.cache/e5embed (`e5embed tune`
    /// re-measures); a forced --isa also turns it off.
    #[arg(long)]
    pub no_tune: bool,
    /// Do not use the packed-weights cache: read, convert and pack model.safetensors at this
    /// load and write nothing (reproducible runs; the vectors are bitwise the same). Default:
    /// the packed weights are written once to packed/ in the cache directory and mapped by
    /// later loads.
    #[arg(long)]
    pub no_weight_cache: bool,
}

/// The model directory: a local directory, a hub repo id, or the default test model.
pub fn model_dir(model: &Option<PathBuf>) -> Result<PathBuf, Error> {
    Ok(match model {
        Some(spec) if spec.is_dir() => spec.clone(),
        Some(spec) => e5embed::hub::resolve_model(&spec.to_string_lossy())?,
        None => e5embed::models_dir().join("all-MiniLM-L6-v2"),
    })
}

/// Loads the model the arguments name, with their knobs.
pub fn load(m: &ModelArgs) -> Result<Embedder, Error> {
    let dir = model_dir(&m.model)?;
    let req = match m.isa {
        Some(isa) => e5embed::embedder::parse_isa_spec(isa.name())?,
        None => Default::default(),
    };
    let paths = e5embed::embedder::resolve_paths(req.isa, req.qisa, req.bisa)?;
    let int8_recipe = match &m.int8_gemms {
        Some(list) => Some(e5embed::Int8Recipe {
            gemms: e5embed::Int8Recipe::parse_gemms(list)?,
            ..e5embed::Int8Recipe::default_for(paths.qisa)
        }),
        None => None,
    };
    // Every knob is an `Option` here (unset = the engine's default), so the fields are set
    // directly rather than through the builder methods.
    let mut opts = EmbedderOptions::default();
    opts.threads = m.threads;
    opts.isa = req.isa;
    opts.qisa = req.qisa;
    opts.bisa = req.bisa;
    opts.max_batch_tokens = m.max_batch_tokens;
    opts.precision = m.precision.and_then(PrecisionArg::precision);
    opts.int8_recipe = int8_recipe;
    opts.normalize = m.normalize;
    opts.tune = m.no_tune.then_some(false);
    opts.weight_cache = m.no_weight_cache.then_some(false);
    opts.pooling = m.pooling.map(|p| match p {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Cls => Pooling::Cls,
    });
    Embedder::load_with(dir, &opts)
}

/// The kernel path that runs the GEMMs at the embedder's precision.
pub fn isa_label(e: &Embedder) -> &'static str {
    match e.precision() {
        Precision::F32 => e.isa().name(),
        Precision::Int8 => e.qisa().name(),
        Precision::Bf16 => e.bisa().name(),
    }
}

pub fn io_err(path: &str, source: std::io::Error) -> Error {
    Error::Io {
        path: path.into(),
        source,
    }
}

/// Precisions this build can run.
pub const PRECISIONS: [&str; 3] = ["f32", "int8", "bf16"];

/// Median of a sorted, non-empty slice.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

pub fn mb(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0))
}
