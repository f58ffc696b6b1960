//! The activation quantizers: f32 rows -> u8 `Aq + 128` rows and per-row scales, plain or
//! SmoothQuant-scaled (scheme in the module docs of [`crate::qgemm`]).

use super::reference::{self, InputMode};
#[cfg(target_arch = "x86_64")]
use super::x86;
#[cfg(target_arch = "x86_64")]
use super::QIsaKind;
use super::{padded_k, QIsa};
use crate::{shape_err, KernelError};

/// Checks `a: [m, kp]`, `out: [m, kp]`, `scales: [m]` for the quantizers.
pub(crate) fn validate_quantize(
    what: &str,
    a: &[f32],
    m: usize,
    k: usize,
    out: &[u8],
    scales: &[f32],
) -> Result<(), KernelError> {
    if a.len() != crate::checked_len(what, &[m, k])? {
        return shape_err!("{what}: a has {} floats, expected m*k = {m}*{k}", a.len());
    }
    let kp = padded_k(k);
    if out.len() != crate::checked_len(what, &[m, kp])? {
        return shape_err!(
            "{what}: out has {} bytes, expected m*padded_k(k) = {m}*{kp}",
            out.len()
        );
    }
    if scales.len() != m {
        return shape_err!(
            "{what}: scales has {} floats, expected m = {m}",
            scales.len()
        );
    }
    Ok(())
}

/// Checks an unsigned-input offset: finite, `>= 0`.
pub(crate) fn validate_offset(what: &str, offset: f32) -> Result<(), KernelError> {
    if !(offset.is_finite() && offset >= 0.0) {
        return shape_err!("{what}: offset {offset} is not finite and >= 0");
    }
    Ok(())
}

/// Checks SmoothQuant multipliers: `[k]`, finite, positive.
pub(crate) fn validate_mul(what: &str, mul: &[f32], k: usize) -> Result<(), KernelError> {
    if mul.len() != k {
        return shape_err!("{what}: mul has {} floats, expected k = {k}", mul.len());
    }
    if let Some(i) = mul.iter().position(|x| !(x.is_finite() && *x > 0.0)) {
        return shape_err!("{what}: mul[{i}] = {} is not finite and positive", mul[i]);
    }
    Ok(())
}

/// Quantizes `a: [m, k]` f32 rows to u8 `out: [m, padded_k(k)]` (`Aq + 128`, pad
/// bytes 128) with per-row scales `scales: [m]` (the scheme in the module docs).
/// Bitwise identical on every QIsa (same f32 arithmetic). Non-finite inputs give
/// unspecified (but memory-safe) bytes and scales.
pub fn quantize_rows(
    isa: QIsa,
    a: &[f32],
    m: usize,
    k: usize,
    out: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    quantize_rows_impl(isa, a, m, k, InputMode::default(), out, scales)
}

/// [`quantize_rows`] of `A · diag(mul)`: each element is first multiplied by its
/// column's `mul[j]` (one f32 multiply, the same on every QIsa), then the row is
/// quantized as usual (per-row absmax of the products). SmoothQuant's activation
/// side, fused into the quantization pass (`mul = 1 / s`). `mul: [k]`, finite and
/// positive.
pub fn quantize_rows_smoothed(
    isa: QIsa,
    a: &[f32],
    m: usize,
    k: usize,
    mul: &[f32],
    out: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    validate_mul("quantize_rows_smoothed", mul, k)?;
    let mode = InputMode {
        mul: Some(mul),
        offset: None,
    };
    quantize_rows_impl(isa, a, m, k, mode, out, scales)
}

/// The quantizers' dispatch (`mode.mul`, when present, already validated as `[k]`).
pub(crate) fn quantize_rows_impl(
    isa: QIsa,
    a: &[f32],
    m: usize,
    k: usize,
    mode: InputMode,
    out: &mut [u8],
    scales: &mut [f32],
) -> Result<(), KernelError> {
    validate_quantize("quantize_rows", a, m, k, out, scales)?;
    if mode.mul.is_some_and(|c| c.len() != k) {
        return shape_err!("quantize_rows: mul must have k = {k} floats");
    }
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        QIsaKind::Avx512Vnni | QIsaKind::Amx => {
            // SAFETY: the token proves AVX-512 F/BW/VL/DQ (Amx requires it too); lengths validated (mul: [k]).
            unsafe { x86::quantize_rows_avx512(a, m, k, mode, out, scales) }
        }
        #[cfg(target_arch = "x86_64")]
        QIsaKind::Avx2 | QIsaKind::AvxVnni => {
            // SAFETY: the token proves AVX2 + FMA; lengths validated (mul: [k]).
            unsafe { x86::quantize_rows_avx2(a, m, k, mode, out, scales) }
        }
        _ => reference::quantize_rows_unchecked(a, m, k, mode, out, scales),
    }
    Ok(())
}
