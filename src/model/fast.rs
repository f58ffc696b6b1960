//! The fast forward. All texts of a batch are packed into one `[total_tokens, hidden]` matrix
//! (no padding rows); every per-token op (embeddings, the four GEMMs with fused epilogues,
//! LayerNorm) runs once over it, split by rows across the thread pool; attention runs per text
//! over its own tokens only, so no mask is needed and no FLOP is spent on padding.

use e5embed_kernels::gemm::{gemm_f32, PackedMatrix};
use e5embed_kernels::{attention, ew, Epilogue, Isa};
use rayon::prelude::*;

use crate::config::BertConfig;
use crate::error::Result;
use crate::weights::BertWeights;

/// One encoder layer with its weights packed for the microkernels.
struct FastLayer {
    qkv: PackedMatrix,
    qkv_b: Vec<f32>,
    attn_out: PackedMatrix,
    attn_out_b: Vec<f32>,
    attn_ln_g: Vec<f32>,
    attn_ln_b: Vec<f32>,
    ffn_up: PackedMatrix,
    ffn_up_b: Vec<f32>,
    ffn_down: PackedMatrix,
    ffn_down_b: Vec<f32>,
    ffn_ln_g: Vec<f32>,
    ffn_ln_b: Vec<f32>,
}

/// The model as the engine runs it: embeddings tables, packed layers, the ISA they target.
pub struct FastModel {
    config: BertConfig,
    isa: Isa,
    word_emb: Vec<f32>,
    pos_emb: Vec<f32>,
    type_emb: Vec<f32>,
    emb_ln_g: Vec<f32>,
    emb_ln_b: Vec<f32>,
    layers: Vec<FastLayer>,
}

/// A GEMM epilogue over the whole token matrix, sliced per row chunk for the threads.
#[derive(Clone, Copy)]
enum Epi<'a> {
    Bias(&'a [f32]),
    BiasGelu(&'a [f32]),
    BiasResidual(&'a [f32], &'a [f32]),
}

impl<'a> Epi<'a> {
    fn rows(self, r0: usize, rows: usize, n: usize) -> Epilogue<'a> {
        match self {
            Epi::Bias(b) => Epilogue::Bias(b),
            Epi::BiasGelu(b) => Epilogue::BiasGelu(b),
            Epi::BiasResidual(bias, r) => Epilogue::BiasResidual {
                bias,
                residual: &r[r0 * n..(r0 + rows) * n],
            },
        }
    }
}

/// Rows per task when splitting a `[m, *]` op across `threads`: whole microkernel tiles
/// (multiples of `mr` rows, so no task ends in an edge tile it did not need).
fn rows_per_task(m: usize, threads: usize, mr: usize) -> usize {
    let per = m.div_ceil(threads.max(1));
    per.div_ceil(mr).max(1) * mr
}

/// `c[m, n] = a[m, k] · Wᵀ` + epilogue, rows split across the current rayon pool.
fn par_gemm(a: &[f32], m: usize, w: &PackedMatrix, c: &mut [f32], epi: Epi<'_>) -> Result<()> {
    let (n, k) = (w.n(), w.k());
    let (mr, _) = e5embed_kernels::gemm::tile(w.isa());
    let per = rows_per_task(m, rayon::current_num_threads(), mr);
    c[..m * n]
        .par_chunks_mut(per * n)
        .enumerate()
        .try_for_each(|(i, cc)| {
            let r0 = i * per;
            let rows = cc.len() / n;
            gemm_f32(
                &a[r0 * k..(r0 + rows) * k],
                rows,
                w,
                cc,
                epi.rows(r0, rows, n),
            )
        })?;
    Ok(())
}

/// LayerNorm over the rows of `x: [m, cols]`, split across the current rayon pool.
fn par_layernorm(
    isa: Isa,
    x: &mut [f32],
    cols: usize,
    g: &[f32],
    b: &[f32],
    eps: f32,
) -> Result<()> {
    let m = x.len() / cols;
    let per = rows_per_task(m, rayon::current_num_threads(), 16);
    x.par_chunks_mut(per * cols)
        .try_for_each(|rows| ew::layernorm(isa, rows, cols, g, b, eps))?;
    Ok(())
}

