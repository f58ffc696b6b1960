//! The fast forward. All texts of a batch are packed into one `[total_tokens, hidden]` matrix
//! (no padding rows); every per-token op (embeddings, the four GEMMs with fused epilogues,
//! LayerNorm) runs once over it, split by rows across the thread pool; attention runs per text
//! over its own tokens only, so no mask is needed and no FLOP is spent on padding.

use e5embed_kernels::bgemm::{self, BIsa, Bf16Matrix};
use e5embed_kernels::gemm::PackedMatrix;
use e5embed_kernels::qgemm::{self, QIsa, QuantizedMatrix};
use e5embed_kernels::{attention, ew, Epilogue, Isa};
use rayon::prelude::*;

use super::{smooth, Precision};
use crate::config::BertConfig;
use crate::error::Result;
use crate::timing::{Op, OpTimes};
use crate::weights::{BertWeights, Matrix};

/// A Linear layer's weights packed for one kernel family.
pub enum Linear {
    /// f32 weights for the f32 GEMM microkernels.
    F32(PackedMatrix),
    /// int8 weights (symmetric per output channel) for the u8 x s8 kernels; activations are
    /// quantized per token right before the GEMM (see `kernels/src/qgemm/mod.rs`).
    Int8(QuantizedMatrix),
    /// bf16 weights for the bf16 kernels (f32 accumulation; activations rounded to bf16 inside
    /// the GEMM, see `kernels/src/bgemm/mod.rs`).
    Bf16(Bf16Matrix),
}

impl Linear {
    /// `smooth`: the SmoothQuant factors of the weights' input channels (see `smooth`).
    fn new(
        m: Matrix,
        smooth: Option<&[f32]>,
        n: usize,
        k: usize,
        paths: Paths,
        precision: Precision,
    ) -> Result<Self> {
        let Paths { isa, qisa, bisa } = paths;
        Ok(match precision {
            Precision::F32 => Linear::F32(PackedMatrix::pack(
                isa,
                &smooth::to_f32(&m, smooth, k),
                n,
                k,
            )?),
            // bf16 weights stored in the file were widened to f32 exactly at load, so this
            // rounding gives them back bit for bit.
            Precision::Bf16 => Linear::Bf16(Bf16Matrix::from_f32(
                bisa,
                &smooth::to_f32(&m, smooth, k),
                n,
                k,
            )?),
            Precision::Int8 => Linear::Int8(smooth::quantize(qisa, m, smooth, n, k)?),
        })
    }

    pub fn kernel_name(&self) -> &'static str {
        match self {
            Linear::F32(w) => w.kernel_name(),
            Linear::Int8(w) => w.kernel_name(),
            Linear::Bf16(w) => w.kernel_name(),
        }
    }

    /// The int8 weights and scales (for saving a quantized model).
    pub fn int8_parts(&self) -> Option<(Vec<i8>, Vec<f32>)> {
        match self {
            Linear::Int8(w) => Some((w.unpack_weights(), w.scales()[..w.n()].to_vec())),
            Linear::F32(_) | Linear::Bf16(_) => None,
        }
    }
}

/// The kernel path of each precision: f32 GEMM / LayerNorm / attention, int8 GEMM, bf16 GEMM.
#[derive(Debug, Clone, Copy)]
pub struct Paths {
    pub isa: Isa,
    pub qisa: QIsa,
    pub bisa: BIsa,
}

/// One encoder layer with its weights packed for the microkernels.
struct FastLayer {
    qkv: Linear,
    qkv_b: Vec<f32>,
    attn_out: Linear,
    attn_out_b: Vec<f32>,
    attn_ln_g: Vec<f32>,
    attn_ln_b: Vec<f32>,
    ffn_up: Linear,
    ffn_up_b: Vec<f32>,
    ffn_down: Linear,
    ffn_down_b: Vec<f32>,
    ffn_ln_g: Vec<f32>,
    ffn_ln_b: Vec<f32>,
}

