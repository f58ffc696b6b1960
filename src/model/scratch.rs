//! The forward's reusable buffers: grown in powers of two up to the token budget as calls
//! need them, never shrunk (flat memory once grown), pages touched up front.

/// Reusable forward buffers, grown (up to the token budget, see `Embedder::take_scratch`) and
/// never shrunk, so memory stays flat whatever the mix of lengths once they hold the largest
/// forward: `2·hidden + max(4·hidden, intermediate)` floats per token (9 KB at e5-small-v2's
/// shapes).
#[derive(Default)]
pub struct Scratch {
    pub(crate) x: Vec<f32>,
    pub(crate) x1: Vec<f32>,
    pub(crate) work: Vec<f32>,
    pub(crate) q: QScratch,
    /// The int8 FFN's intermediate activations (fused path).
    pub(crate) q2: QScratch,
}

/// A buffer whose pages are all touched now, so the process's RSS does not creep up later as
/// larger batches first reach them. Filled with NaN, a poison value: every op writes its
/// output before anything reads it, and a bug that read stale scratch would show as NaN.
fn resident(len: usize) -> Vec<f32> {
    e5embed_kernels::hugepage::filled_vec(len, f32::NAN)
}

/// Quantized activations of one GEMM input (int8 precision only): `[tokens, padded k]` u8
/// rows and their per-token scales.
#[derive(Default)]
pub(crate) struct QScratch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) scales: Vec<f32>,
}

impl QScratch {
    pub(crate) fn ensure(&mut self, tokens: usize, row_bytes: usize) {
        if self.bytes.len() < tokens * row_bytes {
            // Non-zero fill: touches every page now (see `resident`).
            self.bytes = e5embed_kernels::hugepage::filled_vec(tokens * row_bytes, 0x5au8);
        }
        if self.scales.len() < tokens {
            self.scales = resident(tokens);
        }
    }
}

impl Scratch {
    /// Grows the buffers to hold `tokens` rows of a model with this hidden size and work width
    /// (no-op when they already do).
    pub(crate) fn ensure(&mut self, tokens: usize, hidden: usize, work_width: usize) {
        if self.x.len() < tokens * hidden {
            self.x = resident(tokens * hidden);
            self.x1 = resident(tokens * hidden);
        }
        if self.work.len() < tokens * work_width {
            self.work = resident(tokens * work_width);
        }
    }

    /// The last hidden state of the previous forward: `[tokens, hidden]`.
    pub fn hidden(&self, tokens: usize, hidden: usize) -> &[f32] {
        &self.x[..tokens * hidden]
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.x.len() + self.x1.len() + self.work.len() + self.q.scales.len())
            + self.q.bytes.len()
    }
}
