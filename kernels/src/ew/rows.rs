//! Row ops written once against [`Simd`]; instantiated per ISA in `ew/mod.rs`.
//!
//! All functions take validated slices (`x.len()` a multiple of `cols`, `cols > 0`,
//! `gamma`/`beta` of `cols`).

use crate::math;
use crate::simd::Simd;

/// LayerNorm of each `cols`-wide row in place, PyTorch semantics (biased variance,
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`), in f32 with care:
///
/// 1. shifted sum: `mean0 = x[0] + Σ(x - x[0]) / n`, so a large common offset (the
///    residual stream can sit far from 0) does not eat the sum's precision;
/// 2. corrected two-pass (Chan, Golub & LeVeque): with `d = x - mean0`,
///    `mean = mean0 + Σd/n`, `var = Σd²/n - (Σd/n)²`, which cancels the rounding
///    error left in `mean0` (no `E[x²] - E[x]²` cancellation anywhere);
/// 3. normalize, scale, shift in one FMA chain.
///
/// Two vector accumulators per pass (sums of ~cols/(2·LANES) terms per lane).
#[inline(always)]
pub(crate) unsafe fn layernorm<S: Simd>(
    x: &mut [f32],
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let l = S::LANES;
    let g = gamma.as_ptr();
    let b = beta.as_ptr();
    let inv_n = 1.0 / cols as f32;
    for row in x.chunks_exact_mut(cols) {
        let p = row.as_mut_ptr();
        // Pass 1: shifted sum.
        let shift = *p;
        let vshift = S::splat(shift);
        let (mut a0, mut a1) = (S::zero(), S::zero());
        let mut i = 0;
        while i + 2 * l <= cols {
            a0 = S::add(a0, S::sub(S::load(p.add(i)), vshift));
            a1 = S::add(a1, S::sub(S::load(p.add(i + l)), vshift));
            i += 2 * l;
        }
        if i + l <= cols {
            a0 = S::add(a0, S::sub(S::load(p.add(i)), vshift));
            i += l;
        }
        let mut tail = 0.0f32;
        while i < cols {
            // Scalar tail: a masked lane would contribute (0 - shift).
            tail += *p.add(i) - shift;
            i += 1;
        }
        let mean0 = shift + (S::reduce_add(S::add(a0, a1)) + tail) * inv_n;
        // Pass 2: Σd and Σd² of d = x - mean0.
        let vm0 = S::splat(mean0);
        let (mut s0, mut s1) = (S::zero(), S::zero());
        let (mut q0, mut q1) = (S::zero(), S::zero());
        let mut i = 0;
        while i + 2 * l <= cols {
            let d0 = S::sub(S::load(p.add(i)), vm0);
            let d1 = S::sub(S::load(p.add(i + l)), vm0);
            s0 = S::add(s0, d0);
            s1 = S::add(s1, d1);
            q0 = S::fma(d0, d0, q0);
            q1 = S::fma(d1, d1, q1);
            i += 2 * l;
        }
        if i + l <= cols {
            let d0 = S::sub(S::load(p.add(i)), vm0);
            s0 = S::add(s0, d0);
            q0 = S::fma(d0, d0, q0);
            i += l;
        }
        let (mut ts, mut tq) = (0.0f32, 0.0f32);
        while i < cols {
            let d = *p.add(i) - mean0;
            ts += d;
            tq += d * d;
            i += 1;
        }
        let dmean = (S::reduce_add(S::add(s0, s1)) + ts) * inv_n;
        let mean = mean0 + dmean;
        let var = ((S::reduce_add(S::add(q0, q1)) + tq) * inv_n - dmean * dmean).max(0.0);
        let vm = S::splat(mean);
        let rstd = S::splat(1.0 / (var + eps).sqrt());
        // Pass 3: normalize, scale, shift.
        let mut i = 0;
        while i < cols {
            let n = (cols - i).min(l);
            let v = S::mul(S::sub(S::load_n(p.add(i), n), vm), rstd);
            let y = S::fma(v, S::load_n(g.add(i), n), S::load_n(b.add(i), n));
            S::store_n(p.add(i), y, n);
            i += l;
        }
    }
}

/// `softmax(scale · row)` of each `cols`-wide row in place:
/// `exp(scale·(x - max)) / Σ`, max subtracted first so `exp` sees only `<= 0`.
#[inline(always)]
pub(crate) unsafe fn softmax_scaled<S: Simd>(x: &mut [f32], cols: usize, scale: f32) {
    let l = S::LANES;
    for row in x.chunks_exact_mut(cols) {
        let p = row.as_mut_ptr();
        // Max: vector body, scalar tail (masked zeros would bias the max).
        let mut vmax = S::splat(f32::NEG_INFINITY);
        let mut i = 0;
        while i + l <= cols {
            vmax = S::max(vmax, S::load(p.add(i)));
            i += l;
        }
        let mut mx = S::reduce_max(vmax);
        while i < cols {
            mx = mx.max(*p.add(i));
            i += 1;
        }
        // exp and sum.
        let vm = S::splat(mx);
        let vs = S::splat(scale);
        let mut acc = S::zero();
        let mut i = 0;
        while i < cols {
            let n = (cols - i).min(l);
            let e = math::exp::<S>(S::mul(S::sub(S::load_n(p.add(i), n), vm), vs));
            S::store_n(p.add(i), e, n);
            // Re-load so masked-off lanes count as 0 in the sum.
            acc = S::add(
                acc,
                if n == l {
                    e
                } else {
                    S::load_partial(p.add(i), n)
                },
            );
            i += l;
        }
        let inv = S::splat(1.0 / S::reduce_add(acc));
        let mut i = 0;
        while i < cols {
            let n = (cols - i).min(l);
            S::store_n(p.add(i), S::mul(S::load_n(p.add(i), n), inv), n);
            i += l;
        }
    }
}

/// Exact-erf GELU in place.
#[inline(always)]
pub(crate) unsafe fn gelu<S: Simd>(x: &mut [f32]) {
    let l = S::LANES;
    let p = x.as_mut_ptr();
    let len = x.len();
    let mut i = 0;
    while i < len {
        let n = (len - i).min(l);
        S::store_n(p.add(i), math::gelu::<S>(S::load_n(p.add(i), n)), n);
        i += l;
    }
}
