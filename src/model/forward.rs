//! The fast forward. All texts of a batch are packed into one `[total_tokens, hidden]` matrix
//! (no padding rows); every per-token op (embeddings, the four GEMMs with fused epilogues,
//! LayerNorm) runs once over it, split by rows across the thread pool; attention runs per text
//! over its own tokens only, so no mask is needed and no FLOP is spent on padding. A long
//! batch runs each layer in groups of whole texts instead, one task per group doing all the
//! layer's ops over its rows ([`layer_groups`]), and a long query the second half of each
//! layer by row shares (`rows_layer`), with the same result bit for bit. A forward
//! is a sequence of steps that can pause between any two (`forward_steps`): callers sharing a
//! pool take turns there (`crate::turns`).

use e5embed_kernels::bgemm::BIsa;
use e5embed_kernels::gemm::PackedMatrix;
use e5embed_kernels::qgemm::{self, QIsa};
use e5embed_kernels::{attention, ew, row_share, Epilogue, Isa};
use rayon::prelude::*;
use std::ops::Range;

use super::linear::{unsigned_gelu_input, Linear, Paths};
use super::parallel::{
    ffn_int8_rows, linear, par_ffn_int8, par_layernorm, par_linear, with_workers_awake, FfnInt8,
};
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

    /// The attention kernel the forward runs.
    pub fn attention_kernel_name(&self) -> &'static str {
        match bf16_attention(self.precision, self.bisa, &self.config) {
            Some(_) => attention::BF16_KERNEL_NAME,
            None => attention::kernel_name(self.isa),
        }
    }

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
        let plan = self.layer_plan(seqs, t, rayon::current_num_threads());
        with_workers_awake(|| {
            for step in from..self.steps() {
                if step > from && pause() {
                    return Ok(Some(step));
                }
                self.step(step, seqs, t, &plan, scratch, timing)?;
            }
            Ok(None)
        })
    }

    /// How this forward's layers run on `threads` threads: in groups of texts
    /// ([`layer_groups`]), by row shares ([`rows_layer`]), or op by op.
    fn layer_plan(&self, seqs: &[&[u32]], t: usize, threads: usize) -> LayerPlan {
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        if let Some(groups) = layer_groups(&lens, threads) {
            return LayerPlan::Groups(groups);
        }
        // Every layer has the same formats: the first one speaks for all.
        match self.layers.first() {
            Some(l) if rows_layer(l, t, threads) => LayerPlan::RowShares,
            _ => LayerPlan::OpByOp,
        }
    }

    /// One step of the forward over the packed tokens (`t` rows); `scratch` is sized for them.
    fn step(
        &self,
        step: usize,
        seqs: &[&[u32]],
        t: usize,
        plan: &LayerPlan,
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
            attn_bf16: bf16_attention(self.precision, self.bisa, &self.config),
            seqs,
            t,
        };
        let op = (step - 1) % LAYER_STEPS;
        match plan {
            LayerPlan::OpByOp => layer_step(&cx, l, op, scratch, timing, None),
            // The whole layer runs in its first step; its other steps have nothing left.
            LayerPlan::Groups(groups) if op == 0 => layer_grouped(&cx, l, groups, scratch, timing),
            LayerPlan::RowShares if op == 0 => layer_rows(&cx, l, scratch, timing),
            LayerPlan::Groups(_) | LayerPlan::RowShares => Ok(()),
        }
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

