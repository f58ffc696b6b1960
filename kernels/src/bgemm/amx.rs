//! The AMX bf16 GEMM (`tdpbf16ps`): the tile loop of `tiles/gemm.rs` on either tile
//! backend, with the f32 epilogue.
//!
//! Weights: the pair layout with NR = 16 (one tile of columns) and K padded with zero
//! elements to whole tiles of 32 bf16 (`Bf16Matrix::pk`): a panel is
//! `[pk / 32][16 pairs][16 columns][2]` bf16, one 1 KB B tile per K step.
//! Activations: converted to bf16 (`f32_to_bf16`'s rounding, bitwise on every path)
//! `tiles::gemm::MC` rows at a time into a per-thread `[MC, pk]` scratch (pad elements 0;
//! `tiles::gemm::run_rows`, the row loop both AMX GEMMs share).
//!
//! **Accumulation order** (why this path is *not* bitwise equal to `vdpbf16ps` or the
//! scalar reference): each `tdpbf16ps` sums a K step of 16 pairs as two f32 chains,
//! even and odd elements, adds the two, then adds that to the accumulator (the SDM
//! pseudo-code, `tiles/mod.rs`); the `vdpbf16ps` chain adds every product to the one
//! accumulator. Both accumulate in f32 with RNE, so they differ by rounding only:
//! `|amx − ref| ≤ 2·kp·u·Σ_q |a_q·w_q|` with `u = 2^-24` (the classic bound for two
//! recursive f32 summations of the same exact products, `γ_kp` each), which the tests
//! check, and the emulated AMX GEMM is tested **bitwise** against an independent
//! scalar model of this exact order (`testing::gemm_bf16_amx_order_reference`).

use super::{f32_to_bf16, padded_k, Bf16Matrix};
use crate::epilogue::{Epi, Epilogue};
use crate::simd::Simd;
use crate::tiles::gemm::{self, CB};
use crate::tiles::{TileFault, TileUnit};

/// Columns per panel of the AMX layout (one tile).
pub(crate) const NR: usize = 16;
/// bf16 elements of K per tile step (64 bytes).
pub(crate) const KSTEP: usize = 32;
/// Elements per column in a panel: `kp` rounded up to whole 32-element tiles.
pub(crate) fn panel_k(kp: usize) -> usize {
    kp.div_ceil(KSTEP) * KSTEP
}

/// One call, as raw views (built from validated operands by `bgemm::call`).
pub(crate) struct Call<'a> {
    /// `[m, k]` f32.
    pub a: &'a [f32],
    pub k: usize,
    pub m: usize,
    /// Panels from the call's first column (AMX layout, `pk · 16` bf16 each).
    pub b: &'a [u16],
    pub pk: usize,
    pub n: usize,
    /// C at the call's first column, `m` rows at stride `ldc`.
    pub c: *mut f32,
    pub ldc: usize,
    pub epi: Epi,
}