/// The model as the engine runs it: embeddings tables, packed layers, the ISA they target.
pub struct FastModel {
    config: BertConfig,
    isa: Isa,
    qisa: QIsa,
    bisa: BIsa,
    precision: Precision,
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

/// Rows per task when splitting a `[m, *]` op across `threads`: an even share. (Rounding
/// the share up to whole MR-row tiles, as before, left the threads unbalanced at the
/// lengths of a query: 128 rows went 72 + 56 on MR = 12. Even shares: int8 batch 1 x 128
/// tokens 8.45 -> 7.92 ms, 64 tokens 4.06 -> 3.82 ms; the edge tile costs less.)
fn rows_per_task(m: usize, threads: usize) -> usize {
    m.div_ceil(threads.max(1)).max(1)
}

/// `c[m, n] = a[m, k] · Wᵀ` + epilogue, rows split across the current rayon pool.
fn par_gemm(a: &[f32], m: usize, w: &PackedMatrix, c: &mut [f32], epi: Epi<'_>) -> Result<()> {
    // Row blocks for large m; column ranges for skinny m (a query), where splitting rows
    // would make every thread stream all the weights. Bitwise equal either way.
    let threads = rayon::current_num_threads();
    e5embed_kernels::gemm::gemm_f32_par(
        a,
        m,
        w,
        &mut c[..m * w.n()],
        epi.rows(0, m, w.n()),
        threads,
    )?;
    Ok(())
}

/// `c[m, n] = a[m, k] · Wᵀ` + epilogue for either weight format. For int8, each task
/// quantizes its own rows of `a` (per token) into `q` and runs the u8 x s8 GEMM on them.
fn par_linear(
    a: &[f32],
    m: usize,
    w: &Linear,
    c: &mut [f32],
    epi: Epi<'_>,
    q: &mut QScratch,
) -> Result<()> {
    let w = match w {
        Linear::F32(w) => return par_gemm(a, m, w, c, epi),
        Linear::Bf16(w) => return par_bf16(a, m, w, c, epi),
        Linear::Int8(w) => w,
    };
    let (n, k, kp) = (w.n(), w.k(), w.k_padded());
    let threads = rayon::current_num_threads();
    if m <= qgemm::INT8_COLUMN_SPLIT_MAX_M && threads > 1 {
        // A query: quantize its few rows once, then each thread streams its share of the
        // weight panels, writing its columns of C in place (bitwise equal to one call).
        let (qa, qs) = (&mut q.bytes[..m * kp], &mut q.scales[..m]);
        par_quantize_input(w, &a[..m * k], m, qa, qs, threads)?;
        let epi = epi.rows(0, m, n);
        qgemm::gemm_u8s8_par(qa, qs, m, w, &mut c[..m * n], epi, threads)?;
        return Ok(());
    }
    let per = rows_per_task(m, threads);
    c[..m * n]
        .par_chunks_mut(per * n)
        .zip(q.bytes[..m * kp].par_chunks_mut(per * kp))
        .zip(q.scales[..m].par_chunks_mut(per))
        .enumerate()
        .try_for_each(|(i, ((cc, qa), qs))| {
            let r0 = i * per;
            let rows = cc.len() / n;
            w.quantize_input(&a[r0 * k..(r0 + rows) * k], rows, qa, qs)?;
            qgemm::gemm_u8s8(qa, qs, rows, w, cc, epi.rows(r0, rows, n))
        })?;
    Ok(())
}

/// `c[m, n] = a[m, k] · bf16(W)ᵀ` + epilogue (f32 accumulation): even row shares across
/// the pool, or for a skinny `m` (a query) column ranges in place, each thread streaming
/// its share of the weights. Bitwise equal to one single-threaded call either way (the bf16 kernels'
/// accumulation order depends on neither rows nor columns, see `kernels/src/bgemm/mod.rs`).
fn par_bf16(a: &[f32], m: usize, w: &Bf16Matrix, c: &mut [f32], epi: Epi<'_>) -> Result<()> {
    let (n, k) = (w.n(), w.k());
    let threads = rayon::current_num_threads();
    bgemm::gemm_bf16_par(
        &a[..m * k],
        m,
        w,
        &mut c[..m * n],
        epi.rows(0, m, n),
        threads,
    )?;
    Ok(())
}

/// `w.quantize_input` of `a: [m, k]` with the rows shared across `threads` tasks (each
/// row's quantization is independent: bitwise equal to one call). At a query's few rows
/// the serial pass was 15% of a forward (int8, 32 tokens), half of it reading rows the
/// other core had just written.
fn par_quantize_input(
    w: &QuantizedMatrix,
    a: &[f32],
    m: usize,
    qa: &mut [u8],
    qs: &mut [f32],
    threads: usize,
) -> Result<()> {
    let (k, kp) = (w.k(), w.k_padded());
    let per = rows_per_task(m, threads);
    a.par_chunks(per * k)
        .zip(qa.par_chunks_mut(per * kp))
        .zip(qs.par_chunks_mut(per))
        .try_for_each(|((a, qa), qs)| w.quantize_input(a, qs.len(), qa, qs))?;
    Ok(())
}

/// The int8 FFN's weights.
struct FfnInt8<'a> {
    up: &'a QuantizedMatrix,
    up_b: &'a [f32],
    down: &'a QuantizedMatrix,
    down_b: &'a [f32],
}

