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
//! **A panels, packed per call** (blocked path): the `MC x KC` block of A is
//! copied into `ceil(mc / MR)` panels of `[kc][MR]` (row `r` of K index `q` at
//! `q*MR + r`), missing rows zero. The skinny path (`m <= AUTO_SKINNY_MAX_M`) reads A in
//! place (row stride `lda`, unit stride along K): packing would never be reused.
//!
//! **C**: row-major with row stride `ldc` (`n` for the public API; attention writes
//! a head's columns inside a wider row). The first K slice starts each element's
//! FMA chain at 0, later slices load C into the accumulators and continue the chain
//! (so results do not depend on the blocking, see `kernel.rs`); the epilogue (bias,
//! bias+GELU, bias+residual) is applied on the last K slice while the tile is still
//! in registers.
//!
//! **Edges**: rows: one monomorphized tile per row count `1..=MR` (jump table), so
//! an edge tile issues no wasted FMAs; columns: B is zero-padded to NR, and the
//! epilogue loads/stores only the `nr` valid columns (AVX-512 `k`-masks, AVX2
//! `vmaskmovps`), so no write lands outside C and no read outside bias/residual.
//!
//! **Who loops over what**: the drivers (`kernel::blocked`, `kernel::skinny`) own
//! the loops over blocks and tiles; the microkernel owns only the `kc` loop and the
//! tile epilogue.
//!
//! # Tiles and cache blocking
//!
//! | ISA    | kernel                  | MR x NR | acc regs       | skinny tiles (rows x panels) |
//! |--------|-------------------------|---------|----------------|------------------------------|
//! | scalar | `gemm_f32_scalar_4x8`   | 4 x 8   | 32 f32         | 1 x 2                        |
//! | avx2   | `gemm_f32_avx2_6x16`    | 6 x 16  | 12 ymm (of 16) | 1 x 4, 2 x 2                 |
//! | avx512 | `gemm_f32_avx512_12x32` | 12 x 32 | 24 zmm (of 32) | 1-2 x 4, 3-6 x 2; 13-16 x 1 (tall) |
//! | neon   | `gemm_f32_neon_8x12`    | 8 x 12  | 24 q (of 32)   | 1 x 4, 2-4 x 2                |
//!
//! - **MR x NR**: FMA latency 4 x 2 FMA ports needs >= 8 independent accumulators;
//!   more amortizes the loads. AVX2: 12 acc + 2 B + 1 broadcast = 15 of 16 ymm (the
//!   BLIS haswell tile). AVX-512: 24 acc + 2 B + 1 broadcast = 27 of 32 zmm; per K
//!   step 2 vector loads + 12 broadcasts feed 24 FMAs (12 cycles on 2 ports), well
//!   under the 2 loads/cycle limit. NR = 32 (2 zmm) keeps the B panel row at two
//!   cache lines and divides every model N (384, 1152, 1536). Skinny tiles span 2-4
//!   panels so that 1-6 rows still have >= 8 accumulators.
//! - **Tall tile** (AVX-512, a whole call of 13-16 rows, `avx512::tall`): one pass per
//!   panel for all rows, so each weight is read once while it streams; rows 12-15 keep
//!   their 8 accumulators in L1 (load, two K steps of FMAs, store), as 16 x 32 needs 32
//!   accumulators. Hand-written (`asm!`): the generic 16-row tile (LLVM's spills) ran at
//!   78% of peak hot, an intrinsics version of this one at ~40%; the `asm!` tile at 92%.
//!   The 12 + remainder tiles read each panel twice, the second time from L2 with
//!   nothing streaming (kernels/PERF.md, session 5).
//! - **Blocking** (`kernel::Blocking`, from the detected caches, `crate::cache`):
//!   KC = L1D/2 / (NR·4) (B micro-panel in half the L1D; 192 on a 48 KB L1D with
//!   NR = 32), balanced over K; NC: B block `KC x NC` in half the L2; MC: A block +
//!   C block in the rest of 3/4 of the L2. [`blocking`] reports the values.
//!   Because each element is one FMA chain whatever the slicing, the blocking can
//!   follow the machine without changing a single result bit.
//!
//! Rows of one call are single-threaded; the engine splits M across threads and
//! calls [`gemm_f32`] on row chunks (A/C/residual sub-slices), or columns with
//! [`gemm_f32_cols`], or lets [`gemm_f32_par`] choose (columns for skinny calls).