/// Runs one call on the tile unit `t`.
///
/// # Safety
/// `c` is valid for `m` rows of `n` floats at stride `ldc`, not overlapping the inputs;
/// `epi` holds rows `0..m`, columns `0..n`; `vector` only when the CPU has AVX-512
/// F/BW/VL/DQ.
pub(crate) unsafe fn run<T: TileUnit>(t: &mut T, g: &Call, vector: bool) -> Result<(), TileFault> {
    let k = g.k;
    let fill = |i: usize, row: &mut [u8]| {
        let (data, pad) = row.split_at_mut(2 * k);
        for (d, &x) in data.chunks_exact_mut(2).zip(&g.a[i * k..(i + 1) * k]) {
            d.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
        }
        pad.fill(0);
    };
    let b = crate::tiles::u16_bytes(g.b);
    gemm::run_rows::<T, gemm::Bf16>(t, g.m, 2 * g.pk, b, g.n, fill, |cb, i, rows, j0, cols| {
        // SAFETY: rows i .. i + rows < m and columns j0 .. j0 + cols <= n lie inside C
        // and the epilogue (this function's contract); `vector` only with AVX-512.
        unsafe {
            if vector {
                #[cfg(target_arch = "x86_64")]
                finish_avx512(cb, g, i, rows, j0, cols);
            } else {
                finish::<crate::simd::Scalar>(cb, g, i, rows, j0, cols);
            }
        }
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn finish_avx512(cb: &[u32], g: &Call, i0: usize, rows: usize, j0: usize, cols: usize) {
    finish::<crate::simd::avx512::Avx512>(cb, g, i0, rows, j0, cols)
}

/// The epilogue of one finished block: `epi(acc)` per element, stored to C.
#[inline(always)]
unsafe fn finish<S: Simd>(cb: &[u32], g: &Call, i0: usize, rows: usize, j0: usize, cols: usize) {
    let mut x = [0f32; 16];
    for r in 0..rows {
        let i = i0 + r;
        let mut jj = 0;
        while jj < cols {
            let nv = (cols - jj).min(S::LANES).min(16);
            let j = j0 + jj;
            for l in 0..nv {
                x[l] = f32::from_bits(cb[r * CB + jj + l]);
            }
            let y = g.epi.apply::<S>(S::load_n(x.as_ptr(), nv), i, j, nv);
            S::store_n(g.c.add(i * g.ldc + j), y, nv);
            jj += nv;
        }
    }
}

/// The AMX panels of `b`'s bf16 weights (for the emulator on a matrix packed for
/// another path), and `pk`.
pub(crate) fn repack(b: &Bf16Matrix) -> (Vec<u16>, usize) {
    let (n, k) = (b.n, b.k);
    let pk = panel_k(padded_k(k));
    let w = b.to_bf16_bits();
    let mut d = vec![0u16; n.div_ceil(NR) * NR * pk];
    for j in 0..n {
        for q in 0..k {
            d[super::index(super::BIsaKind::Amx, NR, pk, j, q)] = w[j * k + q];
        }
    }
    (d, pk)
}

/// [`super::gemm_bf16`] through the tile interface on the **emulator**, for any
/// matrix (its weights repacked into the AMX layout).
pub(crate) fn emulated(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), crate::KernelError> {
    super::validate_call("gemm_bf16_amx_emulated", a, m, b, &epilogue)?;
    let n = b.n;
    if c.len() != crate::checked_len("gemm_bf16_amx_emulated c", &[m, n])? {
        return crate::shape_err!(
            "gemm_bf16_amx_emulated: c has {} floats, expected m*n = {m}*{n}",
            c.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if b.k == 0 {
        // No K step: C = epilogue(0), as every bf16 path.
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = epilogue.apply(0.0, i, j, n);
            }
        }
        return Ok(());
    }
    let (panels, pk) = repack(b);
    let vector = cfg!(target_arch = "x86_64")
        && crate::isa::Features::detected().contains(crate::isa::Features::AVX512);
    let call = Call {
        a,
        k: b.k,
        m,
        b: &panels,
        pk,
        n,
        c: c.as_mut_ptr(),
        ldc: n,
        epi: Epi::new(epilogue, n, 0),
    };
    let mut emu = crate::tiles::Emulator::new();
    // SAFETY: a, c and the epilogue validated for (m, n, k); c exclusively borrowed;
    // `vector` only with AVX-512.
    unsafe { run(&mut emu, &call, vector) }
        .map_err(|e| crate::KernelError::Shape(format!("AMX emulator fault: {e}")))
}

/// The scalar model of the AMX order, element by element, independent of tiles and
/// layouts: per K step of 16 pairs, even and odd chains from +0, their sum added to
/// the accumulator (DAZ / FTZ / RNE as `tdpbf16ps`), then the scalar epilogue.
pub(crate) fn order_reference(a: &[u16], w: &[u16], kp: usize) -> f32 {
    use super::reference::{dot_step, flush};
    let mut acc = 0f32;
    for step in a[..kp].chunks(KSTEP).zip(w[..kp].chunks(KSTEP)) {
        let (mut even, mut odd) = (0f32, 0f32);
        for (x, y) in step.0.chunks_exact(2).zip(step.1.chunks_exact(2)) {
            even = dot_step(even, x[0], y[0]);
            odd = dot_step(odd, x[1], y[1]);
        }
        acc = flush(flush(acc) + flush(flush(even) + flush(odd)));
    }
    acc
}
