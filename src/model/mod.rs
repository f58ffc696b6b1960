//! The BERT forward pass, twice: [`reference`] is the plain, readable one (one function per
//! layer, scalar kernels, one text at a time) and [`fast`] is the one the engine runs (weights
//! prepacked for the detected ISA, fused epilogues, all texts of a batch packed into one token
//! matrix without padding). Tests hold the fast one to the reference and both to ONNX Runtime.

pub mod fast;
pub mod reference;

pub use fast::FastModel;

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
