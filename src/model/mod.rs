//! The BERT forward pass, twice: [`reference`](mod@reference) is the plain, readable one (one function per
//! layer, scalar kernels, one text at a time) and [`forward`] is the one the engine runs
//! (weights prepacked for the detected ISA by [`linear`], fused epilogues, all texts of a
//! batch packed into one token matrix without padding, ops split over the pool by
//! `parallel` into buffers from [`scratch`]). Tests hold the fast one to the reference and
//! both to ONNX Runtime. [`smooth`] holds the int8 recipe and its calibration, which runs
//! the same forward at f32.

pub mod forward;
pub mod linear;
pub mod packed_cache;
pub(crate) mod parallel;
pub mod reference;
pub mod scratch;
pub mod smooth;

pub use forward::FastModel;
pub use linear::Paths;
pub use scratch::Scratch;
pub use smooth::Int8Recipe;

/// Numeric precision of the encoder's four GEMMs per layer (LayerNorm, softmax, residual sums
/// and pooling are f32 in every precision; attention is f32 but on bf16's `vdpbf16ps` path,
/// where its four operands are rounded to bf16 as well: `attention::attention_bf16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights and activations.
    #[default]
    F32,
    /// int8 weights (symmetric, per output channel) and int8 activations (dynamic, per token),
    /// i32 accumulation, f32 epilogues.
    Int8,
    /// bf16 weights and activations (round to nearest even), f32 accumulation and epilogues
    /// (`kernels::bgemm`: AVX512-BF16 `vdpbf16ps`, or the bf16-weight widening path); on the
    /// `vdpbf16ps` path attention's Q, K, V and probabilities in bf16 too, f32 softmax.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Int8, Precision::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::Bf16 => "bf16",
        }
    }

    /// Parses a precision request: a precision, or `auto` (`None`: the embedder chooses, see
    /// `Embedder::precision_reason`).
    pub fn parse_request(s: &str) -> Result<Option<Precision>> {
        if s.trim().eq_ignore_ascii_case("auto") {
            Ok(None)
        } else {
            s.parse().map(Some)
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "int8" | "i8" | "q8" => Ok(Precision::Int8),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(Error::InvalidInput(format!(
                "precision `{other}` is not available; this build supports: f32, int8, bf16 \
                 (or auto)"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

use crate::config::BertConfig;
use crate::error::{Error, Result};

/// Checks token ids against the vocabulary and the length against the position table.
pub(crate) fn validate_ids(cfg: &BertConfig, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::InvalidInput(
            "a token sequence is empty (it needs at least [CLS] and [SEP])".into(),
        ));
    }
    if ids.len() > cfg.max_position_embeddings {
        return Err(Error::InvalidInput(format!(
            "a token sequence has {} tokens; the model's limit is {}",
            ids.len(),
            cfg.max_position_embeddings
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= cfg.vocab_size) {
        return Err(Error::InvalidInput(format!(
            "token id {bad} is outside the vocabulary (size {})",
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// Whether any Linear weight of `w` is stored int8 (a model saved by `e5embed quantize`).
pub(crate) fn is_prequantized(w: &crate::weights::BertWeights) -> bool {
    w.layers.iter().any(|l| {
        [&l.qkv_w, &l.attn_out_w, &l.ffn_up_w, &l.ffn_down_w]
            .iter()
            .any(|m| matches!(m, crate::weights::Matrix::Int8 { .. }))
    })
}
