//! f32 GEMM against prepacked weights: `C[m, n] = epilogue(A[m, k] · Wᵀ)`, with W in
//! the PyTorch Linear layout `[n = out, k = in]`.
//!
//! # Microkernel contract
//!
//! **Roles.** Rows of C come from A (the activations, one row per token); columns of
//! C from W (the weights). The microkernel computes an `MR x NR` tile of C held in
//! registers as `MR` rows of `NR / LANES` vectors: per step of K it loads the `NR`
//! weights of one K index as vectors, broadcasts each of the `MR` activations of
//! that K index, and issues `MR * NR / LANES` FMAs.
//!
//! **B (W) panels, packed once at load** ([`PackedMatrix::pack`]): `ceil(n / NR)`
//! panels; panel `p` holds columns `p*NR .. p*NR+NR` of C as `[k][NR]` (K-major, one
//! contiguous row of `NR` floats per K index), columns past `n` zero-padded. Panel
//! `p` starts at float `p * k * NR`; the KC slice `pc..pc+kc` of a panel is the
//! contiguous range starting at `p*k*NR + pc*NR`. The buffer is 64-byte aligned.
//!
//! **A panels, packed per call** (when `m > MR`): the `MC x KC` block of A is
//! copied into `ceil(mc / MR)` panels of `[kc][MR]` (row `r` of K index `q` at
//! `q*MR + r`), missing rows zero. For `m <= MR` the kernel reads A in place (row
//! stride `lda`, unit stride along K): packing would never be reused.
//!
//! **C**: row-major with row stride `ldc` (`n` for the public API; attention writes
//! a head's columns inside a wider row). First K slice stores `A·B`, later slices
//! load, add and store; the epilogue (bias, bias+GELU, bias+residual) is applied on
//! the last K slice while the tile is still in registers.
//!
//! **Edges**: rows: one monomorphized tile per row count `1..=MR` (jump table), so
//! an edge tile issues no wasted FMAs; columns: B is zero-padded to NR, and the
//! epilogue loads/stores only the `nr` valid columns (AVX-512 `k`-masks, AVX2
//! `vmaskmovps`), so no write lands outside C and no read outside bias/residual.
//!
//! **Who loops over what**: the driver (`kernel::driver`) owns the five BLIS loops
//! (`jc` over NC, `pc` over KC, `ic` over MC with A packing, `jr` over NR, `ir`
//! over MR); the microkernel owns only the `kc` loop and the tile epilogue.
//!
//! # Tile sizes and cache blocking (one table; reasoning below)
//!
//! | ISA    | kernel                  | MR x NR | acc regs        | MC  | KC  | NC   |
//! |--------|-------------------------|---------|-----------------|-----|-----|------|
//! | scalar | `gemm_f32_scalar_4x8`   | 4 x 8   | 32 f32          | 128 | 256 | 3072 |
//! | avx2   | `gemm_f32_avx2_6x16`    | 6 x 16  | 12 ymm (of 16)  | 168 | 256 | 3072 |
//! | avx512 | `gemm_f32_avx512_12x32` | 12 x 32 | 24 zmm (of 32)  | 240 | 192 | 3072 |
//!
//! - **MR x NR**: FMA latency 4 x 2 FMA ports needs >= 8 independent accumulators;
//!   more amortizes the loads. AVX2: 12 acc + 2 B + 1 broadcast = 15 of 16 ymm (the
//!   BLIS haswell tile). AVX-512: 24 acc + 2 B + 1 broadcast = 27 of 32 zmm; per K
//!   step 2 vector loads + 12 broadcasts feed 24 FMAs (12 cycles on 2 ports), well
//!   under the 2 loads/cycle limit. NR = 32 (2 zmm) keeps the B panel row at two
//!   cache lines and divides every model N (384, 1152, 1536).
//! - **KC**: the B micro-panel `KC x NR` stays in L1 while `ir` sweeps the A
//!   panels: AVX-512 `192 * 32 * 4 B = 24 KB` of the 48 KB L1D (half, leaving room
//!   for the streamed A micro-panel `12 x 192 x 4 B = 9 KB`); 192 divides both model
//!   K (384 = 2 x 192, 1536 = 8 x 192). AVX2 `256 * 16 * 4 B = 16 KB` (half of a
//!   32 KB L1D, as BLIS haswell).
//! - **MC**: the packed A block `MC x KC` stays in L2 across `jr`: AVX-512
//!   `240 * 192 * 4 B = 180 KB`, AVX2 `168 * 256 * 4 B = 168 KB` (fits even a
//!   256 KB L2). Multiples of MR.
//! - **NC**: the B block `KC x NC` lives in L3 / is streamed; 3072 >= every model N,
//!   so A is packed once per K slice.
//!
//! Rows of one call are single-threaded; the engine splits M across threads and
//! calls [`gemm_f32`] on row chunks (A/C/residual sub-slices).