/// `x = GELU(x1 W1ᵀ + b1) W2ᵀ + b2 + x1` in int8, one task per row block doing the whole FFN
/// for its rows (one parallel region instead of three): quantize x1's rows, up-projection
/// whose epilogue (bias, GELU, per-token requantization) writes the down-projection's u8
/// input, down-projection with bias + residual. Bitwise equal to the unfused int8 path.
fn par_ffn_int8(
    x1: &[f32],
    t: usize,
    f: &FfnInt8<'_>,
    x: &mut [f32],
    q: &mut QScratch,
    q2: &mut QScratch,
) -> Result<()> {
    let (h, kp, ip) = (f.up.k(), f.up.k_padded(), f.down.k_padded());
    let per = rows_per_task(t, rayon::current_num_threads());
    x[..t * h]
        .par_chunks_mut(per * h)
        .zip(q.bytes[..t * kp].par_chunks_mut(per * kp))
        .zip(q.scales[..t].par_chunks_mut(per))
        .zip(q2.bytes[..t * ip].par_chunks_mut(per * ip))
        .zip(q2.scales[..t].par_chunks_mut(per))
        .enumerate()
        .try_for_each(|(i, ((((xc, qa), qs), fa), fs))| {
            let r0 = i * per;
            let rows = xc.len() / h;
            let x1_rows = &x1[r0 * h..(r0 + rows) * h];
            f.up.quantize_input(x1_rows, rows, qa, qs)?;
            let epi = Epilogue::BiasGelu(f.up_b);
            qgemm::gemm_u8s8_quantized_for(qa, qs, rows, f.up, epi, f.down, fa, fs)?;
            let epi = Epilogue::BiasResidual {
                bias: f.down_b,
                residual: x1_rows,
            };
            qgemm::gemm_u8s8(fa, fs, rows, f.down, xc, epi)
        })?;
    Ok(())
}

/// Runs `f` on the current thread while the pool's other workers spin, taking its parallel
/// work the moment it is queued, and go back to rayon's sleep when `f` returns.
///
/// Why: a forward is ~7 parallel regions per layer with short serial gaps between them.
/// Left alone, rayon's idle worker falls asleep in those gaps and the next region waits for
/// it to be woken; on this KVM guest that wake-up took about as long as a skinny GEMM half
/// itself (measured at batch 1 x 16 tokens, int8: the two column halves of a split GEMM
/// summed to the call's wall time, i.e. they did not overlap, and 2 threads were slower
/// than 1). The spin lasts only while a forward runs (no spinning while idle), costs
/// nothing when the pool has one thread, and cannot change results (every parallel split
/// is bitwise equal to one thread).
fn with_workers_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    let threads = rayon::current_num_threads();
    let me = rayon::current_thread_index();
    if threads < 2 || me.is_none() {
        return f();
    }
    /// Sets the flag when dropped: the spinners stop even if `f` panics.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| {
                // Popped back by the forward's own thread (it was not stolen in time):
                // nothing to keep awake.
                if rayon::current_thread_index() == me {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let _done = Done(&done);
        f()
    })
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
    let per = rows_per_task(m, rayon::current_num_threads());
    x.par_chunks_mut(per * cols)
        .try_for_each(|rows| ew::layernorm(isa, rows, cols, g, b, eps))?;
    Ok(())
}

