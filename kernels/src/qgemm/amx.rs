//! The AMX int8 GEMM (`tdpbusd`): the tile loop of `tiles/gemm.rs` on either tile
//! backend, with the int8 scheme's dequantizing epilogue (`qgemm/mod.rs`).
//!
//! Weights: the VNNI layout with NR = 16 (one tile of columns) and K padded with zero
//! bytes to whole 64-byte tiles (`QuantizedMatrix::pk`): a panel is
//! `[pk / 64][16 k-groups][16 columns][4]` i8, i.e. one 1 KB B tile per K step.
//! Activations: the caller's `[m, kp]` u8 rows are copied, `tiles::gemm::MC` rows at a
//! time, into a per-thread scratch of `[MC, pk]` (pad bytes 0; the weights are 0 there;
//! `tiles::gemm::run_rows`, the row loop both AMX GEMMs share).
//! Epilogue: per finished 32 x 32 block, per row, `x = (f32)(acc − comp[n])`,
//! `y = (s_a[m] · s_w[n]) · x`, then the one [`Epi`] vector epilogue: the same operations
//! in the same order as the VNNI kernel (`qgemm/x86.rs`), so the result is **bitwise**
//! that of the VNNI path for every epilogue (GELU included, with the AVX-512 epilogue;
//! the scalar-epilogue variant used where AVX-512 is absent differs from it only in
//! GELU, as the scalar reference does).

use super::{padded_k, QuantizedMatrix};
use crate::epilogue::{Epi, Epilogue};
use crate::simd::Simd;
use crate::tiles::gemm::{self, CB, KSTEP};
use crate::tiles::{TileFault, TileUnit};

/// Columns per panel of the AMX layout (one tile).
pub(crate) const NR: usize = 16;
/// Bytes per column in a panel: `kp` rounded up to a whole 64-byte tile.
pub(crate) fn panel_k(kp: usize) -> usize {
    kp.div_ceil(KSTEP) * KSTEP
}

/// Where the results go (as the x86 `Out`).
#[derive(Clone, Copy)]
pub(crate) enum Out {
    /// f32 C with the dequantization epilogue; the pointer is `s_a: [m]`.
    F32(*mut f32, *const f32),
    /// Raw compensated i32 sums.
    I32(*mut i32),
}

/// One call, as raw views (built from validated operands by the callers).
pub(crate) struct Call<'a> {
    /// `[m, kp]` u8.
    pub a: &'a [u8],
    pub kp: usize,
    pub m: usize,
    /// The panels from the call's first column (AMX layout, `pk · 16` bytes each).
    pub b: &'a [i8],
    pub pk: usize,
    pub n: usize,
    /// `s_w` and `comp` from the call's first column (zero-padded to whole panels).
    pub sw: &'a [f32],
    pub comp: &'a [i32],
    pub out: Out,
    pub ldc: usize,
    pub epi: Epi,
}

