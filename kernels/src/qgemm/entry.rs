//! The int8 GEMM entry points: argument checks, then the scalar reference or the x86-64 / aarch64
//! driver for the matrix's [`QIsa`](super::QIsa).

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use super::arch;
use super::reference::{self, InputMode};
use super::{padded_k, quantize_rows_impl, QIsaKind, QuantizedMatrix};
use crate::buf::AlignedBuf;
use crate::epilogue::{validate as validate_epilogue, Epilogue};
use crate::{shape_err, KernelError};

/// Checks `a: [m, kp]`, `scales: [m]`, the epilogue and `c: [m, n]`.
pub(crate) fn validate_gemm(
    what: &str,
    a: &[u8],
    scales: Option<&[f32]>,
    m: usize,
    b: &QuantizedMatrix,
    c_len: Option<usize>,
    epilogue: &Epilogue,
) -> Result<(), KernelError> {
    let (n, kp) = (b.n, b.kp);
    if a.len() != crate::checked_len(what, &[m, kp])? {
        return shape_err!(
            "{what} ({}): a has {} bytes, expected m*padded_k(k) = {m}*{kp}",
            b.kernel_name(),
            a.len()
        );
    }
    if let Some(s) = scales {
        if s.len() != m {
            return shape_err!(
                "{what} ({}): scales has {} floats, expected m = {m}",
                b.kernel_name(),
                s.len()
            );
        }
    }
    if let Some(len) = c_len {
        if len != crate::checked_len(what, &[m, n])? {
            return shape_err!(
                "{what} ({}): c has {len} elements, expected m*n = {m}*{n}",
                b.kernel_name()
            );
        }
    }
    validate_epilogue(epilogue, m, n)
}