mod kernel;
mod pack;
mod reference;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

pub(crate) use reference::gelu_f64;
pub use reference::gemm_f32_reference;

pub(crate) use kernel::{Epi, Raw};
pub(crate) use pack::{pack_b, packed_len};

use crate::buf::AlignedBuf;
use crate::isa::{Isa, IsaKind};
use crate::{shape_err, KernelError};
use kernel::Kernel;
use std::cell::RefCell;

/// Register tile and names for one ISA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelInfo {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub mc: usize,
    pub kc: usize,
}

fn info_of<K: Kernel>() -> KernelInfo {
    KernelInfo {
        name: K::NAME,
        mr: K::MR,
        nr: K::NR,
        mc: K::MC,
        kc: K::KC,
    }
}

pub(crate) fn kernel_info(isa: Isa) -> KernelInfo {
    match isa.kind() {
        IsaKind::Scalar => info_of::<scalar::ScalarKernel>(),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => info_of::<avx2::Avx2Kernel>(),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => info_of::<avx512::Avx512Kernel>(),
        #[cfg(not(target_arch = "x86_64"))]
        _ => info_of::<scalar::ScalarKernel>(),
    }
}

/// The GEMM microkernel [`gemm_f32`] uses on `isa` (what
/// [`PackedMatrix::kernel_name`] reports), e.g. `"gemm_f32_avx512_12x32"`.
pub fn kernel_name(isa: Isa) -> &'static str {
    kernel_info(isa).name
}

/// The register tile `(MR, NR)` of `isa`'s microkernel: rows of A and columns of W
/// per microkernel call. Row chunks that are multiples of MR avoid edge tiles when
/// the engine splits M across threads.
pub fn tile(isa: Isa) -> (usize, usize) {
    let i = kernel_info(isa);
    (i.mr, i.nr)
}

thread_local! {
    /// Per-thread packed-A block (`MC x KC` of the widest kernel), grown on first use.
    static APACK: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Runs a validated raw GEMM on `isa` with this thread's A-pack scratch.
///
/// # Safety
/// Every pointer/stride in `g` must describe valid memory for the call (A: `m` rows
/// of `k` at stride `lda`; B: `packed_len(n, k, NR)` floats packed for `isa`'s NR;
/// C: `m` rows of `n` at stride `ldc`; epilogue operands `n` columns / `m` rows), C
/// must not overlap the inputs, and `k >= 1`.
pub(crate) unsafe fn run(isa: Isa, mut g: Raw) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    let info = kernel_info(isa);
    APACK.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.ensure_len(info.mc * info.kc);
        g.apack = buf.as_mut_slice().as_mut_ptr();
        match isa.kind() {
            IsaKind::Scalar => scalar::gemm(&g),
            // SAFETY: the token proves AVX2+FMA / AVX-512 support.
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => avx2::gemm(&g),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => avx512::gemm(&g),
            #[cfg(not(target_arch = "x86_64"))]
            _ => scalar::gemm(&g),
        }
    })
}

/// Weights `W[n, k]` packed once (at model load) into the B-panel layout of one ISA's
/// microkernel. Immutable and `Send + Sync`: share one across threads.
#[derive(Clone)]
pub struct PackedMatrix {
    isa: Isa,
    n: usize,
    k: usize,
    nr: usize,
    name: &'static str,
    /// `ceil(n / NR)` panels of `[k][NR]`, 64-byte aligned.
    data: AlignedBuf,
}

