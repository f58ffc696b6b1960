//! The one epilogue of every GEMM (f32, int8, bf16): what happens to a finished sum
//! before it is stored.
//!
//! - [`Epilogue`]: the public operands (`bias: [n]`, `residual: [m, n]`), validated once
//!   per call ([`validate`]), sliced to a row range for a split call
//!   ([`Epilogue::for_rows`]).
//! - [`Epilogue::apply`]: the scalar epilogue of one element, in f32 in the kernels'
//!   order (`+bias`, then GELU or `+residual`; GELU in f64): the int8 and bf16
//!   references and every scalar fallback.
//! - [`Epi`]: the same operands as raw pointers for the SIMD kernels, offset to a tile
//!   ([`Epi::at`]); [`Epi::apply`] is the vector epilogue of one vector of sums, the
//!   same operations in the same order. Every SIMD GEMM tile ends through it, so the
//!   epilogue's bits are the same on every path and in every family (GELU aside: the
//!   vector erf vs f64 erf, within the named budget).

use crate::gemm::gelu_f64;
use crate::math;
use crate::simd::Simd;
use crate::{shape_err, KernelError};

/// What happens to the finished `A·Wᵀ` tile before it is stored.
#[derive(Clone, Copy, Debug)]
pub enum Epilogue<'a> {
    /// `C = A·Wᵀ`.
    None,
    /// `C = A·Wᵀ + bias` (`bias: [n]`).
    Bias(&'a [f32]),
    /// `C = gelu(A·Wᵀ + bias)`, exact erf GELU (vectorized erf, see `math::erf`).
    BiasGelu(&'a [f32]),
    /// `C = A·Wᵀ + bias + residual` (`bias: [n]`, `residual: [m, n]` row-major).
    BiasResidual {
        bias: &'a [f32],
        residual: &'a [f32],
    },
}

impl<'a> Epilogue<'a> {
    /// The same epilogue for output rows `r0 .. r0 + rows` of an `n`-column call (the
    /// residual sliced to those rows; bias and the rest unchanged): what a caller splitting
    /// one GEMM by rows passes for each share. Rows outside the residual give an empty
    /// residual, which the GEMM then refuses as a shape error (never a panic here).
    pub fn for_rows(self, r0: usize, rows: usize, n: usize) -> Epilogue<'a> {
        match self {
            Epilogue::BiasResidual { bias, residual } => Epilogue::BiasResidual {
                bias,
                residual: r0
                    .checked_mul(n)
                    .zip((r0 + rows).checked_mul(n))
                    .and_then(|(lo, hi)| residual.get(lo..hi))
                    .unwrap_or(&[]),
            },
            e => e,
        }
    }

    /// The scalar epilogue of element `(i, j)` of an `n`-column output whose finished
    /// sum is `x`: `x`, `x + bias[j]`, `gelu(x + bias[j])` (exact erf in f64, rounded
    /// once to f32), or `(x + bias[j]) + residual[i, j]`, each `+` one f32 addition (the
    /// SIMD kernels' order, so they agree bitwise but for GELU). Panics out of bounds
    /// (callers pass a validated epilogue).
    #[inline(always)]
    pub(crate) fn apply(&self, x: f32, i: usize, j: usize, n: usize) -> f32 {
        match *self {
            Epilogue::None => x,
            Epilogue::Bias(b) => x + b[j],
            Epilogue::BiasGelu(b) => gelu_f64((x + b[j]) as f64) as f32,
            Epilogue::BiasResidual { bias, residual } => (x + bias[j]) + residual[i * n + j],
        }
    }
}

/// Checks the operands against an `[m, n]` output: `bias: [n]`, `residual: [m, n]`.
pub(crate) fn validate(e: &Epilogue, m: usize, n: usize) -> Result<(), KernelError> {
    let check_bias = |b: &[f32]| {
        if b.len() != n {
            shape_err!("gemm: bias has {} floats, expected n = {n}", b.len())
        } else {
            Ok(())
        }
    };
    match e {
        Epilogue::None => Ok(()),
        Epilogue::Bias(b) | Epilogue::BiasGelu(b) => check_bias(b),
        Epilogue::BiasResidual { bias, residual } => {
            check_bias(bias)?;
            if residual.len() != crate::checked_len("gemm residual", &[m, n])? {
                return shape_err!(
                    "gemm: residual has {} floats, expected m*n = {m}*{n}",
                    residual.len()
                );
            }
            Ok(())
        }
    }
}

/// [`Epilogue`] with raw pointers for the SIMD kernels, offset to a tile's first row
/// and column (element `(r, col)` of the tile is at `bias + col`, `residual + r·ldr +
/// col`).
#[derive(Clone, Copy)]
pub(crate) enum Epi {
    None,
    /// `bias[j]` for the tile's columns.
    Bias(*const f32),
    BiasGelu(*const f32),
    /// bias, residual tile origin, residual row stride.
    BiasResidual(*const f32, *const f32, usize),
}

impl Epi {
    /// The operands of a validated epilogue of an `ldr`-column output (the residual's
    /// row stride), at row 0 and column `j0 <= ldr` (slices: no pointer leaves them).
    pub(crate) fn new(e: Epilogue, ldr: usize, j0: usize) -> Epi {
        match e {
            Epilogue::None => Epi::None,
            Epilogue::Bias(b) => Epi::Bias(b[j0..].as_ptr()),
            Epilogue::BiasGelu(b) => Epi::BiasGelu(b[j0..].as_ptr()),
            Epilogue::BiasResidual { bias, residual } => Epi::BiasResidual(
                bias[j0..].as_ptr(),
                residual[j0.min(residual.len())..].as_ptr(),
                ldr,
            ),
        }
    }

    /// The epilogue for the tile at (row `i`, column `j`) of this one.
    ///
    /// # Safety
    /// The offsets stay inside the operands (`j` within the bias, row `i` and column `j`
    /// within the residual, or one past their ends).
    #[inline(always)]
    pub(crate) unsafe fn at(self, i: usize, j: usize) -> Epi {
        match self {
            Epi::None => Epi::None,
            Epi::Bias(b) => Epi::Bias(b.add(j)),
            Epi::BiasGelu(b) => Epi::BiasGelu(b.add(j)),
            Epi::BiasResidual(b, r, ldr) => Epi::BiasResidual(b.add(j), r.add(i * ldr + j), ldr),
        }
    }

    /// The vector epilogue of one vector `x` of finished sums: row `r`, columns
    /// `col .. col + n` (`1 <= n <= S::LANES`, lanes past `n` read nothing): `+bias`, then
    /// GELU or `+residual`, as [`Epilogue::apply`].
    ///
    /// # Safety
    /// The ISA of `S` is available; the operands hold those `n` columns of row `r`.
    #[inline(always)]
    pub(crate) unsafe fn apply<S: Simd>(self, x: S::V, r: usize, col: usize, n: usize) -> S::V {
        match self {
            Epi::None => x,
            Epi::Bias(bias) => S::add(x, S::load_n(bias.add(col), n)),
            Epi::BiasGelu(bias) => math::gelu::<S>(S::add(x, S::load_n(bias.add(col), n))),
            Epi::BiasResidual(bias, res, ldr) => {
                let x = S::add(x, S::load_n(bias.add(col), n));
                S::add(x, S::load_n(res.add(r * ldr + col), n))
            }
        }
    }
}