/// How a forward runs its layers, decided once per forward ([`FastModel::forward_steps`]).
enum LayerPlan {
    /// Each op split across the pool ([`layer_step`]).
    OpByOp,
    /// QKV and attention op by op, the rest by row shares ([`layer_rows`]).
    RowShares,
    /// One task per group of whole texts ([`layer_grouped`]).
    Groups(Vec<Range<usize>>),
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
    /// Attention in bf16 on this path (a bf16 model whose path has `vdpbf16ps`:
    /// [`bf16_attention`]); `None`: f32 on `isa`.
    pub attn_bf16: Option<BIsa>,
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
        attn_bf16,
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
                    match attn_bf16 {
                        Some(b) => {
                            attention::attention_bf16_par(b, q, len, heads, d, out, threads)?
                        }
                        None => attention::attention_f32_par(isa, q, len, heads, d, out, threads)?,
                    }
                }
            } else {
                spans.into_par_iter().try_for_each(|(o, len, out)| {
                    let q = &qkv[o * 3 * h..(o + len) * 3 * h];
                    attend(isa, attn_bf16, q, len, heads, d, out)
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

/// The bf16 path attention runs on in a model of this precision, or `None` (f32): bf16
/// models whose path has `vdpbf16ps` ([`attention::bf16_supported`]) round Q, K, V and the
/// probabilities to bf16 too, as their GEMMs round activations (kernels/PERF.md, "bf16
/// attention").
pub(crate) fn bf16_attention(precision: Precision, bisa: BIsa, c: &BertConfig) -> Option<BIsa> {
    (precision == Precision::Bf16 && attention::bf16_supported(bisa, c.head_dim())).then_some(bisa)
}

/// One text's attention on the calling thread: bf16 on `attn`'s path, else f32 on `isa`.
fn attend(
    isa: Isa,
    attn: Option<BIsa>,
    qkv: &[f32],
    len: usize,
    heads: usize,
    d: usize,
    out: &mut [f32],
) -> Result<()> {
    match attn {
        Some(b) => attention::attention_bf16(b, qkv, len, heads, d, out)?,
        None => attention::attention_f32(isa, qkv, len, heads, d, out)?,
    }
    Ok(())
}

/// Rows (tokens) of whole consecutive texts a group of [`layer_groups`] gathers before it
/// closes.
pub const GROUP_ROWS: usize = 128;
/// Groups per thread a batch needs before its layers run group by group.
pub const GROUPS_PER_THREAD: usize = 4;
/// Rows per pass of the FFN inside a group, about: its `[rows, intermediate]` activations
/// stay in the core's L2.
const FFN_ROWS: usize = 128;

/// How a forward over texts of these lengths runs its layers on `threads` threads: `None`,
/// op by op over all rows, each op split across the pool (a query, a short batch); or in
/// groups of whole consecutive texts of at least [`GROUP_ROWS`] rows each (the texts left
/// at the end join the last group), when there are at least [`GROUPS_PER_THREAD`] groups
/// per thread. A group is a
/// task that runs the whole layer over its rows on one thread (QKV, attention per text,
/// output projection, LayerNorm, the FFN in passes of `FFN_ROWS`, LayerNorm), so each op's
/// input is still in that core's cache from the op before, instead of streaming a long
/// batch's `[tokens, 1536]` activations through memory between ops; and the threads meet
/// once per layer instead of seven times. Every row is computed by the same kernels in the
/// same order either way, so the vectors are bitwise the same (tests/invariance.rs).
pub fn layer_groups(lens: &[usize], threads: usize) -> Option<Vec<Range<usize>>> {
    let mut groups = Vec::new();
    let (mut start, mut rows) = (0, 0);
    for (i, &len) in lens.iter().enumerate() {
        rows += len;
        if rows >= GROUP_ROWS {
            groups.push(start..i + 1);
            (start, rows) = (i + 1, 0);
        }
    }
    if start < lens.len() {
        // The texts left over: a group of their own if it is the only one, else added to
        // the last group (a few rows alone would stream all the layer's weights for them).
        match groups.last_mut() {
            Some(last) => last.end = lens.len(),
            None => groups.push(start..lens.len()),
        }
    }
    (groups.len() >= GROUPS_PER_THREAD * threads.max(1)).then_some(groups)
}

/// One group's texts and its rows of the scratch buffers.
struct Group<'a> {
    seqs: &'a [&'a [u32]],
    rows: usize,
    x: &'a mut [f32],
    x1: &'a mut [f32],
    work: &'a mut [f32],
    q: (&'a mut [u8], &'a mut [f32]),
    q2: (&'a mut [u8], &'a mut [f32]),
}

/// The first `n` elements of `*buf`, leaving the rest in `*buf`.
fn cut<'a, T>(buf: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (head, tail) = std::mem::take(buf).split_at_mut(n);
    *buf = tail;
    head
}