impl FastModel {
    /// Packs the weights for the precision's path in `paths` (f32, int8 or bf16). Consumes
    /// the unpacked weights so their memory is freed.
    /// `recipe`: which GEMMs run in int8 and how (used at int8 precision only).
    pub fn new(
        w: BertWeights,
        paths: Paths,
        precision: Precision,
        recipe: &smooth::Int8Recipe,
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
        let layers = w
            .layers
            .into_iter()
            .map(|l| {
                let s = &l.smooth;
                // The down projection's GELU input is one-sided: unsigned int8 (`smooth`).
                let down = lin(l.ffn_down_w, &s[3], h, i, "down")?;
                let (ffn_down, ffn_down_b) =
                    smooth::unsigned_gelu_input(down, l.ffn_down_b, recipe.unsigned_down)?;
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
    fn work_width(&self) -> usize {
        (4 * self.config.hidden_size).max(self.config.intermediate_size)
    }

    /// Allocates `scratch` for up to `tokens` tokens per forward.
    pub fn reserve(&self, scratch: &mut Scratch, tokens: usize) {
        scratch.ensure(tokens, self.config.hidden_size, self.work_width());
        if self.precision == Precision::Int8 {
            let k = self.config.hidden_size.max(self.config.intermediate_size);
            scratch.q.ensure(tokens, qgemm::padded_k(k));
            scratch
                .q2
                .ensure(tokens, qgemm::padded_k(self.config.intermediate_size));
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
        scratch.ensure(t, c.hidden_size, self.work_width());
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
        let c = &self.config;
        let (h, inter) = (c.hidden_size, c.intermediate_size);
        let (heads, d, eps) = (c.num_attention_heads, c.head_dim(), c.layer_norm_eps);
        let isa = self.isa;
        let work_width = self.work_width();
        let Scratch { x, x1, work, q, q2 } = scratch;
        let x = &mut x[..t * h]; // [t, h]: the residual stream, and the output
        let x1 = &mut x1[..t * h]; // [t, h]: after the attention block
        let work = &mut work[..t * work_width];
        let mut clock = timing.start();

        if step == 0 {
            // Embeddings: word + position + token type 0, then LayerNorm.
            let mut rows = x.chunks_exact_mut(h);
            for ids in seqs {
                for (pos, (&id, row)) in ids.iter().zip(rows.by_ref()).enumerate() {
                    let word = &self.word_emb[id as usize * h..][..h];
                    let position = &self.pos_emb[pos * h..][..h];
                    let token_type = &self.type_emb[..h];
                    for (((o, &a), &b), &tt) in
                        row.iter_mut().zip(word).zip(position).zip(token_type)
                    {
                        *o = a + b + tt;
                    }
                }
            }
            par_layernorm(isa, x, h, &self.emb_ln_g, &self.emb_ln_b, eps)?;
            timing.lap(Op::Embeddings, &mut clock);
            return Ok(());
        }
        let l = &self.layers[(step - 1) / LAYER_STEPS];
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
        match (step - 1) % LAYER_STEPS {
            0 => {
                let qkv = &mut work[..t * 3 * h];
                par_linear(x, t, &l.qkv, qkv, Epi::Bias(&l.qkv_b), q)?;
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
                let epi = Epi::BiasResidual(&l.attn_out_b, x);
                par_linear(ctx, t, &l.attn_out, x1, epi, q)?;
                timing.lap(Op::AttnOutGemm, &mut clock);
            }
            3 => {
                par_layernorm(isa, x1, h, &l.attn_ln_g, &l.attn_ln_b, eps)?;
                timing.lap(Op::LayerNorm, &mut clock);
            }
            4 => {
                // ffn = GELU(x1 W1ᵀ + b1), or the whole int8 FFN fused.
                if let Some(ffn) = fused_ffn {
                    par_ffn_int8(x1, t, &ffn, x, q, q2)?;
                } else {
                    let ffn = &mut work[..t * inter];
                    par_linear(x1, t, &l.ffn_up, ffn, Epi::BiasGelu(&l.ffn_up_b), q)?;
                }
                timing.lap(Op::FfnUpGemm, &mut clock);
            }
            5 => {
                // x = ffn W2ᵀ + b2 + x1 (done by step 4 when fused)
                if fused_ffn.is_none() {
                    let ffn = &work[..t * inter];
                    let epi = Epi::BiasResidual(&l.ffn_down_b, x1);
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
}

/// Steps per encoder layer in [`FastModel::forward_steps`]: QKV, attention, output
/// projection, LayerNorm, FFN up, FFN down, LayerNorm.
pub const LAYER_STEPS: usize = 7;

/// Reusable forward buffers, sized once (from the token budget) and never shrunk, so memory
/// stays flat whatever the mix of lengths: `2·hidden + max(4·hidden, intermediate)` floats per
/// token (9 KB at e5-small-v2's shapes).
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    x1: Vec<f32>,
    work: Vec<f32>,
    q: QScratch,
    /// The int8 FFN's intermediate activations (fused path).
    q2: QScratch,
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
struct QScratch {
    bytes: Vec<u8>,
    scales: Vec<f32>,
}

impl QScratch {
    fn ensure(&mut self, tokens: usize, row_bytes: usize) {
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
    fn ensure(&mut self, tokens: usize, hidden: usize, work_width: usize) {
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

#[cfg(test)]
mod tests {
    use super::with_workers_awake;

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn workers_awake_runs_parallel_work_and_returns() {
        for threads in [1, 2, 3] {
            let sum = pool(threads).install(|| {
                with_workers_awake(|| {
                    use rayon::prelude::*;
                    (0..10_000u64).into_par_iter().map(|x| x * x).sum::<u64>()
                })
            });
            assert_eq!(sum, (0..10_000u64).map(|x| x * x).sum::<u64>());
        }
        // Outside any pool: just runs.
        assert_eq!(with_workers_awake(|| 7), 7);
    }

    #[test]
    fn workers_awake_stops_spinning_when_the_forward_panics() {
        // A panic inside must reach the caller, not leave the spinner waiting forever.
        let p = pool(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.install(|| with_workers_awake(|| panic!("forward failed")))
        }));
        assert!(r.is_err());
        // The pool is still usable afterwards.
        assert_eq!(p.install(|| with_workers_awake(|| 1 + 1)), 2);
    }
}
