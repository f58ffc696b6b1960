//! The fast forward. All texts of a batch are packed into one `[total_tokens, hidden]` matrix
//! (no padding rows); every per-token op (embeddings, the four GEMMs with fused epilogues,
//! LayerNorm) runs once over it, split by rows across the thread pool; attention runs per text
//! over its own tokens only, so no mask is needed and no FLOP is spent on padding. A forward
//! is a sequence of steps that can pause between any two (`forward_steps`): callers sharing a
//! pool take turns there (`crate::turns`).

use e5embed_kernels::bgemm::BIsa;
use e5embed_kernels::gemm::PackedMatrix;
use e5embed_kernels::qgemm::{self, QIsa};
use e5embed_kernels::{attention, Epilogue, Isa};
use rayon::prelude::*;

use super::linear::{unsigned_gelu_input, Linear, Paths};
use super::parallel::{par_ffn_int8, par_layernorm, par_linear, with_workers_awake, FfnInt8};
use super::scratch::Scratch;
use super::smooth::Int8Recipe;
use super::Precision;
use crate::config::BertConfig;
use crate::error::Result;
use crate::timing::{Op, OpTimes};
use crate::weights::{BertWeights, LayerWeights, Table};

/// One encoder layer with its weights packed for the microkernels.
/// (The fields are the model module's: `packed_cache` saves and restores them.)
pub(crate) struct FastLayer {
    pub(super) qkv: Linear,
    pub(super) qkv_b: Vec<f32>,
    pub(super) attn_out: Linear,
    pub(super) attn_out_b: Vec<f32>,
    pub(super) attn_ln_g: Vec<f32>,
    pub(super) attn_ln_b: Vec<f32>,
    pub(super) ffn_up: Linear,
    pub(super) ffn_up_b: Vec<f32>,
    pub(super) ffn_down: Linear,
    /// Corrected for the unsigned input mode's offset where the down projection has it.
    pub(super) ffn_down_b: Vec<f32>,
    pub(super) ffn_ln_g: Vec<f32>,
    pub(super) ffn_ln_b: Vec<f32>,
}

impl FastLayer {
    /// The layer's f32 weights packed for `isa`, borrowed from the loaded weights (the
    /// calibration forward: one layer packed at a time).
    pub(crate) fn f32_view(l: &LayerWeights, c: &BertConfig, isa: Isa) -> Result<FastLayer> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let pack = |m: &crate::weights::Matrix, n, k| -> Result<Linear> {
            Ok(Linear::F32(PackedMatrix::pack(isa, &m.to_f32(), n, k)?))
        };
        Ok(FastLayer {
            qkv: pack(&l.qkv_w, 3 * h, h)?,
            qkv_b: l.qkv_b.clone(),
            attn_out: pack(&l.attn_out_w, h, h)?,
            attn_out_b: l.attn_out_b.clone(),
            attn_ln_g: l.attn_ln_g.clone(),
            attn_ln_b: l.attn_ln_b.clone(),
            ffn_up: pack(&l.ffn_up_w, i, h)?,
            ffn_up_b: l.ffn_up_b.clone(),
            ffn_down: pack(&l.ffn_down_w, h, i)?,
            ffn_down_b: l.ffn_down_b.clone(),
            ffn_ln_g: l.ffn_ln_g.clone(),
            ffn_ln_b: l.ffn_ln_b.clone(),
        })
    }
}

/// The model as the engine runs it: embeddings tables, packed layers, the ISA they target.
/// Built by packing loaded weights ([`FastModel::new`]) or from the packed-weights cache
/// (`packed_cache`, which saves and restores these fields).
pub struct FastModel {
    pub(super) config: BertConfig,
    pub(super) isa: Isa,
    pub(super) qisa: QIsa,
    pub(super) bisa: BIsa,
    pub(super) precision: Precision,
    pub(super) word_emb: Table,
    pub(super) pos_emb: Vec<f32>,
    pub(super) type_emb: Vec<f32>,
    pub(super) emb_ln_g: Vec<f32>,
    pub(super) emb_ln_b: Vec<f32>,
    pub(super) layers: Vec<FastLayer>,
}