impl PackedMatrix {
    /// Packs `w: [n, k]` (PyTorch Linear layout, row-major) for `isa`'s microkernel.
    pub fn pack(isa: Isa, w: &[f32], n: usize, k: usize) -> Result<PackedMatrix, KernelError> {
        let info = kernel_info(isa);
        if w.len() != crate::checked_len("PackedMatrix::pack", &[n, k])? {
            return shape_err!(
                "PackedMatrix::pack: w has {} floats, expected n*k = {n}*{k}",
                w.len()
            );
        }
        // Padded size: ceil(n / NR) * NR * k, checked too.
        crate::checked_len("PackedMatrix::pack", &[n.div_ceil(info.nr), info.nr, k])?;
        let mut data = AlignedBuf::zeroed(packed_len(n, k, info.nr));
        pack_b(data.as_mut_slice(), info.nr, w, n, k, k, 1)?;
        Ok(PackedMatrix {
            isa,
            n,
            k,
            nr: info.nr,
            name: info.name,
            data,
        })
    }

    /// Output features (columns of C).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (the reduction dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The ISA whose microkernel this layout is for; [`gemm_f32`] runs on it.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The microkernel's name, e.g. `"gemm_f32_avx512_12x32"`.
    pub fn kernel_name(&self) -> &'static str {
        self.name
    }

    /// Panel width NR of the layout.
    pub fn panel_width(&self) -> usize {
        self.nr
    }
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("kernel", &self.name)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

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

pub(crate) fn validate_epilogue(e: &Epilogue, m: usize, n: usize) -> Result<(), KernelError> {
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

/// `C[m, n] = epilogue(Σ_q A[i, q] · W[j, q])` with `b` = W prepacked for `b.isa()`.
///
/// `a: [m, k]`, `c: [m, n]`, row-major, lengths exact. `m = 0` is a no-op. C is fully
/// overwritten (its previous contents are ignored). Single-threaded; row sub-slices
/// (with the matching residual rows) can be run on different threads.
pub fn gemm_f32(
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    let (n, k) = (b.n, b.k);
    if a.len() != crate::checked_len("gemm_f32 a", &[m, k])? {
        return shape_err!(
            "gemm_f32 ({}): a has {} floats, expected m*k = {m}*{k}",
            b.name,
            a.len()
        );
    }
    if c.len() != crate::checked_len("gemm_f32 c", &[m, n])? {
        return shape_err!(
            "gemm_f32 ({}): c has {} floats, expected m*n = {m}*{n}",
            b.name,
            c.len()
        );
    }
    validate_epilogue(&epilogue, m, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        // Empty sum: C = epilogue(0).
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = match epilogue {
                    Epilogue::None => 0.0,
                    Epilogue::Bias(bias) => bias[j],
                    Epilogue::BiasGelu(bias) => gelu_f64(bias[j] as f64) as f32,
                    Epilogue::BiasResidual { bias, residual } => bias[j] + residual[i * n + j],
                };
            }
        }
        return Ok(());
    }
    let epi = match epilogue {
        Epilogue::None => Epi::None,
        Epilogue::Bias(bias) => Epi::Bias(bias.as_ptr()),
        Epilogue::BiasGelu(bias) => Epi::BiasGelu(bias.as_ptr()),
        Epilogue::BiasResidual { bias, residual } => {
            Epi::BiasResidual(bias.as_ptr(), residual.as_ptr(), n)
        }
    };
    let g = Raw {
        a: a.as_ptr(),
        lda: k,
        m,
        b: b.data.as_slice().as_ptr(),
        n,
        k,
        c: c.as_mut_ptr(),
        ldc: n,
        epi,
        apack: std::ptr::null_mut(),
    };
    // SAFETY: lengths checked above (a = m*k, c = m*n, bias = n, residual = m*n, the
    // packed buffer was built for (n, k, NR of b.isa)); `c` is a unique borrow so it
    // cannot overlap the inputs; k >= 1; b.isa is a token for this CPU.
    unsafe { run(b.isa, g) };
    Ok(())
}