mod kernel;
mod pack;
mod reference;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

pub use reference::gemm_f32_reference;
pub(crate) use reference::{gelu_f64, validate_dense};

use crate::epilogue::Epi;
pub use crate::epilogue::Epilogue;
pub(crate) use kernel::Raw;
pub(crate) use pack::{pack_b, packed_len};

use crate::buf::{AlignedBuf, WeightBuf};
use crate::isa::{Isa, IsaKind};
use crate::{shape_err, KernelError};
pub use kernel::GemmPath;
use kernel::{Blocking, Kernel};
use std::cell::RefCell;

/// Register tile and names for one ISA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelInfo {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub kc_max: usize,
}

fn info_of<K: Kernel>() -> KernelInfo {
    KernelInfo {
        name: K::NAME,
        mr: K::MR,
        nr: K::NR,
        kc_max: K::KC_MAX,
    }
}

pub(crate) fn kernel_info(kind: IsaKind) -> KernelInfo {
    match kind {
        IsaKind::Scalar => info_of::<scalar::ScalarKernel>(),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => info_of::<avx2::Avx2Kernel>(),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => info_of::<avx512::Avx512Kernel>(),
        #[cfg(target_arch = "aarch64")]
        IsaKind::Neon => info_of::<neon::NeonKernel>(),
        // Kinds of another architecture: no token can exist for them here.
        #[allow(unreachable_patterns)]
        _ => info_of::<scalar::ScalarKernel>(),
    }
}

/// The GEMM microkernel [`gemm_f32`] uses on `isa` (what
/// [`PackedMatrix::kernel_name`] reports), e.g. `"gemm_f32_avx512_12x32"`.
pub fn kernel_name(isa: Isa) -> &'static str {
    kernel_info(isa.kind()).name
}

/// The register tile `(MR, NR)` of `isa`'s microkernel: rows of A and columns of W
/// per microkernel call. Row chunks that are multiples of MR avoid edge tiles when
/// the engine splits M across threads; column ranges for [`gemm_f32_cols`] start
/// at multiples of NR.
pub fn tile(isa: Isa) -> (usize, usize) {
    let i = kernel_info(isa.kind());
    (i.mr, i.nr)
}

/// The query-sized M the skinny path was written for (batch-1 queries: the weight
/// stream is the limit). The f32 [`GemmPath::Auto`] now takes the skinny path up to
/// [`AUTO_SKINNY_MAX_M`] (measured, see there) and [`gemm_f32_par`] splits by
/// columns up to [`COLUMN_SPLIT_MAX_M`] (the int8 and bf16 `*_par` calls have their own
/// thresholds).
pub const SKINNY_MAX_M: usize = 32;

/// The cache blocking `(MC, KC, NC)` the blocked path uses for an `m x n x k` call
/// on `isa` (derived from the detected cache sizes; for logs and benchmarks).
pub fn blocking(isa: Isa, m: usize, n: usize, k: usize) -> (usize, usize, usize) {
    let i = kernel_info(isa.kind());
    let b = Blocking::new(i.mr, i.nr, i.kc_max, m, n, k);
    (b.mc, b.kc, b.nc)
}

thread_local! {
    /// Per-thread packed-A block (`MC x KC`), grown on first use.
    static APACK: RefCell<AlignedBuf> = const { RefCell::new(AlignedBuf::new()) };
}

