//! The reference forward: readable first, one function per layer, one text at a time, scalar
//! reference kernels only. It exists to check the fast forward, not to be fast.

use e5embed_kernels::{ew, gemm, Epilogue};

use crate::error::Result;
use crate::weights::{BertWeights, LayerWeights};

/// Runs the encoder on one text's token ids; returns the last hidden state `[tokens, hidden]`.
pub fn forward(w: &BertWeights, ids: &[u32]) -> Result<Vec<f32>> {
    super::validate_ids(&w.config, ids)?;
    let mut x = embeddings(w, ids)?;
    for layer in &w.layers {
        x = encoder_layer(w, layer, &x, ids.len())?;
    }
    Ok(x)
}

/// word + position + token type (always 0) embeddings, then LayerNorm.
fn embeddings(w: &BertWeights, ids: &[u32]) -> Result<Vec<f32>> {
    let h = w.config.hidden_size;
    let mut x = vec![0.0f32; ids.len() * h];
    for (pos, (&id, row)) in ids.iter().zip(x.chunks_exact_mut(h)).enumerate() {
        let word = &w.word_emb[id as usize * h..][..h];
        let position = &w.pos_emb[pos * h..][..h];
        let token_type = &w.type_emb[..h];
        for j in 0..h {
            row[j] = word[j] + position[j] + token_type[j];
        }
    }
    ew::layernorm_reference(&mut x, h, &w.emb_ln_g, &w.emb_ln_b, w.config.layer_norm_eps)?;
    Ok(x)
}

/// One post-LN encoder layer: x1 = LN(x + Attn(x)); out = LN(x1 + FFN(x1)).
fn encoder_layer(w: &BertWeights, l: &LayerWeights, x: &[f32], seq: usize) -> Result<Vec<f32>> {
    let ctx = self_attention(w, l, x, seq)?;
    let x1 = attention_output(w, l, &ctx, x, seq)?;
    let inter = intermediate(w, l, &x1, seq)?;
    output(w, l, &inter, &x1, seq)
}

/// Q, K, V projections, then per head softmax(Q Kᵀ / √d) V. Returns the context `[seq, hidden]`.
fn self_attention(w: &BertWeights, l: &LayerWeights, x: &[f32], seq: usize) -> Result<Vec<f32>> {
    let c = &w.config;
    let h = c.hidden_size;
    let d = c.head_dim();
    let mut qkv = vec![0.0f32; seq * 3 * h];
    gemm::gemm_f32_reference(
        x,
        seq,
        &l.qkv_w.to_f32(),
        3 * h,
        h,
        &mut qkv,
        Epilogue::Bias(&l.qkv_b),
    )?;
    let scale = 1.0 / (d as f32).sqrt();
    let mut ctx = vec![0.0f32; seq * h];
    let mut scores = vec![0.0f32; seq];
    for head in 0..c.num_attention_heads {
        let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
        for i in 0..seq {
            let q = &qkv[i * 3 * h + qo..][..d];
            for (j, s) in scores.iter_mut().enumerate() {
                let k = &qkv[j * 3 * h + ko..][..d];
                *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
            }
            ew::softmax_reference(&mut scores, seq)?;
            let out = &mut ctx[i * h + head * d..][..d];
            for (j, &p) in scores.iter().enumerate() {
                let v = &qkv[j * 3 * h + vo..][..d];
                for (o, &vv) in out.iter_mut().zip(v) {
                    *o += p * vv;
                }
            }
        }
    }
    Ok(ctx)
}

/// Output projection + residual, then LayerNorm.
fn attention_output(
    w: &BertWeights,
    l: &LayerWeights,
    ctx: &[f32],
    residual: &[f32],
    seq: usize,
) -> Result<Vec<f32>> {
    let h = w.config.hidden_size;
    let mut y = vec![0.0f32; seq * h];
    let epi = Epilogue::BiasResidual {
        bias: &l.attn_out_b,
        residual,
    };
    gemm::gemm_f32_reference(ctx, seq, &l.attn_out_w.to_f32(), h, h, &mut y, epi)?;
    ew::layernorm_reference(
        &mut y,
        h,
        &l.attn_ln_g,
        &l.attn_ln_b,
        w.config.layer_norm_eps,
    )?;
    Ok(y)
}

/// FFN up projection with exact erf GELU.
fn intermediate(w: &BertWeights, l: &LayerWeights, x1: &[f32], seq: usize) -> Result<Vec<f32>> {
    let (h, i) = (w.config.hidden_size, w.config.intermediate_size);
    let mut y = vec![0.0f32; seq * i];
    gemm::gemm_f32_reference(
        x1,
        seq,
        &l.ffn_up_w.to_f32(),
        i,
        h,
        &mut y,
        Epilogue::Bias(&l.ffn_up_b),
    )?;
    ew::gelu_erf_reference(&mut y);
    Ok(y)
}

/// FFN down projection + residual, then LayerNorm.
fn output(
    w: &BertWeights,
    l: &LayerWeights,
    inter: &[f32],
    residual: &[f32],
    seq: usize,
) -> Result<Vec<f32>> {
    let (h, i) = (w.config.hidden_size, w.config.intermediate_size);
    let mut y = vec![0.0f32; seq * h];
    let epi = Epilogue::BiasResidual {
        bias: &l.ffn_down_b,
        residual,
    };
    gemm::gemm_f32_reference(inter, seq, &l.ffn_down_w.to_f32(), h, i, &mut y, epi)?;
    ew::layernorm_reference(&mut y, h, &l.ffn_ln_g, &l.ffn_ln_b, w.config.layer_norm_eps)?;
    Ok(y)
}