/// Layer `l` over all rows, one task per group of [`layer_groups`], each on its own rows.
fn layer_grouped(
    cx: &StepCx<'_>,
    l: &FastLayer,
    groups: &[Range<usize>],
    scratch: &mut Scratch,
    timing: &mut OpTimes,
) -> Result<()> {
    let c = cx.config;
    let h = c.hidden_size;
    let ww = work_width(c);
    let (s1, s2, ss) = q_strides(c, l);
    let Scratch { x, x1, work, q, q2 } = scratch;
    let (mut x, mut x1, mut work) = (&mut x[..], &mut x1[..], &mut work[..]);
    let (mut qb, mut qs) = (&mut q.bytes[..], &mut q.scales[..]);
    let (mut q2b, mut q2s) = (&mut q2.bytes[..], &mut q2.scales[..]);
    let mut parts = Vec::with_capacity(groups.len());
    for g in groups {
        let seqs = &cx.seqs[g.clone()];
        let rows: usize = seqs.iter().map(|s| s.len()).sum();
        parts.push(Group {
            seqs,
            rows,
            x: cut(&mut x, rows * h),
            x1: cut(&mut x1, rows * h),
            work: cut(&mut work, rows * ww),
            q: (cut(&mut qb, rows * s1), cut(&mut qs, rows * ss)),
            q2: (cut(&mut q2b, rows * s2), cut(&mut q2s, rows * ss)),
        });
    }
    let strides = (s1, s2, ss);
    let times = parts
        .into_par_iter()
        .map(|g| {
            let mut t = timing.empty_like();
            group_layer(cx.config, (cx.isa, cx.attn_bf16), l, g, strides, &mut t).map(|_| t)
        })
        .collect::<Vec<Result<OpTimes>>>();
    // Thread time over the pool's threads: each op's share of the layer's wall time.
    let threads = rayon::current_num_threads();
    for t in times {
        timing.merge_scaled(&t?, threads);
    }
    Ok(())
}

/// Whether a forward of `t` rows that does not run in groups ([`layer_groups`]) runs each
/// layer's second half by rows ([`layer_rows`]): on more than one thread, when its ops split
/// into one row share per thread ([`row_share`]; from 512 rows on 2 threads they split into
/// more, and a thread's FFN weights then pass through its cache once per share: a 4 x 128
/// bf16 forward was 2.5% slower this way, kernels/PERF.md "Row-share layers"), and when every
/// linear of layer `l` would split `t` rows by rows anyway (above its kernel's column-split
/// limit), so each thread's share of every GEMM is the one the op-by-op forward gives it.
fn rows_layer(l: &FastLayer, t: usize, threads: usize) -> bool {
    threads > 1
        && row_share(t, threads) == t.div_ceil(threads)
        && [&l.qkv, &l.attn_out, &l.ffn_up, &l.ffn_down]
            .iter()
            .all(|w| t > w.column_split_max_m())
}

/// Layer `l` over few texts but many rows (a long query; see [`rows_layer`]): QKV and
/// attention split across the pool as in the op-by-op forward ([`layer_step`]), then two
/// regions of one task per row share ([`row_share`]): the output projection with its
/// LayerNorm, and the FFN with its LayerNorm, each task's rows on one thread. Four parallel
/// regions per layer instead of seven (six at int8, whose FFN is one region either way);
/// each row is computed by the same kernels in the same order, so the result is bitwise the
/// op-by-op forward's.
fn layer_rows(
    cx: &StepCx<'_>,
    l: &FastLayer,
    scratch: &mut Scratch,
    timing: &mut OpTimes,
) -> Result<()> {
    layer_step(cx, l, 0, scratch, timing, None)?;
    layer_step(cx, l, 1, scratch, timing, None)?;
    let c = cx.config;
    let (t, h, inter) = (cx.t, c.hidden_size, c.intermediate_size);
    let threads = rayon::current_num_threads();
    let per = row_share(t, threads);
    let (s1, s2, ss) = q_strides(c, l);
    let Scratch { x, x1, work, q, q2 } = scratch;
    let (x, x1, work) = (
        &mut x[..t * h],
        &mut x1[..t * h],
        &mut work[..t * work_width(c)],
    );
    {
        // x1 = LN(ctx Woᵀ + bo + x), ctx after the QKV rows in `work`.
        let ctx: &[f32] = &work[t * 3 * h..t * 4 * h];
        let x: &[f32] = x;
        let (mut x1, mut qb, mut qs) = (&mut x1[..], &mut q.bytes[..], &mut q.scales[..]);
        let mut tasks = Vec::new();
        for r0 in (0..t).step_by(per) {
            let r = per.min(t - r0);
            let q = (cut(&mut qb, r * s1), cut(&mut qs, r * ss));
            tasks.push((r0, r, cut(&mut x1, r * h), q));
        }
        let run = |(r0, r, x1, q): (usize, usize, &mut [f32], QRows<'_>)| {
            let mut tm = timing.empty_like();
            let (ctx, x) = (&ctx[r0 * h..(r0 + r) * h], &x[r0 * h..(r0 + r) * h]);
            attn_out_rows(c, cx.isa, l, r, ctx, x, x1, q, &mut tm).map(|_| tm)
        };
        for tm in tasks.into_par_iter().map(run).collect::<Vec<_>>() {
            timing.merge_scaled(&tm?, threads);
        }
    }
    {
        // x = LN(GELU(x1 W1ᵀ + b1) W2ᵀ + b2 + x1), each task's activations in its rows of
        // `work` (the QKV and ctx rows there are spent).
        let x1: &[f32] = x1;
        let (mut x, mut work) = (&mut x[..], &mut work[..t * inter]);
        let (mut qb, mut qs) = (&mut q.bytes[..], &mut q.scales[..]);
        let (mut q2b, mut q2s) = (&mut q2.bytes[..], &mut q2.scales[..]);
        let mut tasks = Vec::new();
        for r0 in (0..t).step_by(per) {
            let r = per.min(t - r0);
            let q = (cut(&mut qb, r * s1), cut(&mut qs, r * ss));
            let q2 = (cut(&mut q2b, r * s2), cut(&mut q2s, r * ss));
            tasks.push((r0, r, cut(&mut x, r * h), cut(&mut work, r * inter), q, q2));
        }
        let strides = (s1, s2, ss);
        let run = |(r0, r, x, work, q, q2): RowsTask<'_>| {
            let mut tm = timing.empty_like();
            let x1 = &x1[r0 * h..(r0 + r) * h];
            ffn_layer_rows(c, cx.isa, l, r, x1, x, work, q, q2, strides, &mut tm).map(|_| tm)
        };
        for tm in tasks.into_par_iter().map(run).collect::<Vec<_>>() {
            timing.merge_scaled(&tm?, threads);
        }
    }
    Ok(())
}