impl FastModel {
    /// Packs the weights for the precision's path in `paths` (f32, int8 or bf16). Consumes
    /// the unpacked weights so their memory is freed.
    /// `recipe`: which GEMMs run in int8 and how (used at int8 precision only).
    pub fn new(
        w: BertWeights,
        paths: Paths,
        precision: Precision,
        recipe: &Int8Recipe,
    ) -> Result<Self> {
        let Paths { isa, qisa, bisa } = paths;
        let c = w.config.clone();
        let (h, i) = (c.hidden_size, c.intermediate_size);
        // Which GEMMs run in int8 at int8 precision (measured, tools/accuracy on
        // all-MiniLM-L6-v2, cosine of int8 to f32 over 3,000 sentences, AVX-512 VNNI): all
        // four int8 without smoothing: mean 0.99751, min 0.98750 (the QKV input, the
        // LayerNorm output with its outlier channels, hurts most); with SmoothQuant on the
        // QKV and FFN-up inputs (`smooth`): mean 0.99901, min 0.99544, so all four are int8.
        // The AVX2 path's 7-bit weights cannot take the difficulty SmoothQuant moves into
        // them: there QKV stays f32 and nothing is smoothed (`smooth::Int8Recipe::default_for`).
        // `smooth::Int8Recipe` holds these choices (an experiment may ask for others).
        let lin = |m, s: &Option<Vec<f32>>, n, k, which: &str| {
            let p = if precision == Precision::Int8 && !recipe.is_int8(which) {
                Precision::F32
            } else {
                precision
            };
            Linear::new(m, s.as_deref(), n, k, paths, p)
        };
        // Packed in parallel on the caller's rayon pool (the embedder's, at load); the first
        // error in layer order is reported.
        let layers = w
            .layers
            .into_par_iter()
            .map(|l| {
                let s = &l.smooth;
                // The down projection's GELU input is one-sided: unsigned int8 (`smooth`).
                let down = lin(l.ffn_down_w, &s[3], h, i, "down")?;
                let (ffn_down, ffn_down_b) =
                    unsigned_gelu_input(down, l.ffn_down_b, recipe.unsigned_down)?;
                Ok(FastLayer {
                    qkv: lin(l.qkv_w, &s[0], 3 * h, h, "qkv")?,
                    qkv_b: l.qkv_b,
                    attn_out: lin(l.attn_out_w, &s[1], h, h, "out")?,
                    attn_out_b: l.attn_out_b,
                    attn_ln_g: l.attn_ln_g,
                    attn_ln_b: l.attn_ln_b,
                    ffn_up: lin(l.ffn_up_w, &s[2], i, h, "up")?,
                    ffn_up_b: l.ffn_up_b,
                    ffn_down,
                    ffn_down_b,
                    ffn_ln_g: l.ffn_ln_g,
                    ffn_ln_b: l.ffn_ln_b,
                })
            })
            .collect::<Vec<Result<FastLayer>>>()
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(FastModel {
            config: c,
            isa,
            qisa,
            bisa,
            precision,
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

    /// The int8 kernel path (used when the precision is int8).
    pub fn qisa(&self) -> QIsa {
        self.qisa
    }

    /// The bf16 kernel path (used when the precision is bf16).
    pub fn bisa(&self) -> BIsa {
        self.bisa
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Per layer: the four Linear layers as (tensor name stem, weights), for saving.
    pub fn linears(&self) -> Vec<[(&'static str, &Linear); 4]> {
        self.layers
            .iter()
            .map(|l| {
                [
                    ("attention.self.qkv", &l.qkv),
                    ("attention.output.dense", &l.attn_out),
                    ("intermediate.dense", &l.ffn_up),
                    ("output.dense", &l.ffn_down),
                ]
            })
            .collect()
    }

    /// The GEMM microkernels the layers use, QKV / out / FFN up / FFN down (for logs and
    /// `info`), e.g. `gemm_f32_avx512_12x32` or a mix at int8 precision.
    pub fn gemm_kernel_name(&self) -> String {
        let Some(l) = self.layers.first() else {
            return "none".into();
        };
        let names = [&l.qkv, &l.attn_out, &l.ffn_up, &l.ffn_down].map(|w| w.kernel_name());
        if names.iter().all(|n| *n == names[0]) {
            names[0].to_owned()
        } else {
            format!(
                "qkv {}, out {}, up {}, down {}",
                names[0], names[1], names[2], names[3]
            )
        }
    }

    /// Width of the scratch work area per token: qkv + ctx, or the FFN activations.
    /// Allocates `scratch` for up to `tokens` tokens per forward.
    pub fn reserve(&self, scratch: &mut Scratch, tokens: usize) {
        scratch.ensure(tokens, self.config.hidden_size, work_width(&self.config));
        if self.precision == Precision::Int8 {
            let k = self.config.hidden_size.max(self.config.intermediate_size);
            scratch.q.ensure(tokens, qgemm::padded_k(k));
            scratch
                .q2
                .ensure(tokens, qgemm::padded_k(self.config.intermediate_size));
        }
    }

    /// Reads the word-embedding table in where it is used from the mapped model file (a long
    /// job touches most of its rows anyway); nothing for a table already in memory.
    pub fn read_in_word_table(&self) {
        if let Table::Mapped(m) = &self.word_emb {
            m.read_in();
        }
    }

    /// Runs the encoder on several texts at once. Must be called inside the rayon pool that
    /// should do the work. On return `scratch.hidden(t)` holds the last hidden state of all
    /// texts packed in input order, `[sum of lengths, hidden]`.
    pub fn forward(
        &self,
        seqs: &[&[u32]],
        scratch: &mut Scratch,
        timing: &mut OpTimes,
    ) -> Result<()> {
        self.forward_steps(seqs, scratch, timing, 0, &|| false)
            .map(|_| ())
    }

    /// Steps of a forward of this model: the embeddings, then [`LAYER_STEPS`] per layer.
    pub fn steps(&self) -> usize {
        1 + LAYER_STEPS * self.layers.len()
    }

    /// Runs the forward from step `from` (0: the start) until it ends (`Ok(None)`) or, at a
    /// step boundary after at least one step, `pause()` says so: then `Ok(Some(next))`, and
    /// calling again with `from = next` and the same `seqs` and `scratch` carries on. The
    /// result does not depend on where it paused (each step reads only what earlier steps left
    /// in `scratch`). Must be called inside the rayon pool that should do the work.
    pub fn forward_steps(
        &self,
        seqs: &[&[u32]],
        scratch: &mut Scratch,
        timing: &mut OpTimes,
        from: usize,
        pause: &(dyn Fn() -> bool + Sync),
    ) -> Result<Option<usize>> {
        let c = &self.config;
        for ids in seqs {
            super::validate_ids(c, ids)?;
        }
        let t: usize = seqs.iter().map(|s| s.len()).sum();
        scratch.ensure(t, c.hidden_size, work_width(&self.config));
        if self.precision == Precision::Int8 {
            let (h, inter) = (c.hidden_size, c.intermediate_size);
            scratch.q.ensure(t, qgemm::padded_k(h.max(inter)));
            scratch.q2.ensure(t, qgemm::padded_k(inter));
        }
        with_workers_awake(|| {
            for step in from..self.steps() {
                if step > from && pause() {
                    return Ok(Some(step));
                }
                self.step(step, seqs, t, scratch, timing)?;
            }
            Ok(None)
        })
    }

    /// One step of the forward over the packed tokens (`t` rows); `scratch` is sized for them.
    fn step(
        &self,
        step: usize,
        seqs: &[&[u32]],
        t: usize,
        scratch: &mut Scratch,
        timing: &mut OpTimes,
    ) -> Result<()> {
        if step == 0 {
            return embed_step(
                &self.config,
                self.isa,
                &self.tables(),
                seqs,
                t,
                scratch,
                timing,
            );
        }
        let l = &self.layers[(step - 1) / LAYER_STEPS];
        let cx = StepCx {
            config: &self.config,
            isa: self.isa,
            seqs,
            t,
        };
        layer_step(&cx, l, (step - 1) % LAYER_STEPS, scratch, timing, None)
    }

    /// The embedding tables and their LayerNorm.
    fn tables(&self) -> Tables<'_> {
        Tables {
            word: &self.word_emb,
            pos: &self.pos_emb,
            token_type: &self.type_emb,
            ln_g: &self.emb_ln_g,
            ln_b: &self.emb_ln_b,
        }
    }
}

/// Steps per encoder layer in [`FastModel::forward_steps`]: QKV, attention, output
/// projection, LayerNorm, FFN up, FFN down, LayerNorm.
pub const LAYER_STEPS: usize = 7;

/// The embedding tables a forward starts from, borrowed (the calibration runs on the loaded
/// weights' own tables).
pub(crate) struct Tables<'a> {
    pub word: &'a [f32],
    pub pos: &'a [f32],
    pub token_type: &'a [f32],
    pub ln_g: &'a [f32],
    pub ln_b: &'a [f32],
}

/// What every layer step reads besides the layer: the shapes, the f32 path, the packed texts.
pub(crate) struct StepCx<'a> {
    pub config: &'a BertConfig,
    pub isa: Isa,
    pub seqs: &'a [&'a [u32]],
    /// Total tokens (rows of the packed matrices).
    pub t: usize,
}

/// Called before each GEMM of a layer with the GEMM's index (0 QKV, 1 attention output, 2
/// FFN up, 3 FFN down), its input rows `[t, k]` and `k`: how the SmoothQuant calibration
/// sees the activations without a forward of its own.
pub(crate) type Observer<'a> = &'a mut dyn FnMut(usize, &[f32], usize);

/// Step 0: word + position + token type 0 embeddings, then LayerNorm, into `scratch.x`.
pub(crate) fn embed_step(
    c: &BertConfig,
    isa: Isa,
    tables: &Tables<'_>,
    seqs: &[&[u32]],
    t: usize,
    scratch: &mut Scratch,
    timing: &mut OpTimes,
) -> Result<()> {
    let h = c.hidden_size;
    let mut clock = timing.start();
    let x = &mut scratch.x[..t * h];
    let mut rows = x.chunks_exact_mut(h);
    for ids in seqs {
        for (pos, (&id, row)) in ids.iter().zip(rows.by_ref()).enumerate() {
            let word = &tables.word[id as usize * h..][..h];
            let position = &tables.pos[pos * h..][..h];
            let token_type = &tables.token_type[..h];
            for (((o, &a), &b), &tt) in row.iter_mut().zip(word).zip(position).zip(token_type) {
                *o = a + b + tt;
            }
        }
    }
    par_layernorm(isa, x, h, tables.ln_g, tables.ln_b, c.layer_norm_eps)?;
    timing.lap(Op::Embeddings, &mut clock);
    Ok(())
}

/// Step `op` (0..[`LAYER_STEPS`]) of layer `l` over the packed tokens; `scratch` is sized for
/// them. `observe`, if given, sees each GEMM's input first.
pub(crate) fn layer_step(
    cx: &StepCx<'_>,
    l: &FastLayer,
    op: usize,
    scratch: &mut Scratch,
    timing: &mut OpTimes,
    mut observe: Option<Observer<'_>>,
) -> Result<()> {
    let StepCx {
        config: c,
        isa,
        seqs,
        t,
    } = *cx;
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let (heads, d, eps) = (c.num_attention_heads, c.head_dim(), c.layer_norm_eps);
    let work_width = work_width(c);
    let Scratch { x, x1, work, q, q2 } = scratch;
    let x = &mut x[..t * h]; // [t, h]: the residual stream, and the output
    let x1 = &mut x1[..t * h]; // [t, h]: after the attention block
    let work = &mut work[..t * work_width];
    let mut see = |g: usize, input: &[f32], k: usize| {
        if let Some(f) = observe.as_mut() {
            f(g, input, k);
        }
    };
    let mut clock = timing.start();
    // The int8 FFN runs fused per row block (one step: quantize x1, up-projection + GELU
    // written straight as the down-projection's u8 rows, down-projection + residual).
    let fused_ffn = match (&l.ffn_up, &l.ffn_down) {
        (Linear::Int8(up), Linear::Int8(down))
            if t > qgemm::INT8_COLUMN_SPLIT_MAX_M || rayon::current_num_threads() == 1 =>
        {
            Some(FfnInt8 {
                up,
                up_b: &l.ffn_up_b,
                down,
                down_b: &l.ffn_down_b,
            })
        }
        _ => None,
    };
    // The work area holds qkv [t, 3h] and ctx [t, h] during attention, and the FFN
    // activations [t, inter] after: they are never live at the same time.
    match op {
        0 => {
            see(0, x, h);
            let qkv = &mut work[..t * 3 * h];
            par_linear(x, t, &l.qkv, qkv, Epilogue::Bias(&l.qkv_b), q)?;
            timing.lap(Op::QkvGemm, &mut clock);
        }
        1 => {
            // Attention per text over its own rows.
            let (qkv, rest) = work.split_at_mut(t * 3 * h);
            let ctx = &mut rest[..t * h];
            let mut spans = Vec::with_capacity(seqs.len());
            let mut rest: &mut [f32] = ctx;
            let mut off = 0;
            for ids in seqs {
                let (out, tail) = std::mem::take(&mut rest).split_at_mut(ids.len() * h);
                spans.push((off, ids.len(), out));
                rest = tail;
                off += ids.len();
            }
            let qkv: &[f32] = qkv;
            let threads = rayon::current_num_threads();
            if seqs.len() < threads {
                // Fewer texts than threads (a query): split each text's heads instead.
                for (o, len, out) in spans {
                    let q = &qkv[o * 3 * h..(o + len) * 3 * h];
                    attention::attention_f32_par(isa, q, len, heads, d, out, threads)?;
                }
            } else {
                spans.into_par_iter().try_for_each(|(o, len, out)| {
                    let q = &qkv[o * 3 * h..(o + len) * 3 * h];
                    attention::attention_f32(isa, q, len, heads, d, out)
                })?;
            }
            timing.lap(Op::Attention, &mut clock);
        }
        2 => {
            // x1 = LN(ctx Woᵀ + bo + x)
            let ctx: &[f32] = &work[t * 3 * h..t * 4 * h];
            see(1, ctx, h);
            let epi = Epilogue::BiasResidual {
                bias: &l.attn_out_b,
                residual: x,
            };
            par_linear(ctx, t, &l.attn_out, x1, epi, q)?;
            timing.lap(Op::AttnOutGemm, &mut clock);
        }
        3 => {
            par_layernorm(isa, x1, h, &l.attn_ln_g, &l.attn_ln_b, eps)?;
            timing.lap(Op::LayerNorm, &mut clock);
        }
        4 => {
            // ffn = GELU(x1 W1ᵀ + b1), or the whole int8 FFN fused.
            see(2, x1, h);
            if let Some(ffn) = fused_ffn {
                par_ffn_int8(x1, t, &ffn, x, q, q2)?;
            } else {
                let ffn = &mut work[..t * inter];
                par_linear(x1, t, &l.ffn_up, ffn, Epilogue::BiasGelu(&l.ffn_up_b), q)?;
            }
            timing.lap(Op::FfnUpGemm, &mut clock);
        }
        5 => {
            // x = ffn W2ᵀ + b2 + x1 (done by step 4 when fused)
            if fused_ffn.is_none() {
                let ffn = &work[..t * inter];
                see(3, ffn, inter);
                let epi = Epilogue::BiasResidual {
                    bias: &l.ffn_down_b,
                    residual: x1,
                };
                par_linear(ffn, t, &l.ffn_down, x, epi, q)?;
                timing.lap(Op::FfnDownGemm, &mut clock);
            }
        }
        _ => {
            par_layernorm(isa, x, h, &l.ffn_ln_g, &l.ffn_ln_b, eps)?;
            timing.lap(Op::LayerNorm, &mut clock);
        }
    }
    Ok(())
}

/// Width of the scratch work area per token: qkv + ctx, or the FFN activations.
pub(crate) fn work_width(c: &BertConfig) -> usize {
    (4 * c.hidden_size).max(c.intermediate_size)
}
