//! The forward's ops split across the current rayon pool: GEMMs in even row shares (or, for a
//! query's few rows, column ranges in place), the int8 FFN fused per row block, LayerNorm by
//! rows, and the pool's workers kept awake for the length of a forward. Every split is
//! bitwise equal to one single-threaded call.

use e5embed_kernels::bgemm::{self, Bf16Matrix};
use e5embed_kernels::gemm::PackedMatrix;
use e5embed_kernels::qgemm::{self, QuantizedMatrix};
use e5embed_kernels::{ew, Epilogue, Isa};
use rayon::prelude::*;

use super::linear::Linear;
use super::scratch::QScratch;
use crate::error::Result;
use e5embed_kernels::row_share;

/// `c[m, n] = a[m, k] · Wᵀ` + epilogue, rows split across the current rayon pool.
pub(crate) fn par_gemm(
    a: &[f32],
    m: usize,
    w: &PackedMatrix,
    c: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<()> {
    // Row blocks for large m; column ranges for skinny m (a query), where splitting rows
    // would make every thread stream all the weights. Bitwise equal either way.
    let threads = rayon::current_num_threads();
    e5embed_kernels::gemm::gemm_f32_par(
        a,
        m,
        w,
        &mut c[..m * w.n()],
        epi.for_rows(0, m, w.n()),
        threads,
    )?;
    Ok(())
}

/// `c[m, n] = a[m, k] · Wᵀ` + epilogue for either weight format. For int8, each task
/// quantizes its own rows of `a` (per token) into `q` and runs the u8 x s8 GEMM on them.
pub(crate) fn par_linear(
    a: &[f32],
    m: usize,
    w: &Linear,
    c: &mut [f32],
    epi: Epilogue<'_>,
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
        let epi = epi.for_rows(0, m, n);
        qgemm::gemm_u8s8_par(qa, qs, m, w, &mut c[..m * n], epi, threads)?;
        return Ok(());
    }
    let per = row_share(m, threads);
    c[..m * n]
        .par_chunks_mut(per * n)
        .zip(q.bytes[..m * kp].par_chunks_mut(per * kp))
        .zip(q.scales[..m].par_chunks_mut(per))
        .enumerate()
        .try_for_each(|(i, ((cc, qa), qs))| {
            let r0 = i * per;
            let rows = cc.len() / n;
            w.quantize_input(&a[r0 * k..(r0 + rows) * k], rows, qa, qs)?;
            qgemm::gemm_u8s8(qa, qs, rows, w, cc, epi.for_rows(r0, rows, n))
        })?;
    Ok(())
}

/// `c[m, n] = a[m, k] · bf16(W)ᵀ` + epilogue (f32 accumulation): even row shares across
/// the pool, or for a skinny `m` (a query) column ranges in place, each thread streaming
/// its share of the weights. Bitwise equal to one single-threaded call either way (the bf16 kernels'
/// accumulation order depends on neither rows nor columns, see `kernels/src/bgemm/mod.rs`).
pub(crate) fn par_bf16(
    a: &[f32],
    m: usize,
    w: &Bf16Matrix,
    c: &mut [f32],
    epi: Epilogue<'_>,
) -> Result<()> {
    let (n, k) = (w.n(), w.k());
    let threads = rayon::current_num_threads();
    bgemm::gemm_bf16_par(
        &a[..m * k],
        m,
        w,
        &mut c[..m * n],
        epi.for_rows(0, m, n),
        threads,
    )?;
    Ok(())
}

/// `w.quantize_input` of `a: [m, k]` with the rows shared across `threads` tasks (each
/// row's quantization is independent: bitwise equal to one call). At a query's few rows
/// the serial pass was 15% of a forward (int8, 32 tokens), half of it reading rows the
/// other core had just written.
pub(crate) fn par_quantize_input(
    w: &QuantizedMatrix,
    a: &[f32],
    m: usize,
    qa: &mut [u8],
    qs: &mut [f32],
    threads: usize,
) -> Result<()> {
    let (k, kp) = (w.k(), w.k_padded());
    let per = row_share(m, threads);
    a.par_chunks(per * k)
        .zip(qa.par_chunks_mut(per * kp))
        .zip(qs.par_chunks_mut(per))
        .try_for_each(|((a, qa), qs)| w.quantize_input(a, qs.len(), qa, qs))?;
    Ok(())
}