/// Runs a validated raw GEMM on `isa` with the given driver.
///
/// # Safety
/// Every pointer/stride in `g` must describe valid memory for the call (A: `m` rows
/// of `k` at stride `lda`; B: `ceil(n / NR)` panels of `[k][NR]` packed for `isa`'s
/// NR; C: `m` rows of `n` at stride `ldc`; epilogue operands `n` columns / `m`
/// rows), C must not overlap the inputs, and `k >= 1`.
pub(crate) unsafe fn run_path(isa: Isa, mut g: Raw, path: GemmPath) {
    if g.m == 0 || g.n == 0 {
        return;
    }
    let info = kernel_info(isa.kind());
    let path = match path {
        GemmPath::Auto if g.m <= AUTO_SKINNY_MAX_M => GemmPath::Skinny,
        GemmPath::Auto => GemmPath::Blocked,
        p => p,
    };
    let bl = Blocking::new(info.mr, info.nr, info.kc_max, g.m, g.n, g.k);
    let dispatch = |g: &Raw| match isa.kind() {
        IsaKind::Scalar => scalar::gemm(g, path, bl),
        // SAFETY: the token proves AVX2+FMA / AVX-512 support.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => avx2::gemm(g, path, bl),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => avx512::gemm(g, path, bl),
        // SAFETY: the token proves NEON.
        #[cfg(target_arch = "aarch64")]
        IsaKind::Neon => neon::gemm(g, path, bl),
        #[allow(unreachable_patterns)]
        _ => scalar::gemm(g, path, bl),
    };
    if path == GemmPath::Skinny {
        dispatch(&g);
        return;
    }
    APACK.with(|cell| {
        let mut buf = cell.borrow_mut();
        buf.ensure_len(bl.mc * bl.kc);
        g.apack = buf.as_mut_slice().as_mut_ptr();
        dispatch(&g)
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
    /// `ceil(n / NR)` panels of `[k][NR]`, 64-byte aligned (packed here, or mapped from
    /// a file that holds them: [`PackedMatrix::from_packed`]).
    data: WeightBuf,
}

impl PackedMatrix {
    /// Packs `w: [n, k]` (PyTorch Linear layout, row-major) for `isa`'s microkernel.
    pub fn pack(isa: Isa, w: &[f32], n: usize, k: usize) -> Result<PackedMatrix, KernelError> {
        let info = kernel_info(isa.kind());
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
            data: WeightBuf::Owned(data),
        })
    }

    /// The packed panels as bytes (`ceil(n / NR) · NR · k` floats, native byte order), for
    /// saving them: [`PackedMatrix::from_packed`] takes them back.
    pub fn packed_bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// A matrix over panels packed earlier for `isa` (the bytes of
    /// [`PackedMatrix::packed_bytes`] in a mapped file, e.g. the engine's packed-weights
    /// cache), used in place: bitwise the matrix [`PackedMatrix::pack`] made. The range must
    /// hold exactly the layout's `ceil(n / NR) · NR · k` floats and be 64-byte aligned.
    pub fn from_packed(
        isa: Isa,
        n: usize,
        k: usize,
        data: crate::mapped::MappedF32,
    ) -> Result<PackedMatrix, KernelError> {
        let info = kernel_info(isa.kind());
        let len = crate::checked_len(
            "PackedMatrix::from_packed",
            &[n.div_ceil(info.nr), info.nr, k],
        )?;
        Ok(PackedMatrix {
            isa,
            n,
            k,
            nr: info.nr,
            name: info.name,
            data: WeightBuf::mapped("PackedMatrix::from_packed", data, len)?,
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

/// `C[m, n] = epilogue(Σ_q A[i, q] · W[j, q])` with `b` = W prepacked for `b.isa()`.
///
/// `a: [m, k]`, `c: [m, n]`, row-major, lengths exact. `m = 0` is a no-op. C is fully
/// overwritten (its previous contents are ignored). Single-threaded; row sub-slices
/// (with the matching residual rows) can be run on different threads.
///
/// **Bitwise reproducible** for a given ISA: a row's result does not depend on `m`,
/// its position in `a`, row chunking, column splits ([`gemm_f32_cols`]) or the path
/// (each element is one in-order FMA chain over K from 0, then the epilogue; see
/// `gemm/kernel.rs`).
pub fn gemm_f32(
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    gemm_f32_path(a, m, b, c, epilogue, GemmPath::Auto)
}

/// [`gemm_f32`] with the driver forced (tests and benchmarks: every path gives
/// bitwise identical results, only the speed differs).
pub fn gemm_f32_path(
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
    path: GemmPath,
) -> Result<(), KernelError> {
    let n = b.n;
    validate_call("gemm_f32", a, m, b, &epilogue)?;
    if c.len() != crate::checked_len("gemm_f32 c", &[m, n])? {
        return shape_err!(
            "gemm_f32 ({}): c has {} floats, expected m*n = {m}*{n}",
            b.name,
            c.len()
        );
    }
    // SAFETY: a, b, epilogue validated for (m, n, k); c is a unique borrow of m*n
    // floats, so `m` rows of the n columns at ldc = n are in bounds and disjoint
    // from the inputs.
    unsafe { call(a, m, b, 0..n, c.as_mut_ptr(), n, epilogue, path) };
    Ok(())
}

/// Output columns `cols` only: `c_block[m, cols.len()]` (row-major, its own row
/// stride `cols.len()`) `= epilogue(A · W[cols]ᵀ)`, bitwise equal to those columns
/// of the full [`gemm_f32`].
///
/// `cols.start` must be a multiple of the panel width NR ([`tile`],
/// [`PackedMatrix::panel_width`]) and `cols.end` a multiple of NR or `n`. The
/// epilogue takes the **full** operands, as for the whole call (`bias: [n]`,
/// `residual: [m, n]`); the function reads their `cols` columns.
///
/// This is the N-split for skinny calls (a batch-1 query): two threads each compute
/// one column range into their own block, then the caller copies the blocks into
/// place (or use [`gemm_f32_par`], which writes in place).
pub fn gemm_f32_cols(
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    cols: std::ops::Range<usize>,
    c_block: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    validate_call("gemm_f32_cols", a, m, b, &epilogue)?;
    validate_cols(b, &cols)?;
    let w = cols.len();
    if c_block.len() != crate::checked_len("gemm_f32_cols c", &[m, w])? {
        return shape_err!(
            "gemm_f32_cols ({}): c_block has {} floats, expected m*cols = {m}*{w}",
            b.name,
            c_block.len()
        );
    }
    // SAFETY: validated as above; c_block holds m rows of w = cols.len() at ldc = w.
    unsafe {
        call(
            a,
            m,
            b,
            cols,
            c_block.as_mut_ptr(),
            w,
            epilogue,
            GemmPath::Auto,
        )
    };
    Ok(())
}

/// Rows up to which [`GemmPath::Auto`] takes the skinny path (A read in place, no A
/// packing, weight prefetch) rather than the BLIS-blocked one. First 32 (the query
/// shapes it was written for); measured since on the whole e5-small-v2-shape forward
/// (medians, two interleaved rounds, this 2-core SPR-class VM) the skinny path wins
/// at every M the engine produces: 32 x 128 tokens one thread (GEMM M = 2048) 1437 ms
/// blocked vs 1252-1268 ms skinny (AVX-512; AVX2 2503-2513 vs 2314-2359 ms), two
/// threads 706 vs 678 ms; batch 1 on 2 threads: 64 tokens 17.6 vs 13.7 ms, 128 tokens
/// 29.4 vs 26.2, 256: 53.6 vs 47.8, 512: 116 vs 100. K <= 1536 here, so a row of A
/// (<= 6 KB) and the 32-column weight panel stay in L1/L2 without packing. Beyond
/// 4096 rows (a budget above the default) the blocked path is kept, unmeasured.
pub const AUTO_SKINNY_MAX_M: usize = 4096;

/// Rows up to which [`gemm_f32_par`] splits by columns rather than rows. Measured
/// (e5-small-v2-shape, batch 1, 2 threads, whole forward, medians of 20, two
/// interleaved rounds): 64 tokens 17.9 ms by columns vs 19.6 ms by rows (a 64-row
/// call split as 36 + 28 rows leaves each thread a short, uneven M and every thread
/// streams all the weights); 128 tokens 32.3 vs 30.3 ms, 256: 62.4 vs 56.9, 512:
/// 129.9 vs 119.3 (by columns each thread packs all of A). So columns up to 96.
pub const COLUMN_SPLIT_MAX_M: usize = 96;

/// [`gemm_f32`] split over up to `threads` tasks on the current rayon pool (the
/// global pool outside one): by row blocks of whole MR tiles for large `m`, by
/// column ranges of whole panels for `m <= COLUMN_SPLIT_MAX_M` (where splitting rows
/// would make each thread stream all the weights for a short, uneven M). Results are bitwise identical to
/// [`gemm_f32`] for any `threads`. `threads <= 1` runs on the calling thread.
pub fn gemm_f32_par(
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    c: &mut [f32],
    epilogue: Epilogue,
    threads: usize,
) -> Result<(), KernelError> {
    let n = b.n;
    validate_call("gemm_f32_par", a, m, b, &epilogue)?;
    if c.len() != crate::checked_len("gemm_f32_par c", &[m, n])? {
        return shape_err!(
            "gemm_f32_par ({}): c has {} floats, expected m*n = {m}*{n}",
            b.name,
            c.len()
        );
    }
    let run_part = |(rows, cols): crate::par::Part, at: *mut f32| {
        let (r0, mr) = (rows.start, rows.len());
        let epi = epilogue.for_rows(r0, mr, n);
        // SAFETY: a/b/epilogue validated for (m, n, k); the rows r0..r0+mr of a and
        // of the residual are in bounds; `at` is C's element (r0, cols.start), and C
        // rows r0.. at ldc = n, columns `cols`, lie inside c (m*n floats, exclusively
        // borrowed for this call), and the parts are disjoint rectangles, so no two
        // tasks write the same element.
        unsafe {
            call(
                &a[r0 * b.k..(r0 + mr) * b.k],
                mr,
                b,
                cols,
                at,
                n,
                epi,
                GemmPath::Auto,
            )
        }
    };
    crate::par::split_output(c, (m, n), b.nr, threads, COLUMN_SPLIT_MAX_M, run_part);
    Ok(())
}

/// Checks `a: [m, k]` and the epilogue operands against `b`'s `(n, k)`.
fn validate_call(
    what: &str,
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    epilogue: &Epilogue,
) -> Result<(), KernelError> {
    let (n, k) = (b.n, b.k);
    if a.len() != crate::checked_len(what, &[m, k])? {
        return shape_err!(
            "{what} ({}): a has {} floats, expected m*k = {m}*{k}",
            b.name,
            a.len()
        );
    }
    crate::epilogue::validate(epilogue, m, n)
}

fn validate_cols(b: &PackedMatrix, cols: &std::ops::Range<usize>) -> Result<(), KernelError> {
    let (n, nr) = (b.n, b.nr);
    if cols.start > cols.end
        || cols.end > n
        || !cols.start.is_multiple_of(nr)
        || !(cols.end.is_multiple_of(nr) || cols.end == n)
    {
        return shape_err!(
            "gemm_f32_cols ({}): columns {cols:?} must lie in 0..{n}, start at a multiple of \
             NR = {nr} and end at one or at n",
            b.name
        );
    }
    Ok(())
}

/// Computes columns `cols` of C (`m` rows at row stride `ldc`, `c` pointing at the
/// element (0, cols.start) of the output) on `b.isa`.
///
/// # Safety
/// `a`, `b`, `epilogue` validated for `(m, b.n, b.k)`; `cols` validated; `c` valid
/// for `m` rows of `cols.len()` floats at stride `ldc` and not overlapping inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn call(
    a: &[f32],
    m: usize,
    b: &PackedMatrix,
    cols: std::ops::Range<usize>,
    c: *mut f32,
    ldc: usize,
    epilogue: Epilogue,
    path: GemmPath,
) {
    let (n, k) = (b.n, b.k);
    let w = cols.len();
    if m == 0 || w == 0 {
        return;
    }
    let j0 = cols.start;
    if k == 0 {
        // Empty sum: C = epilogue(0), by the scalar epilogue. `-0.0 + x` is `x` for
        // every x, so the biased epilogues see the bias itself (+0.0 would turn a -0.0
        // bias into +0.0); no epilogue stores +0.0.
        let zero = if matches!(epilogue, Epilogue::None) {
            0.0
        } else {
            -0.0
        };
        for i in 0..m {
            for jj in 0..w {
                *c.add(i * ldc + jj) = epilogue.apply(zero, i, j0 + jj, n);
            }
        }
        return;
    }
    let epi = Epi::new(epilogue, n, j0);
    let g = Raw {
        a: a.as_ptr(),
        lda: k,
        m,
        // Panel j0 / NR (j0 is a multiple of NR).
        b: b.data.as_slice().as_ptr().add((j0 / b.nr) * k * b.nr),
        n: w,
        k,
        c,
        ldc,
        epi,
        apack: std::ptr::null_mut(),
    };
    // SAFETY: per the caller's contract; the packed buffer holds ceil(n/NR) panels
    // of [k][NR] for b.isa's NR, so the panels from j0/NR cover the w columns;
    // b.isa is a token for this CPU.
    run_path(b.isa, g, path)
}