/// A task's rows of a quantized-activation buffer: bytes and per-row scales.
type QRows<'a> = (&'a mut [u8], &'a mut [f32]);

/// One task of [`layer_rows`]'s FFN region: its first row, rows, and its rows of `x`, of the
/// work area and of the two quantized-activation buffers.
type RowsTask<'a> = (
    usize,
    usize,
    &'a mut [f32],
    &'a mut [f32],
    QRows<'a>,
    QRows<'a>,
);

/// The whole layer over one group's rows on the calling thread (see [`layer_groups`]).
fn group_layer(
    c: &BertConfig,
    (isa, attn): (Isa, Option<BIsa>),
    l: &FastLayer,
    g: Group<'_>,
    strides: (usize, usize, usize),
    timing: &mut OpTimes,
) -> Result<()> {
    let Group {
        seqs,
        rows: r,
        x,
        x1,
        work,
        q: (qb, qs),
        q2: (q2b, q2s),
    } = g;
    let h = c.hidden_size;
    let (heads, d) = (c.num_attention_heads, c.head_dim());
    let mut clock = timing.start();
    {
        // x1 = LN(attention(x Wqkvᵀ + b) Woᵀ + bo + x)
        let (qkv, rest) = work.split_at_mut(r * 3 * h);
        linear(x, r, &l.qkv, qkv, Epilogue::Bias(&l.qkv_b), (qb, qs))?;
        timing.lap(Op::QkvGemm, &mut clock);
        let ctx = &mut rest[..r * h];
        let mut off = 0;
        for ids in seqs {
            let len = ids.len();
            let q = &qkv[off * 3 * h..(off + len) * 3 * h];
            attend(
                isa,
                attn,
                q,
                len,
                heads,
                d,
                &mut ctx[off * h..(off + len) * h],
            )?;
            off += len;
        }
        timing.lap(Op::Attention, &mut clock);
        attn_out_rows(c, isa, l, r, ctx, x, x1, (qb, qs), timing)?;
    }
    ffn_layer_rows(
        c,
        isa,
        l,
        r,
        x1,
        x,
        work,
        (qb, qs),
        (q2b, q2s),
        strides,
        timing,
    )
}

/// Row strides `(s1, s2, ss)` of the quantized activations a task's rows take in
/// `scratch.q` (`s1` bytes and `ss` scales per row) and `scratch.q2` (`s2`): int8 linears
/// only, all 0 otherwise.
fn q_strides(c: &BertConfig, l: &FastLayer) -> (usize, usize, usize) {
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let int8 = [&l.qkv, &l.attn_out, &l.ffn_up, &l.ffn_down]
        .iter()
        .any(|w| matches!(w, Linear::Int8(_)));
    if int8 {
        (qgemm::padded_k(h.max(inter)), qgemm::padded_k(inter), 1)
    } else {
        (0, 0, 0)
    }
}

