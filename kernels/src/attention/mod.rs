//! Multi-head self-attention for one unmasked sequence (the engine passes only the
//! real tokens of one text; sequences of a packed batch are separate calls).
//!
//! # Fast path, per head `h`
//! 1. Pack `K_h` (`[seq, d]`, rows at stride `3H` in `qkv`) into the GEMM's B-panel
//!    layout: this *is* `K_hᵀ`, NR keys per panel, `d` deep.
//! 2. Pack `V_hᵀ` (`[d, seq]`) the same way: B panels of NR head columns, `seq` deep.
//! 3. For each block of `QB = 2·MR` query rows: `S = Q_blk · K_hᵀ` with the GEMM
//!    microkernel (A read in place or packed from the strided Q rows, K = d = 32),
//!    softmax of `S / sqrt(d)` in place (vectorized exp), then `out_blk = S · V_h`
//!    with the microkernel writing straight into the head's columns of `out` (row
//!    stride `H`).
//!
//! Scratch per thread (thread-local, grown once to the largest seq seen): K panels
//! `seq·d`, V panels `seq·d` and one score block `QB·seq` (24 x 512 x 4 B = 48 KB at
//! seq 512 on AVX-512): the full `seq x seq` matrix is never materialized.
//! Softmax is exact (not online): every row of a block sees all `seq` keys.

mod reference;

pub use reference::attention_reference;

use crate::buf::AlignedBuf;
use crate::gemm::{self, pack_b, packed_len, Epi, Raw};
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
    /// K_h packed: `ceil(seq/NR)` panels of `[d][NR]`.
    kpack: AlignedBuf,
    /// V_hᵀ packed: `ceil(d/NR)` panels of `[seq][NR]`.
    vpack: AlignedBuf,
    /// One block of scores / probabilities: `[QB, seq]`.
    scores: AlignedBuf,
}

/// Name for logs and benchmark labels, e.g. `"attention_f32_avx512_qb24"` (QB =
/// query rows per score block).
pub fn kernel_name(isa: Isa) -> &'static str {
    match isa.kind() {
        crate::IsaKind::Scalar => "attention_f32_scalar_qb8",
        crate::IsaKind::Avx2 => "attention_f32_avx2_qb12",
        crate::IsaKind::Avx512 => "attention_f32_avx512_qb24",
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
    let h_all = heads * head_dim;
    // SAFETY: out holds seq rows of h_all (validated); heads 0..heads cover columns
    // 0..h_all at row stride h_all.
    unsafe {
        heads_into(
            isa,
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
        heads_into(isa, qkv, seq, heads, head_dim, head_range.clone(), base, w)
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
    isa: Isa,
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
    let info = gemm::kernel_info(isa);
    let h_all = heads * head_dim;
    let ld_qkv = 3 * h_all;
    // QB = 2·MR <= gemm::SKINNY_MAX_M: both per-block GEMMs take the skinny path
    // (Q and the scores read in place, whole K in registers, no A packing). Measured
    // vs 4·MR (blocked path, K = 32 slices): seq 128 420 -> 350 us, seq 512 5.95 ->
    // 4.8 ms (AVX-512, 12 heads).
    let qb = 2 * info.mr;
    let scale = 1.0 / (head_dim as f32).sqrt();
    SCRATCH.with(|cell| {
        let s = &mut *cell.borrow_mut();
        let klen = packed_len(seq, head_dim, info.nr);
        let vlen = packed_len(head_dim, seq, info.nr);
        s.kpack.ensure_len(klen);
        s.vpack.ensure_len(vlen);
        s.scores.ensure_len(qb.min(seq) * seq);
        for h in range.clone() {
            let oc = (h - range.start) * head_dim;
            let (qo, ko, vo) = (h * head_dim, h_all + h * head_dim, 2 * h_all + h * head_dim);
            // K_h as B panels (n = keys, k = head_dim).
            pack_b(
                &mut s.kpack.as_mut_slice()[..klen],
                info.nr,
                &qkv[ko..],
                seq,
                head_dim,
                ld_qkv,
                1,
            )?;
            // V_hᵀ as B panels (n = head_dim, k = keys).
            pack_b(
                &mut s.vpack.as_mut_slice()[..vlen],
                info.nr,
                &qkv[vo..],
                head_dim,
                seq,
                1,
                ld_qkv,
            )?;
            let mut i0 = 0;
            while i0 < seq {
                let rows = qb.min(seq - i0);
                let scores = &mut s.scores.as_mut_slice()[..rows * seq];
                // SAFETY: A = rows x head_dim at stride 3H starting at Q(i0, h): the last
                // element (i0+rows-1)*3H + qo + head_dim - 1 < seq*3H = qkv.len();
                // B = kpack packed for (seq, head_dim, NR); C = scores, rows x seq
                // (ldc = seq), a separate buffer; k = head_dim >= 1.
                gemm::run(
                    isa,
                    Raw {
                        a: qkv.as_ptr().add(i0 * ld_qkv + qo),
                        lda: ld_qkv,
                        m: rows,
                        b: s.kpack.as_slice().as_ptr(),
                        n: seq,
                        k: head_dim,
                        c: scores.as_mut_ptr(),
                        ldc: seq,
                        epi: Epi::None,
                        apack: std::ptr::null_mut(),
                    },
                );
                crate::ew::softmax_scaled(isa, scores, seq, scale)?;
                // SAFETY: A = scores (rows x seq, lda = seq); B = vpack packed for
                // (head_dim, seq, NR); C = out rows i0.., columns oc..oc+head_dim at
                // stride ldo, inside the caller's block; k = seq >= 1.
                gemm::run(
                    isa,
                    Raw {
                        a: scores.as_ptr(),
                        lda: seq,
                        m: rows,
                        b: s.vpack.as_slice().as_ptr(),
                        n: head_dim,
                        k: seq,
                        c: out.add(i0 * ldo + oc),
                        ldc: ldo,
                        epi: Epi::None,
                        apack: std::ptr::null_mut(),
                    },
                );
                i0 += rows;
            }
        }
        Ok(())
    })
}
