//! Multi-head self-attention for one unmasked sequence (the engine passes only the
//! real tokens of one text; sequences of a packed batch are separate calls).
//!
//! # Fast path (`fused.rs`), per head `h`
//! 1. Copy `K_h` and `V_h` (rows at stride `3H` in `qkv`) into contiguous rows.
//! 2. For each block of `QB = 2·LANES` queries (32 on AVX-512): pack `Qᵀ` scaled by
//!    `log2(e)/sqrt(d)`, compute the transposed score block `Sᵀ = K Qᵀ`
//!    (`[seq][QB]`, register tiles of 12 keys x 32 queries) with the per-query max
//!    taken in the tile epilogue, `P = 2^(S - max)` lane-wise with the sums, then
//!    `O = P V` (tiles of 12 queries x 32 head columns) scaled by `1/sum` and written
//!    straight into the head's columns of `out` (row stride `H`).
//!
//! # bf16 path (`bf16.rs`, [`attention_bf16`])
//! For bf16 models on the AVX512-BF16 path: `Q`, `K`, `V` and the probabilities rounded
//! to bf16, `QKᵀ` and `P·V` on `vdpbf16ps` (twice the f32 FMA rate on Zen 4), scores,
//! softmax and output in f32; its own thread-local scratch (the bf16 operands of one
//! head and one 8-query block of scores).
//!
//! Scratch per thread (thread-local, grown once to the largest seq seen): K and V
//! rows `seq·d` each and one score block `QB·seq` (32 x 512 x 4 B = 64 KB at seq 512
//! on AVX-512): the full `seq x seq` matrix is never materialized. Softmax is exact
//! (not online): every query of a block sees all `seq` keys before `P V`
//! (measured, `kernels/PERF.md`: at seq 512 the kernel is already at ~70% of the
//! FMA peak with the block in L2).

#[cfg(target_arch = "x86_64")]
mod bf16;
mod fused;
mod reference;

pub use reference::attention_reference;

use crate::bgemm::{BIsa, BIsaKind};
use crate::buf::AlignedBuf;
use crate::isa::Isa;
use crate::{shape_err, KernelError};
use std::cell::RefCell;

pub(crate) fn validate_qkv(
    what: &str,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
) -> Result<(), KernelError> {
    if heads == 0 || head_dim == 0 {
        return shape_err!("{what}: heads ({heads}) and head_dim ({head_dim}) must be > 0");
    }
    let h_all = crate::checked_len(what, &[heads, head_dim])?;
    if qkv.len() != crate::checked_len(what, &[seq, 3, h_all])? {
        return shape_err!(
            "{what}: qkv has {} floats, expected seq*3*heads*head_dim = {seq}*3*{h_all}",
            qkv.len()
        );
    }
    Ok(())
}

pub(crate) fn validate(
    what: &str,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &[f32],
) -> Result<(), KernelError> {
    validate_qkv(what, qkv, seq, heads, head_dim)?;
    let h_all = heads * head_dim;
    if out.len() != crate::checked_len(what, &[seq, h_all])? {
        return shape_err!(
            "{what}: out has {} floats, expected seq*heads*head_dim = {seq}*{h_all}",
            out.len()
        );
    }
    Ok(())
}

#[derive(Default)]
struct Scratch {
    /// K_h rows `[tk][d]`, V_h rows `[seq][dp]`, Qᵀ block `[d][QB]`, Sᵀ block
    /// `[tk][QB]`, `1/sum` per query of the block (see `fused.rs`).
    k: AlignedBuf,
    v: AlignedBuf,
    qt: AlignedBuf,
    st: AlignedBuf,
    inv: AlignedBuf,
}

/// Queries per block (the score block's vector lanes, `2·LANES`): 32 on AVX-512,
/// 16 on AVX2, 2 scalar.
pub fn query_block(isa: Isa) -> usize {
    2 * lanes(isa)
}

fn lanes(isa: Isa) -> usize {
    match isa.kind() {
        crate::IsaKind::Scalar => 1,
        crate::IsaKind::Avx2 => 8,
        crate::IsaKind::Avx512 => 16,
        crate::IsaKind::Neon => 4,
    }
}

fn keys_per_tile(isa: Isa) -> usize {
    match isa.kind() {
        crate::IsaKind::Scalar => fused::KR_SCALAR,
        crate::IsaKind::Avx2 => fused::KR_AVX2,
        crate::IsaKind::Avx512 => fused::KR_AVX512,
        crate::IsaKind::Neon => fused::KR_NEON,
    }
}