/// `x1 = LN(ctx Woᵀ + bo + x)` over `r` rows on the calling thread (`q`: room for their
/// quantized rows at int8).
#[allow(clippy::too_many_arguments)]
fn attn_out_rows(
    c: &BertConfig,
    isa: Isa,
    l: &FastLayer,
    r: usize,
    ctx: &[f32],
    x: &[f32],
    x1: &mut [f32],
    q: (&mut [u8], &mut [f32]),
    timing: &mut OpTimes,
) -> Result<()> {
    let h = c.hidden_size;
    let mut clock = timing.start();
    let epi = Epilogue::BiasResidual {
        bias: &l.attn_out_b,
        residual: &x[..r * h],
    };
    linear(ctx, r, &l.attn_out, &mut x1[..r * h], epi, q)?;
    timing.lap(Op::AttnOutGemm, &mut clock);
    ew::layernorm(
        isa,
        &mut x1[..r * h],
        h,
        &l.attn_ln_g,
        &l.attn_ln_b,
        c.layer_norm_eps,
    )?;
    timing.lap(Op::LayerNorm, &mut clock);
    Ok(())
}

/// `x = LN(GELU(x1 W1ᵀ + b1) W2ᵀ + b2 + x1)` over `r` rows on the calling thread, in even
/// passes of about [`FFN_ROWS`] rows whose `[rows, intermediate]` activations go to `work`
/// (`q`, `q2`: room for the quantized rows at int8, at the strides of [`q_strides`]).
#[allow(clippy::too_many_arguments)]
fn ffn_layer_rows(
    c: &BertConfig,
    isa: Isa,
    l: &FastLayer,
    r: usize,
    x1: &[f32],
    x: &mut [f32],
    work: &mut [f32],
    (qb, qs): (&mut [u8], &mut [f32]),
    (q2b, q2s): (&mut [u8], &mut [f32]),
    (s1, s2, ss): (usize, usize, usize),
    timing: &mut OpTimes,
) -> Result<()> {
    let (h, inter) = (c.hidden_size, c.intermediate_size);
    let mut clock = timing.start();
    let fused = match (&l.ffn_up, &l.ffn_down) {
        (Linear::Int8(up), Linear::Int8(down)) => Some(FfnInt8 {
            up,
            up_b: &l.ffn_up_b,
            down,
            down_b: &l.ffn_down_b,
        }),
        _ => None,
    };
    // Even passes of about FFN_ROWS rows (130 rows: one pass, not 128 + 2).
    let passes = ((r + FFN_ROWS / 2) / FFN_ROWS).max(1);
    let per = r.div_ceil(passes);
    for c0 in (0..r).step_by(per) {
        let cr = per.min(r - c0);
        let x1c = &x1[c0 * h..(c0 + cr) * h];
        let xc = &mut x[c0 * h..(c0 + cr) * h];
        let q = (&mut qb[c0 * s1..], &mut qs[c0 * ss..]);
        if let Some(f) = &fused {
            let q2 = (&mut q2b[c0 * s2..], &mut q2s[c0 * ss..]);
            ffn_int8_rows(x1c, cr, f, xc, q, q2)?;
            timing.lap(Op::FfnUpGemm, &mut clock);
        } else {
            let ffn = &mut work[..cr * inter];
            linear(x1c, cr, &l.ffn_up, ffn, Epilogue::BiasGelu(&l.ffn_up_b), q)?;
            timing.lap(Op::FfnUpGemm, &mut clock);
            let epi = Epilogue::BiasResidual {
                bias: &l.ffn_down_b,
                residual: x1c,
            };
            let q = (&mut qb[c0 * s1..], &mut qs[c0 * ss..]);
            linear(ffn, cr, &l.ffn_down, xc, epi, q)?;
            timing.lap(Op::FfnDownGemm, &mut clock);
        }
    }
    ew::layernorm(
        isa,
        &mut x[..r * h],
        h,
        &l.ffn_ln_g,
        &l.ffn_ln_b,
        c.layer_norm_eps,
    )?;
    timing.lap(Op::LayerNorm, &mut clock);
    Ok(())
}

/// Width of the scratch work area per token: qkv + ctx, or the FFN activations.
pub(crate) fn work_width(c: &BertConfig) -> usize {
    (4 * c.hidden_size).max(c.intermediate_size)
}