/// The int8 FFN's weights.
pub(crate) struct FfnInt8<'a> {
    pub(crate) up: &'a QuantizedMatrix,
    pub(crate) up_b: &'a [f32],
    pub(crate) down: &'a QuantizedMatrix,
    pub(crate) down_b: &'a [f32],
}

/// `x = GELU(x1 W1ᵀ + b1) W2ᵀ + b2 + x1` in int8, one task per row block doing the whole FFN
/// for its rows (one parallel region instead of three): quantize x1's rows, up-projection
/// whose epilogue (bias, GELU, per-token requantization) writes the down-projection's u8
/// input, down-projection with bias + residual. Bitwise equal to the unfused int8 path.
pub(crate) fn par_ffn_int8(
    x1: &[f32],
    t: usize,
    f: &FfnInt8<'_>,
    x: &mut [f32],
    q: &mut QScratch,
    q2: &mut QScratch,
) -> Result<()> {
    let (h, kp, ip) = (f.up.k(), f.up.k_padded(), f.down.k_padded());
    let per = row_share(t, rayon::current_num_threads());
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
            ffn_int8_rows(x1_rows, rows, f, xc, (qa, qs), (fa, fs))
        })?;
    Ok(())
}

/// The int8 FFN of [`par_ffn_int8`] over `rows` rows on the calling thread: `x1` and `x`
/// hold those rows, `(qa, qs)` and `(fa, fs)` room for their quantized input and
/// intermediate activations (at the matrices' padded K).
pub(crate) fn ffn_int8_rows(
    x1: &[f32],
    rows: usize,
    f: &FfnInt8<'_>,
    x: &mut [f32],
    (qa, qs): (&mut [u8], &mut [f32]),
    (fa, fs): (&mut [u8], &mut [f32]),
) -> Result<()> {
    let (h, kp, ip) = (f.up.k(), f.up.k_padded(), f.down.k_padded());
    let (qa, qs) = (&mut qa[..rows * kp], &mut qs[..rows]);
    let (fa, fs) = (&mut fa[..rows * ip], &mut fs[..rows]);
    let x1 = &x1[..rows * h];
    f.up.quantize_input(x1, rows, qa, qs)?;
    let epi = Epilogue::BiasGelu(f.up_b);
    qgemm::gemm_u8s8_quantized_for(qa, qs, rows, f.up, epi, f.down, fa, fs)?;
    let epi = Epilogue::BiasResidual {
        bias: f.down_b,
        residual: x1,
    };
    qgemm::gemm_u8s8(fa, fs, rows, f.down, &mut x[..rows * h], epi)?;
    Ok(())
}

/// `c[m, n] = a[m, k] · Wᵀ` + epilogue on the calling thread, for either weight format
/// (int8: `a`'s rows quantized per token into `(qa, qs)` first). Bitwise equal to
/// [`par_linear`] over the same rows.
pub(crate) fn linear(
    a: &[f32],
    m: usize,
    w: &Linear,
    c: &mut [f32],
    epi: Epilogue<'_>,
    (qa, qs): (&mut [u8], &mut [f32]),
) -> Result<()> {
    match w {
        Linear::F32(w) => {
            let (n, k) = (w.n(), w.k());
            e5embed_kernels::gemm::gemm_f32(&a[..m * k], m, w, &mut c[..m * n], epi)?;
        }
        Linear::Bf16(w) => {
            let (n, k) = (w.n(), w.k());
            bgemm::gemm_bf16(&a[..m * k], m, w, &mut c[..m * n], epi)?;
        }
        Linear::Int8(w) => {
            let (n, k, kp) = (w.n(), w.k(), w.k_padded());
            let (qa, qs) = (&mut qa[..m * kp], &mut qs[..m]);
            w.quantize_input(&a[..m * k], m, qa, qs)?;
            qgemm::gemm_u8s8(qa, qs, m, w, &mut c[..m * n], epi)?;
        }
    }
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
pub(crate) fn with_workers_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
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
pub(crate) fn par_layernorm(
    isa: Isa,
    x: &mut [f32],
    cols: usize,
    g: &[f32],
    b: &[f32],
    eps: f32,
) -> Result<()> {
    let m = x.len() / cols;
    let per = row_share(m, rayon::current_num_threads());
    x.par_chunks_mut(per * cols)
        .try_for_each(|rows| ew::layernorm(isa, rows, cols, g, b, eps))?;
    Ok(())
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