/// Name for logs and benchmark labels, e.g. `"attention_f32_avx512_qb32"` (QB =
/// queries per score block).
pub fn kernel_name(isa: Isa) -> &'static str {
    match isa.kind() {
        crate::IsaKind::Scalar => "attention_f32_scalar_qb2",
        crate::IsaKind::Avx2 => "attention_f32_avx2_qb16",
        crate::IsaKind::Avx512 => "attention_f32_avx512_qb32",
        crate::IsaKind::Neon => "attention_f32_neon_qb8",
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Per head `softmax(Q Kᵀ / sqrt(head_dim)) V` into the head's columns of `out`.
///
/// `qkv: [seq, 3·H]` row-major, Q in columns `[0, H)`, K in `[H, 2H)`, V in
/// `[2H, 3H)`, head `h` at `h·head_dim` within each, `H = heads·head_dim`;
/// `out: [seq, H]`. `seq = 0` is a no-op. Single-threaded; uses thread-local scratch.
pub fn attention_f32(
    isa: Isa,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    validate("attention_f32", qkv, seq, heads, head_dim, out)?;
    run(Kind::F32(isa), qkv, seq, heads, head_dim, out)
}

/// Which kernel computes the heads.
#[derive(Clone, Copy)]
enum Kind {
    F32(Isa),
    /// [`attention_bf16`] (checked by its caller: [`bf16_supported`]).
    Bf16,
}

/// All heads into `out` (validated) on the calling thread.
fn run(
    kind: Kind,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    let h_all = heads * head_dim;
    // SAFETY: out holds seq rows of h_all (validated); heads 0..heads cover columns
    // 0..h_all at row stride h_all.
    unsafe {
        heads_into(
            kind,
            qkv,
            seq,
            heads,
            head_dim,
            0..heads,
            out.as_mut_ptr(),
            h_all,
        )
    }
}

/// Whether [`attention_bf16`] runs for this bf16 path and head size: the AVX512-BF16
/// (`vdpbf16ps`) path, an even head size of at most 64.
pub fn bf16_supported(bisa: BIsa, head_dim: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && bisa.kind() == BIsaKind::Avx512Bf16
        && head_dim.is_multiple_of(2)
        && (2..=64).contains(&head_dim)
}

/// Name of the bf16 attention kernel, for logs and benchmark labels.
pub const BF16_KERNEL_NAME: &str = "attention_bf16_avx512bf16_r8";

/// [`attention_f32`] with `Q`, `K`, `V` and the probabilities `P` rounded to bf16 and the
/// two products on `vdpbf16ps` (f32 accumulation, f32 softmax): twice the f32 rate where
/// the instruction runs at twice the FMA's (Zen 4). Not bitwise [`attention_f32`]: within
/// the bf16 rounding of its four operands (`attention/bf16.rs`). An error where
/// [`bf16_supported`] is false.
pub fn attention_bf16(
    bisa: BIsa,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    validate("attention_bf16", qkv, seq, heads, head_dim, out)?;
    check_bf16("attention_bf16", bisa, head_dim)?;
    run(Kind::Bf16, qkv, seq, heads, head_dim, out)
}

fn check_bf16(what: &str, bisa: BIsa, head_dim: usize) -> Result<(), KernelError> {
    if bf16_supported(bisa, head_dim) {
        return Ok(());
    }
    shape_err!(
        "{what}: needs the avx512bf16 bf16 path and an even head size of at most 64 \
         (path {}, head size {head_dim})",
        bisa.name()
    )
}

/// [`attention_bf16`] with the heads split into `threads` ranges on the current rayon
/// pool, as [`attention_f32_par`]. Bitwise equal to [`attention_bf16`].
pub fn attention_bf16_par(
    bisa: BIsa,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    validate("attention_bf16_par", qkv, seq, heads, head_dim, out)?;
    check_bf16("attention_bf16_par", bisa, head_dim)?;
    run_par(Kind::Bf16, qkv, seq, heads, head_dim, out, threads)
}

/// [`attention_f32`] with the heads split into `threads` ranges run as tasks on the
/// current rayon pool, each writing its heads' columns of `out` in place: one sequence
/// (a query) on several threads. Bitwise equal to [`attention_f32`].
pub fn attention_f32_par(
    isa: Isa,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    validate("attention_f32_par", qkv, seq, heads, head_dim, out)?;
    run_par(Kind::F32(isa), qkv, seq, heads, head_dim, out, threads)
}

/// All heads into `out` (validated), split into `threads` head ranges on the pool.
fn run_par(
    kind: Kind,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    out: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    let h_all = heads * head_dim;
    let per = heads.div_ceil(threads.max(1)).max(1);
    if per >= heads || seq == 0 {
        return run(kind, qkv, seq, heads, head_dim, out);
    }
    let op = crate::par::SendPtr(out.as_mut_ptr());
    let ranges: Vec<std::ops::Range<usize>> = (0..heads)
        .step_by(per)
        .map(|s| s..(s + per).min(heads))
        .collect();
    // The first error of any task (none expected: the shapes were validated above).
    let first_err: std::sync::Mutex<Result<(), KernelError>> = std::sync::Mutex::new(Ok(()));
    crate::par::run_parts(ranges, |r: std::ops::Range<usize>| {
        let op = &op;
        // SAFETY: out holds seq rows of h_all (validated); heads `r` write only their
        // columns r.start·head_dim.. (< h_all) of each row at stride h_all, and the
        // ranges of the tasks are disjoint.
        let res = unsafe {
            let base = op.0.wrapping_add(r.start * head_dim);
            heads_into(kind, qkv, seq, heads, head_dim, r, base, h_all)
        };
        if let (Err(e), Ok(mut slot)) = (res, first_err.lock()) {
            if slot.is_ok() {
                *slot = Err(e);
            }
        }
    });
    first_err.into_inner().unwrap_or_else(|p| p.into_inner())
}

/// The heads `head_range` only, into `out_block: [seq, head_range.len()·head_dim]`
/// (row-major, its own row stride): column block `i` of `out_block` is head
/// `head_range.start + i`. Bitwise equal to those heads' columns of
/// [`attention_f32`] (each head is computed by the same code whatever the range).
///
/// For splitting one long sequence's heads across threads: each thread owns its
/// block (e.g. heads 0..6 and 6..12), then the caller copies the blocks into the
/// `[seq, H]` context rows (or give each thread a disjoint `[seq, 6·32]` buffer).
pub fn attention_f32_heads(
    isa: Isa,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    head_range: std::ops::Range<usize>,
    out_block: &mut [f32],
) -> Result<(), KernelError> {
    if head_range.start > head_range.end || head_range.end > heads {
        return shape_err!("attention_f32_heads: head range {head_range:?} not within 0..{heads}");
    }
    let w = crate::checked_len("attention_f32_heads", &[head_range.len(), head_dim])?;
    // Validates qkv, heads, head_dim (out checked below against the block width).
    let h_all = crate::checked_len("attention_f32_heads", &[heads, head_dim])?;
    validate_qkv("attention_f32_heads", qkv, seq, heads, head_dim)?;
    if out_block.len() != crate::checked_len("attention_f32_heads", &[seq, w])? {
        return shape_err!(
            "attention_f32_heads: out_block has {} floats, expected seq*heads_in_range*head_dim \
             = {seq}*{}*{head_dim}",
            out_block.len(),
            head_range.len()
        );
    }
    debug_assert!(w <= h_all);
    // SAFETY: out_block holds seq rows of w = len(head_range)·head_dim; head
    // head_range.start + i writes columns i·head_dim.. of each row at stride w.
    unsafe {
        let base = out_block.as_mut_ptr();
        heads_into(
            Kind::F32(isa),
            qkv,
            seq,
            heads,
            head_dim,
            head_range.clone(),
            base,
            w,
        )
    }
}

/// Computes heads `range` of `qkv` (validated for `seq, heads, head_dim`), head
/// `range.start + i` into columns `i·head_dim..` of `out` (row stride `ldo`).
///
/// # Safety
/// `out` valid for `seq` rows of `range.len()·head_dim` floats at stride `ldo`, not
/// overlapping `qkv`.
#[allow(clippy::too_many_arguments)]
unsafe fn heads_into(
    kind: Kind,
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    range: std::ops::Range<usize>,
    out: *mut f32,
    ldo: usize,
) -> Result<(), KernelError> {
    if seq == 0 || range.is_empty() {
        return Ok(());
    }
    let isa = match kind {
        Kind::F32(isa) => isa,
        #[cfg(target_arch = "x86_64")]
        Kind::Bf16 => return bf16_heads_into(qkv, seq, heads, head_dim, range, out, ldo),
        #[cfg(not(target_arch = "x86_64"))]
        Kind::Bf16 => return shape_err!("attention_bf16: no bf16 attention on this architecture"),
    };
    let sizes = fused::Sizes::new(lanes(isa), keys_per_tile(isa), seq, head_dim);
    SCRATCH.with(|cell| {
        let s = &mut *cell.borrow_mut();
        s.k.ensure_len(sizes.k);
        s.v.ensure_len(sizes.v);
        s.qt.ensure_len(sizes.qt);
        s.st.ensure_len(sizes.st);
        s.inv.ensure_len(sizes.inv);
        let b = fused::Bufs {
            k: s.k.as_mut_slice().as_mut_ptr(),
            v: s.v.as_mut_slice().as_mut_ptr(),
            qt: s.qt.as_mut_slice().as_mut_ptr(),
            st: s.st.as_mut_slice().as_mut_ptr(),
            inv: s.inv.as_mut_slice().as_mut_ptr(),
        };
        each_head(qkv, seq, heads, head_dim, range, out, ldo, |hd| {
            // SAFETY: qkv holds seq rows of 3·h_all (validated), the head's columns
            // are inside a row; the caller guarantees out for seq rows of the range's
            // columns at stride ldo; the scratch holds `sizes` (ensured above); the
            // token proves the ISA.
            unsafe {
                match isa.kind() {
                    crate::IsaKind::Scalar => fused::head_scalar(hd, &b),
                    #[cfg(target_arch = "x86_64")]
                    crate::IsaKind::Avx2 => fused::head_avx2(hd, &b),
                    #[cfg(target_arch = "x86_64")]
                    crate::IsaKind::Avx512 => fused::head_avx512(hd, &b),
                    #[cfg(target_arch = "aarch64")]
                    crate::IsaKind::Neon => fused::head_neon(hd, &b),
                    // Kinds of another architecture: no token can exist for them here.
                    #[allow(unreachable_patterns)]
                    _ => fused::head_scalar(hd, &b),
                }
            }
        });
        Ok(())
    })
}

/// Calls `f` with each head of `range` (head `range.start + i` writing columns
/// `i·head_dim..` of `out`, row stride `ldo`).
#[allow(clippy::too_many_arguments)]
fn each_head(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    range: std::ops::Range<usize>,
    out: *mut f32,
    ldo: usize,
    mut f: impl FnMut(&fused::Head),
) {
    for h in range.clone() {
        let at = out.wrapping_add((h - range.start) * head_dim);
        f(&fused::Head::of(qkv, seq, heads, head_dim, h, at, ldo));
    }
}

/// A head's bf16 scratch (32-bit words; see `bf16.rs`).
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct Bf16Scratch {
    q: AlignedBuf,
    k: AlignedBuf,
    v: AlignedBuf,
    s: AlignedBuf,
    p: AlignedBuf,
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static BF16_SCRATCH: RefCell<Bf16Scratch> = RefCell::new(Bf16Scratch::default());
}

/// [`heads_into`] for the bf16 kernel.
///
/// # Safety
/// As [`heads_into`]; [`bf16_supported`] holds for the path and `head_dim` (checked by
/// the public entry points, which hold a token of the avx512bf16 path).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_heads_into(
    qkv: &[f32],
    seq: usize,
    heads: usize,
    head_dim: usize,
    range: std::ops::Range<usize>,
    out: *mut f32,
    ldo: usize,
) -> Result<(), KernelError> {
    let sizes = bf16::Sizes::new(seq, head_dim);
    BF16_SCRATCH.with(|cell| {
        let s = &mut *cell.borrow_mut();
        s.q.ensure_len(sizes.q);
        s.k.ensure_len(sizes.k);
        s.v.ensure_len(sizes.v);
        s.s.ensure_len(sizes.s);
        s.p.ensure_len(sizes.p);
        let b = bf16::Bufs {
            q: s.q.as_mut_slice().as_mut_ptr().cast(),
            k: s.k.as_mut_slice().as_mut_ptr().cast(),
            v: s.v.as_mut_slice().as_mut_ptr().cast(),
            s: s.s.as_mut_slice().as_mut_ptr(),
            p: s.p.as_mut_slice().as_mut_ptr().cast(),
        };
        each_head(qkv, seq, heads, head_dim, range, out, ldo, |hd| {
            // SAFETY: qkv holds seq rows of 3·h_all (validated), the head's columns are
            // inside a row; the caller guarantees out for seq rows of the range's columns
            // at stride ldo; the scratch holds `sizes` (ensured above); the avx512bf16
            // token (checked by the caller) proves AVX-512 and AVX512-BF16; head_dim is
            // even and at most bf16::MAX_D (bf16_supported).
            unsafe { bf16::head(hd, &b) }
        });
        Ok(())
    })
}