impl FastModel {
    /// Packs the weights for `isa`. Consumes the unpacked weights so their memory is freed.
    pub fn new(w: BertWeights, isa: Isa) -> Result<Self> {
        let c = w.config.clone();
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                Ok(FastLayer {
                    qkv: PackedMatrix::pack(isa, &l.qkv_w, 3 * h, h)?,
                    qkv_b: l.qkv_b,
                    attn_out: PackedMatrix::pack(isa, &l.attn_out_w, h, h)?,
                    attn_out_b: l.attn_out_b,
                    attn_ln_g: l.attn_ln_g,
                    attn_ln_b: l.attn_ln_b,
                    ffn_up: PackedMatrix::pack(isa, &l.ffn_up_w, i, h)?,
                    ffn_up_b: l.ffn_up_b,
                    ffn_down: PackedMatrix::pack(isa, &l.ffn_down_w, h, i)?,
                    ffn_down_b: l.ffn_down_b,
                    ffn_ln_g: l.ffn_ln_g,
                    ffn_ln_b: l.ffn_ln_b,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FastModel {
            config: c,
            isa,
            word_emb: w.word_emb,
            pos_emb: w.pos_emb,
            type_emb: w.type_emb,
            emb_ln_g: w.emb_ln_g,
            emb_ln_b: w.emb_ln_b,
            layers,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The GEMM microkernel the layers use (for logs and `info`).
    pub fn gemm_kernel_name(&self) -> &'static str {
        self.layers
            .first()
            .map(|l| l.qkv.kernel_name())
            .unwrap_or("none")
    }

    /// Runs the encoder on several texts at once. Must be called inside the rayon pool that
    /// should do the work. Returns the last hidden state of all texts packed in input order,
    /// `[sum of lengths, hidden]`.
    pub fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let c = &self.config;
        for ids in seqs {
            super::validate_ids(c, ids)?;
        }
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let (heads, d, eps) = (c.num_attention_heads, c.head_dim(), c.layer_norm_eps);
        let isa = self.isa;
        let t: usize = seqs.iter().map(|s| s.len()).sum();

        // x: [t, h] — embeddings: word + position + token type 0, then LayerNorm.
        let mut x = vec![0.0f32; t * h];
        let mut rows = x.chunks_exact_mut(h);
        for ids in seqs {
            for (pos, (&id, row)) in ids.iter().zip(rows.by_ref()).enumerate() {
                let word = &self.word_emb[id as usize * h..][..h];
                let position = &self.pos_emb[pos * h..][..h];
                for (((o, &a), &b), &tt) in row
                    .iter_mut()
                    .zip(word)
                    .zip(position)
                    .zip(&self.type_emb[..h])
                {
                    *o = a + b + tt;
                }
            }
        }
        par_layernorm(isa, &mut x, h, &self.emb_ln_g, &self.emb_ln_b, eps)?;

        let mut qkv = vec![0.0f32; t * 3 * h]; // [t, 3h]
        let mut ctx = vec![0.0f32; t * h]; // [t, h]
        let mut x1 = vec![0.0f32; t * h]; // [t, h]
        let mut ffn = vec![0.0f32; t * inter]; // [t, inter]
        for l in &self.layers {
            par_gemm(&x, t, &l.qkv, &mut qkv, Epi::Bias(&l.qkv_b))?;
            // Attention per text over its own rows.
            let mut spans = Vec::with_capacity(seqs.len());
            let mut rest: &mut [f32] = &mut ctx;
            let mut off = 0;
            for ids in seqs {
                let (out, tail) = rest.split_at_mut(ids.len() * h);
                spans.push((off, ids.len(), out));
                rest = tail;
                off += ids.len();
            }
            let qkv_ref = &qkv;
            spans.into_par_iter().try_for_each(|(o, len, out)| {
                let q = &qkv_ref[o * 3 * h..(o + len) * 3 * h];
                attention::attention_f32(isa, q, len, heads, d, out)
            })?;
            // x1 = LN(ctx Woᵀ + bo + x)
            par_gemm(
                &ctx,
                t,
                &l.attn_out,
                &mut x1,
                Epi::BiasResidual(&l.attn_out_b, &x),
            )?;
            par_layernorm(isa, &mut x1, h, &l.attn_ln_g, &l.attn_ln_b, eps)?;
            // ffn = GELU(x1 W1ᵀ + b1); x = LN(ffn W2ᵀ + b2 + x1)
            par_gemm(&x1, t, &l.ffn_up, &mut ffn, Epi::BiasGelu(&l.ffn_up_b))?;
            par_gemm(
                &ffn,
                t,
                &l.ffn_down,
                &mut x,
                Epi::BiasResidual(&l.ffn_down_b, &x1),
            )?;
            par_layernorm(isa, &mut x, h, &l.ffn_ln_g, &l.ffn_ln_b, eps)?;
        }
        Ok(x)
    }
}