/// Runs one call on the tile unit `t`.
///
/// # Safety
/// `out` is valid for `m` rows of `n` elements at stride `ldc` (and `s_a` for `m`
/// floats), not overlapping the inputs; `epi` holds rows `0..m`, columns `0..n`;
/// `vector` only when the CPU has AVX-512 F/BW/VL/DQ.
pub(crate) unsafe fn run<T: TileUnit>(t: &mut T, g: &Call, vector: bool) -> Result<(), TileFault> {
    let kp = g.kp;
    let fill = |i: usize, row: &mut [u8]| {
        row[..kp].copy_from_slice(&g.a[i * kp..(i + 1) * kp]);
        row[kp..].fill(0);
    };
    let b = crate::tiles::i8_bytes(g.b);
    gemm::run_rows::<T, gemm::Int8>(t, g.m, g.pk, b, g.n, fill, |cb, i, rows, j0, cols| {
        // SAFETY: rows i .. i + rows < m and columns j0 .. j0 + cols <= n lie inside the
        // output and the epilogue (this function's contract); `vector` only with AVX-512.
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

/// The epilogue of one finished block (see the module docs).
#[inline(always)]
unsafe fn finish<S: Simd>(cb: &[u32], g: &Call, i0: usize, rows: usize, j0: usize, cols: usize) {
    let mut x = [0f32; 16];
    let mut xi = [0i32; 16];
    for r in 0..rows {
        let i = i0 + r;
        let mut jj = 0;
        while jj < cols {
            let nv = (cols - jj).min(S::LANES).min(16);
            let j = j0 + jj;
            for l in 0..nv {
                // Σ Aq·Wq = acc − 128·colsum (vpsubd in the VNNI kernel: wrapping).
                xi[l] = (cb[r * CB + jj + l] as i32).wrapping_sub(g.comp[j + l]);
            }
            match g.out {
                Out::I32(c) => {
                    std::ptr::copy_nonoverlapping(xi.as_ptr(), c.add(i * g.ldc + j), nv);
                }
                Out::F32(c, sa) => {
                    for l in 0..nv {
                        x[l] = xi[l] as f32;
                    }
                    // y = (s_a[i] · s_w[j]) · x: two roundings, as the VNNI kernel.
                    let s = S::mul(S::splat(*sa.add(i)), S::load_n(g.sw.as_ptr().add(j), nv));
                    let y = S::mul(s, S::load_n(x.as_ptr(), nv));
                    let y = g.epi.apply::<S>(y, i, j, nv);
                    S::store_n(c.add(i * g.ldc + j), y, nv);
                }
            }
            jj += nv;
        }
    }
}

/// The AMX panels of `b`'s quantized weights (for the emulator on a matrix packed
/// for another path): `[ceil(n / 16)][pk]...` as [`QuantizedMatrix::pack`] lays them
/// out for the Amx kind.
pub(crate) fn repack(b: &QuantizedMatrix) -> (Vec<i8>, usize) {
    let (n, k) = (b.n, b.k);
    let pk = panel_k(padded_k(k));
    let np = n.div_ceil(NR);
    let w = b.unpack_weights();
    let mut d = vec![0i8; np * NR * pk];
    for j in 0..n {
        for q in 0..k {
            d[(j / NR) * pk * NR + (q / 4) * NR * 4 + (j % NR) * 4 + q % 4] = w[j * k + q];
        }
    }
    (d, pk)
}

/// [`super::gemm_u8s8`] / [`super::gemm_u8s8_i32`] through the tile interface on the
/// **emulator**, for any matrix (its weights repacked into the AMX layout): the
/// emulator tests' entry point. `c` is f32 (`Some(scales)`) or the raw i32 sums.
pub(crate) fn emulated(
    a: &[u8],
    scales: Option<&[f32]>,
    m: usize,
    b: &QuantizedMatrix,
    out: EmuOut,
    epilogue: Epilogue,
) -> Result<(), crate::KernelError> {
    let (n, kp) = (b.n, b.kp);
    let (c_len, what) = match &out {
        EmuOut::F32(c) => (c.len(), "gemm_u8s8_amx_emulated"),
        EmuOut::I32(c) => (c.len(), "gemm_u8s8_i32_amx_emulated"),
    };
    super::validate_gemm(what, a, scales, m, b, Some(c_len), &epilogue)?;
    if matches!(out, EmuOut::F32(_)) && scales.is_none() {
        return crate::shape_err!("{what}: f32 output needs the scales");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (panels, pk) = repack(b);
    let mut comp = b.comp.clone();
    comp.resize(n.div_ceil(NR) * NR, 0);
    let mut sw = b.scales.clone();
    sw.resize(n.div_ceil(NR) * NR, 0.0);
    let vector = cfg!(target_arch = "x86_64")
        && crate::isa::Features::detected().contains(crate::isa::Features::AVX512);
    let (outp, _keep) = match out {
        EmuOut::F32(c) => (Out::F32(c.as_mut_ptr(), scales.unwrap().as_ptr()), ()),
        EmuOut::I32(c) => (Out::I32(c.as_mut_ptr()), ()),
    };
    let call = Call {
        a,
        kp,
        m,
        b: &panels,
        pk,
        n,
        sw: &sw,
        comp: &comp,
        out: outp,
        ldc: n,
        epi: Epi::new(epilogue, n, 0),
    };
    let mut emu = crate::tiles::Emulator::new();
    // SAFETY: a, scales, c and the epilogue validated for (m, n, kp) above; c is
    // exclusively borrowed (no overlap); `vector` only with AVX-512.
    unsafe { run(&mut emu, &call, vector) }
        .map_err(|e| crate::KernelError::Shape(format!("AMX emulator fault: {e}")))
}

/// The output of [`emulated`].
pub(crate) enum EmuOut<'a> {
    F32(&'a mut [f32]),
    I32(&'a mut [i32]),
}