/// `C[m, n] = epilogue(s_a[i]·s_w[j]·Σ_k Aq[i, k]·Wq[j, k])` on `b.isa()`.
///
/// `a: [m, b.k_padded()]` u8 rows from [`quantize_rows`] (any u8 is accepted:
/// the byte is `Aq + 128`), `scales: [m]` their `s_a`, `c: [m, n]` f32 (fully
/// overwritten), epilogue operands as for `gemm_f32` (`bias: [n]`, `residual:
/// [m, n]`). `m = 0` is a no-op. Single-threaded; row sub-slices (a, scales, c,
/// residual rows) can run on different threads with bitwise identical results.
pub fn gemm_u8s8(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    validate_gemm("gemm_u8s8", a, Some(scales), m, b, Some(c.len()), &epilogue)?;
    if m == 0 || b.n == 0 {
        return Ok(());
    }
    match b.isa.kind() {
        QIsaKind::Scalar => {
            reference::gemm_unchecked(a, m, b, reference::Out::F32(c, scales, epilogue))
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        _ => {
            let job = arch::Job::new(
                a,
                m,
                b,
                arch::Out::F32(c.as_mut_ptr(), scales.as_ptr()),
                epilogue,
            );
            // SAFETY: all lengths validated above for (m, n, kp); c is exclusively
            // borrowed (no overlap with inputs); the token in `b` proves the ISA.
            unsafe { arch::run(b.isa.kind(), &job) }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        _ => unreachable!("only Scalar tokens exist off x86-64 and aarch64"),
    }
    Ok(())
}

/// Rows at or below which [`gemm_u8s8_par`] splits the output columns across threads
/// (each streams its share of the weights) instead of the rows (each would stream all
/// of them). Measured on the engine at batch 1 (int8, 2 threads, e5-small-v2-shape):
/// 32 beat 64 and 128 at every length from 48 to 128 tokens (kernels/PERF.md, "A query
/// on two threads").
pub const INT8_COLUMN_SPLIT_MAX_M: usize = 32;

/// [`gemm_u8s8`] on the current rayon pool with `threads` tasks, written in place: for
/// `m <= INT8_COLUMN_SPLIT_MAX_M` each task computes a range of whole weight panels
/// (a query streams its weights once, split between the threads), else an even share
/// of the rows. Bitwise equal to [`gemm_u8s8`] (no result depends on the
/// column or row range a tile is computed in). Same operand contract.
pub fn gemm_u8s8_par(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
    threads: usize,
) -> Result<(), KernelError> {
    validate_gemm(
        "gemm_u8s8_par",
        a,
        Some(scales),
        m,
        b,
        Some(c.len()),
        &epilogue,
    )?;
    let (n, nr, kp) = (b.n, b.nr, b.kp);
    if threads <= 1 || m == 0 || n == 0 || b.isa.kind() == QIsaKind::Scalar {
        return gemm_u8s8(a, scales, m, b, c, epilogue);
    }
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let run_part = |(rows, cols): crate::par::Part, at: *mut f32| {
            let (r0, rn) = (rows.start, rows.len());
            let epi = epilogue.for_rows(r0, rn, n);
            // `at` is C's element (r0, cols.start): r0 < m, cols.start < n (parts are
            // non-empty rectangles of C).
            let out = arch::Out::F32(at, scales[r0..].as_ptr());
            let job = arch::Job::cols(&a[r0 * kp..(r0 + rn) * kp], rn, b, cols, out, n, epi);
            // SAFETY: a, scales, epilogue validated for (m, n, kp) and sliced to this
            // part's rows; `cols` starts on a panel boundary inside 0..n; C rows r0.. at
            // ldc = n and columns `cols` lie inside c (m*n floats, exclusively borrowed
            // for this call), and the parts are disjoint rectangles, so no two tasks
            // write the same element; the token in `b` proves the ISA.
            unsafe { arch::run(b.isa.kind(), &job) }
        };
        crate::par::split_output(c, (m, n), nr, threads, INT8_COLUMN_SPLIT_MAX_M, run_part);
        Ok(())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = (nr, kp);
        unreachable!("only Scalar tokens exist off x86-64 and aarch64")
    }
}

/// Output columns `cols` only: `c_block[m, cols.len()]` (its own row stride
/// `cols.len()`) `= ` those columns of [`gemm_u8s8`], bitwise. `cols.start` must be
/// a multiple of the panel width ([`QuantizedMatrix::panel_width`]) (or `n`) and
/// `cols.end` one too or `n`; the epilogue takes the **full** operands (`bias: [n]`,
/// `residual: [m, n]`). A column range into its own block; [`gemm_u8s8_par`] is the
/// engine's N-split, writing the ranges in place.
pub fn gemm_u8s8_cols(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    cols: std::ops::Range<usize>,
    c_block: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    validate_gemm("gemm_u8s8_cols", a, Some(scales), m, b, None, &epilogue)?;
    let (n, nr) = (b.n, b.nr);
    if cols.start > cols.end
        || cols.end > n
        || !(cols.start.is_multiple_of(nr) || cols.start == n)
        || !(cols.end.is_multiple_of(nr) || cols.end == n)
    {
        return shape_err!(
            "gemm_u8s8_cols ({}): columns {cols:?} must lie in 0..{n}, start at a multiple \
             of NR = {nr} and end at one or at n",
            b.kernel_name()
        );
    }
    let w = cols.len();
    if c_block.len() != crate::checked_len("gemm_u8s8_cols c_block", &[m, w])? {
        return shape_err!(
            "gemm_u8s8_cols ({}): c_block has {} floats, expected m*cols = {m}*{w}",
            b.kernel_name(),
            c_block.len()
        );
    }
    if m == 0 || w == 0 {
        return Ok(());
    }
    match b.isa.kind() {
        QIsaKind::Scalar => {
            // NR = 1 on scalar: compute the range through the reference per column.
            reference::gemm_cols_unchecked(a, scales, m, b, cols, c_block, epilogue)
        }
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        _ => {
            let job = arch::Job::cols(
                a,
                m,
                b,
                cols,
                arch::Out::F32(c_block.as_mut_ptr(), scales.as_ptr()),
                w,
                epilogue,
            );
            // SAFETY: a, scales, epilogue validated for (m, n, kp); cols validated
            // (starts on a panel, inside 0..n); c_block holds m rows of w at ldc = w
            // and is exclusively borrowed; the token in `b` proves the ISA.
            unsafe { arch::run(b.isa.kind(), &job) }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        _ => unreachable!("only Scalar tokens exist off x86-64 and aarch64"),
    }
    Ok(())
}

/// The raw compensated integer dot products `C[m, n] = Σ_k Aq[i, k]·Wq[j, k]`
/// (= `acc − 128·colsum`) as i32, on `b.isa()`: what the kernels compute before
/// the f32 epilogue (integer-exactness tests, or callers with their own epilogue).
pub fn gemm_u8s8_i32(
    a: &[u8],
    m: usize,
    b: &QuantizedMatrix,
    c: &mut [i32],
) -> Result<(), KernelError> {
    validate_gemm(
        "gemm_u8s8_i32",
        a,
        None,
        m,
        b,
        Some(c.len()),
        &Epilogue::None,
    )?;
    if m == 0 || b.n == 0 {
        return Ok(());
    }
    match b.isa.kind() {
        QIsaKind::Scalar => reference::gemm_unchecked(a, m, b, reference::Out::I32(c)),
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        _ => {
            let job = arch::Job::new(a, m, b, arch::Out::I32(c.as_mut_ptr()), Epilogue::None);
            // SAFETY: as in `gemm_u8s8`.
            unsafe { arch::run(b.isa.kind(), &job) }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        _ => unreachable!("only Scalar tokens exist off x86-64 and aarch64"),
    }
    Ok(())
}

thread_local! {
    /// Per-thread f32 rows of [`gemm_u8s8_quantized`] (`chunk x n`), grown on first use.
    static QROWS: std::cell::RefCell<AlignedBuf> = const { std::cell::RefCell::new(AlignedBuf::new()) };
}

/// [`gemm_u8s8`] whose f32 result rows are immediately re-quantized for the next
/// GEMM (as [`quantize_rows`] would, with `k = n`): `out: [m, padded_k(n)]` u8 and
/// `out_scales: [m]`. The fusion point of the FFN: up-projection + GELU writes the
/// down-projection's quantized input directly, and the `[m, 1536]` f32
/// intermediate never leaves the cache.
///
/// Works on chunks of a few MR-row tiles: a chunk's f32 rows go to a per-thread
/// scratch of `chunk x n` floats (≤ 96 KB at n = 1536; allocated on a thread's first
/// call, grown to the largest n seen) and are quantized from there. Bitwise identical
/// to `gemm_u8s8` then `quantize_rows` on `b.isa()`'s quantizer (same per-row
/// arithmetic; rows do not depend on chunking). Same operand contract as
/// [`gemm_u8s8`] (`residual: [m, n]`).
pub fn gemm_u8s8_quantized(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    epilogue: Epilogue,
    out: &mut [u8],
    out_scales: &mut [f32],
) -> Result<(), KernelError> {
    let mode = InputMode::default();
    gemm_u8s8_quantized_impl(a, scales, m, b, epilogue, mode, out, out_scales)
}

/// [`gemm_u8s8_quantized`] quantizing for the next matrix's input mode (SmoothQuant
/// multipliers, unsigned input): bitwise equal to [`gemm_u8s8`] then
/// `next.quantize_input`. `next.k()` must be `b.n()`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_u8s8_quantized_for(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    epilogue: Epilogue,
    next: &QuantizedMatrix,
    out: &mut [u8],
    out_scales: &mut [f32],
) -> Result<(), KernelError> {
    if next.k != b.n {
        return shape_err!(
            "gemm_u8s8_quantized_for: the next matrix has k = {}, expected n = {}",
            next.k,
            b.n
        );
    }
    let mode = next.input_mode();
    gemm_u8s8_quantized_impl(a, scales, m, b, epilogue, mode, out, out_scales)
}

#[allow(clippy::too_many_arguments)]
fn gemm_u8s8_quantized_impl(
    a: &[u8],
    scales: &[f32],
    m: usize,
    b: &QuantizedMatrix,
    epilogue: Epilogue,
    mode: InputMode,
    out: &mut [u8],
    out_scales: &mut [f32],
) -> Result<(), KernelError> {
    let n = b.n;
    let np = padded_k(n);
    validate_gemm(
        "gemm_u8s8_quantized",
        a,
        Some(scales),
        m,
        b,
        None,
        &epilogue,
    )?;
    if out.len() != crate::checked_len("gemm_u8s8_quantized out", &[m, np])?
        || out_scales.len() != m
    {
        return shape_err!(
            "gemm_u8s8_quantized ({}): out has {} bytes and out_scales {} floats, expected \
             m*padded_k(n) = {m}*{np} and m",
            b.kernel_name(),
            out.len(),
            out_scales.len()
        );
    }
    if m == 0 {
        return Ok(());
    }
    let (mr, _) = b.isa.tile();
    // At least 8 rows per chunk (whole MR tiles): amortizes the per-call overhead.
    let chunk = 8usize.div_ceil(mr) * mr;
    QROWS.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.ensure_len(chunk * n);
        let rows = buf.as_mut_slice();
        let mut lo = 0;
        while lo < m {
            let hi = (lo + chunk).min(m);
            let r = hi - lo;
            let epi = epilogue.for_rows(lo, r, n);
            let c = &mut rows[..r * n];
            gemm_u8s8(&a[lo * b.kp..hi * b.kp], &scales[lo..hi], r, b, c, epi)?;
            quantize_rows_impl(
                b.isa,
                c,
                r,
                n,
                mode,
                &mut out[lo * np..hi * np],
                &mut out_scales[lo..hi],
            )?;
            lo = hi;
        }
        Ok(())
    })
}
