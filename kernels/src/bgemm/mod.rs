//! bf16 GEMM with f32 accumulation and fused f32 epilogues:
//! `C[m, n] = epilogue(bf16(A)[m, k] · bf16(W)ᵀ)`, W in the PyTorch Linear layout
//! `[n = out, k = in]`, A and C in f32.
//!
//! # bf16 and the conversion ([`f32_to_bf16`], [`convert_rows`])
//!
//! bf16 is the top 16 bits of an f32 (sign, 8-bit exponent, 7 explicit mantissa
//! bits: 8 significant bits, unit roundoff 2^-8). The conversion is **exactly what
//! `vcvtne2ps2bf16` does** (Intel SDM pseudo-code, and checked bit for bit against
//! the instruction by the tests):
//! - normal numbers: round to nearest, ties to even, by the integer trick
//!   `(bits + 0x7fff + lsb) >> 16` (`lsb` = bit 16); a value past the largest bf16
//!   rounds to ±inf (as RNE must);
//! - ±0 and **f32 subnormals -> signed zero** (the instruction ignores MXCSR and
//!   treats denormal inputs as zero; bf16 has the f32 exponent range, so no normal
//!   f32 underflows);
//! - ±inf kept; **NaN: truncated, quiet bit (0x0040) set**, sign and the top payload
//!   bits kept (`0x7f800001 -> 0x7fc0`, `0xffc12345 -> 0xffc1`).
//!
//! Weights are converted once ([`Bf16Matrix::from_f32`]) or taken as stored
//! ([`Bf16Matrix::from_bf16_bits`], a bf16 model file); activations are converted per
//! call inside [`gemm_bf16`], one MC-row block at a time into a per-thread scratch.
//!
//! # What `vdpbf16ps` computes (and the reference reproduces bit for bit)
//!
//! `vdpbf16ps acc, x, y` adds, per f32 lane `i`, the two products of the bf16 pair
//! `(x[2i], x[2i+1])·(y[2i], y[2i+1])`. Measured on this machine (probe values in
//! `kernels/tests/bgemm.rs`, `dot_semantics_*`), matching the SDM pseudo-code:
//! 1. **two roundings, odd element first**: `acc = rne(acc + x[2i+1]·y[2i+1])`, then
//!    `acc = rne(acc + x[2i]·y[2i])`; each product is exact (8 x 8 bits, and with an
//!    unbounded exponent: `-MAX + 2^64·2^64 = 2^104`, no intermediate overflow);
//! 2. **DAZ / FTZ**: bf16 subnormal inputs and a subnormal `acc` count as zero, and
//!    every rounded sum that is subnormal is flushed to zero (also the intermediate
//!    one), whatever MXCSR says;
//! 3. RNE always (MXCSR ignored), no exceptions.
//!
//! The scalar reference ([`gemm_bf16_reference`]) models exactly this (product in
//! f64, which is exact; the f64 sum rounded once to f32, which is the correctly
//! rounded f32 sum: double rounding f64 -> f32 is innocuous for a sum since
//! 53 >= 2·24 + 2; then the flush). So the reference accumulates **in f32, in the
//! kernels' order**, and the AVX-512 kernel equals it **bitwise** for every epilogue
//! but GELU (vector erf vs f64 erf: the GELU budget of the f32 GEMM).
//!
//! # Accumulation order (bitwise reproducibility)
//!
//! Each element of C is one chain over the K pairs in order, from +0.0:
//! `for q in 0..kp/2 { acc += A[2q+1]·W[2q+1]; acc += A[2q]·W[2q] }` (K padded to
//! even `kp` with a zero A and W element), then the epilogue in f32 in a fixed
//! order (`+bias`, then GELU or `+residual`). A later K slice continues the chain
//! from the f32 value stored in C (exact). So a row's result does not depend on `m`,
//! its position, row chunking, column ranges ([`gemm_bf16_cols`]), MC / KC, or the
//! tile that computed it; and the Scalar and AVX-512 paths agree (except GELU).
//!
//! # Packed weight layout (the VNNI-style pair layout) and microkernel contract
//!
//! `ceil(n / NR)` panels of NR columns; panel `p` is `[kp / 2][NR][2]` bf16: for
//! k-pair `q`, column `j` of the panel holds `W[p·NR + j, 2q]` (low half of the
//! 32-bit pair) and `W[p·NR + j, 2q + 1]` (high half) side by side: one 64-byte
//! load is the 16 pairs `vdpbf16ps` multiplies with a broadcast activation pair
//! `A[i, 2q .. 2q+2]` (`vpbroadcastd`, folded by LLVM into the `{1to16}` memory
//! operand). Columns past `n` and the pad element `k` (odd k) are zero. Panel `p`
//! starts at pair `p · (kp/2) · NR` of a 64-byte aligned buffer. The Scalar path
//! uses NR = 1, i.e. plain `[n][kp]` rows.
//!
//! Activations: per MC-row block, `A[ib.., 0..k]` is converted into a row-major
//! `[mc][kp]` bf16 scratch (pad 0). The microkernel reads `R` rows of it in place
//! (row stride `kp/2` pairs), holds an `R x V` tile of f32 zmm accumulators (`V`
//! vectors of 16 columns = `V/2` panels), loops over one K slice, and on the last
//! slice applies the epilogue from registers; column edges store with masks, rows
//! are exact (`R` from a jump table). Driver (`x86::driver`):
//!
//! ```text
//! for ib in 0..m step MC            // convert A rows ib..ib+MC to bf16 (L2, ≤ 147 KB)
//!   for q0 in 0..kp/2 step KCQ      // K slice: first starts the chains at 0, later continue from C
//!     for p in panels               // B micro-panel KCQ x NR (24 KB: L1), reused by every row tile
//!       for full 8-row tiles        // 8 x 32 tile, epilogue on the last slice
//!     remainder rows: wide tiles over all panels (1-2 rows x 4 panels, 3 x 3, 4-6 x 2, 7 x 1)
//! ```
//!
//! | BIsa        | kernel                        | MR x NR | KC (k) | MC |
//! |-------------|-------------------------------|---------|--------|----|
//! | scalar      | `gemm_bf16_scalar`            | 1 x 1   | all    | -  |
//! | avx512bf16  | `gemm_bf16_avx512bf16_8x32`   | 8 x 32  | 384    | 48 |
//! | avx512widen | `gemm_bf16w_avx512_10x32`     | 10 x 32 | all    | 60 |
//! | amx         | `gemm_bf16_amx_32x32`         | 32 x 16 | all    | 64 |
//!
//! **Amx** (`bgemm/amx.rs`): `tdpbf16ps` tiles over [`crate::tiles`], panels of NR = 16
//! with K padded to whole 32-element tiles. Its accumulation order is the instruction's
//! (per 16 pairs, even and odd chains summed, then added to the accumulator), so it is
//! **not** bitwise equal to the other paths: within `2·kp·2^-24·Σ|a·w|` of the
//! reference, and bitwise equal to the scalar model of its own order. Only where
//! `amx::status()` is Available; never run on hardware yet.
//!
//! **Avx512Widen** uses the same packed weights but no BF16 instruction: each
//! 64-byte load of 16 pairs becomes two f32 vectors by bit moves (`vpslld 16` gives
//! the even elements, `vpandq 0xffff0000` the odd ones: bf16 is the top half of an
//! f32), multiplied with the **unrounded f32** activations (read in place, no
//! conversion) by f32 FMAs in K order. It is exactly the f32 GEMM's FMA chain with
//! the weights rounded to bf16 (tested bitwise against `gemm_f32` on the rounded
//! weights), so only W carries bf16 error. It is the path for AVX-512 CPUs without
//! BF16, and **the default bf16 path on AVX-512** ([`BIsa::best`]): per 16 pairs it
//! costs 2 bit ops + 2 FMAs per row on the FMA ports instead of one ~2-cycle
//! `vdpbf16ps`, so it runs at nearly the f32 GEMM's speed with half its weight bytes.
//! Its own tile is **10 x 32** over **all of K** (no K slices: A is f32 in place, the
//! `kp x 32` panel stays in L2) in row blocks of 60: at 12 rows (24 accumulators + 4
//! widened weight vectors + mask + broadcast = 31 zmm) LLVM kept a spill store after
//! every FMA. Whole e5-small-v2-shape forward, 32 x 128, one thread (`e5embed bench
//! --precision bf16 --isa avx512widen --threads 1`): 2783 ms (12 rows, broadcasts as
//! FMA memory operands: load-port bound) -> 1996 (one broadcast per row and
//! even/odd) -> 1450 (8-row tile: no spills) -> 1387 (no K slices) -> 1347 ms (10
//! rows, blocks of 60); f32 1245 ms, `vdpbf16ps` 2356 ms.
//!
//! **Tile 12 x 32, the first design** (Sapphire Rapids class, measured here with a
//! dependent chain and 12 independent chains): `vdpbf16ps zmm` has a latency of ~9 cycles and a
//! throughput of one per ~2 cycles (it behaves like two dependent f32 FMAs plus the
//! bf16 widening: 32 products per 2 cycles, **half the products/cycle of f32 FMA
//! on 2 ports**, see the bench). Hiding the latency needs >= 5 independent
//! accumulators; 12 rows x 2 zmm = 24 accumulators + 2 B vectors = 26 of 32 zmm (the
//! broadcast is a memory operand). Per k-pair: 2 B loads + 12 broadcast loads for 24
//! `vdpbf16ps` (~24 cycles): the loads are nowhere near a limit, the dot-product
//! port is. MR = 12 is also the f32 and int8 GEMMs' MR (the engine's row chunks are
//! multiples of 12), NR = 32 divides every model N (384, 1152, 1536).
//!
//! **Zen 5 (AMD EPYC family 25 model 17, KVM, Dec 2; `e5embed bench --peak`)**:
//! `vdpbf16ps zmm` issues one per cycle (234 GFLOP/s per thread = **2.0x the f32 FMA
//! zmm peak** of 117: one 512-bit FMA per cycle here) with a latency of 1.5x the FMA's
//! (6 cycles at the FMA's 4): 6 independent accumulators saturate it, the 12 x 32
//! tile has 24, and per k-pair its 2 + 12 loads for 24 `vdpbf16ps` leave the load
//! ports idle half the time. The intrinsic K loop ran at 38% of that peak because
//! LLVM stored every accumulator to the stack after each `vdpbf16ps` (the accumulator
//! array's address escaped to the out-of-line epilogue): the full tile's K loop became
//! `asm!` (fixed registers), 84-94 -> 160-217 GFLOP/s, 1.7-1.9x the f32 GEMM at T = 128
//! and 4096 (`examples/bgemm_probe 1,128,4096 all`, kernels/PERF.md).
//!
//! **Tile 8 x 32** (Zen 4, Dec 4): the intrinsic loop at 8 rows (16 accumulators, the
//! broadcast pair as the memory operand) compiles without spills and runs 2-3.5% faster
//! than that 12 x 32 `asm!` tile at every model shape and T (`bgemm_probe`: QKV
//! 211-221 -> 222-225 GFLOP/s, FFN down 210-214 -> 215-218, FFN up with GELU 198-203 ->
//! 205-206, of a 233.5 peak), so the full tile is 8 x 32 with no `asm!`. Same
//! `vdpbf16ps` per output element in the same K order: bitwise the 12 x 32 tile's
//! results. 16 accumulators still cover the latency x throughput of every core measured
//! (Zen 4: 6; Sapphire Rapids: ~5).
//!
//! **Measured on the Sapphire Rapids VM before that fix (one thread, GFLOP/s,
//! `benches/bgemm.rs`)**: the
//! `vdpbf16ps` kernel runs at 75-90 GFLOP/s at every T, i.e. at the instruction's
//! own ceiling (probe: ~2 cycles per `vdpbf16ps zmm` = 32 products / 2 cycles,
//! while f32 FMA does 2 x 16 products / cycle). So on Sapphire Rapids AVX512-BF16 is
//! **a bandwidth format, not a compute speed-up**: it wins where the weight stream
//! is the limit (T = 1: 1.3-3.8x faster than f32, half the bytes) and loses ~40%
//! from T = 16 up, where the f32 GEMM reaches 130-160 GFLOP/s.
//!
//! **KC = 384** (192 pairs): the B micro-panel `192 x 32` pairs = 24 KB, half the
//! 48 KB L1D; K = 1536 runs as 4 slices. **MC = 48**: the converted A block
//! (48 x 1536 bf16 = 147 KB) and its C rows stay in L2 across the panel sweep.

pub(crate) mod amx;
#[cfg(target_arch = "aarch64")]
mod neon;
pub(crate) mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use reference::{gemm_bf16_reference, gemm_bf16_reference_bits};

use crate::buf::{AlignedBuf, WeightBuf};
use crate::epilogue::{validate as validate_epilogue, Epilogue};
use crate::isa::{Family, Features, Path};
use crate::{shape_err, KernelError};

/// `f32 -> bf16` bits, round to nearest even, exactly as `vcvtne2ps2bf16`
/// (subnormals -> signed zero, NaN quieted; see the module docs).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7f80_0000 == 0 {
        // ±0 and f32 subnormals: signed zero (the instruction's DAZ).
        return ((b >> 16) & 0x8000) as u16;
    }
    if b & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: truncate and force the quiet bit.
        return ((b >> 16) | 0x0040) as u16;
    }
    // Normal or inf: add 0x7fff + (bit 16) and truncate = RNE on the low 16 bits.
    // Cannot wrap: b <= 0xff80_0000 here.
    let lsb = (b >> 16) & 1;
    ((b + 0x7fff + lsb) >> 16) as u16
}

/// `bf16 -> f32` (exact: the bits become the top half of the f32).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Length in bf16 elements of a converted row for a reduction length `k`:
/// `k` rounded up to even (the `vdpbf16ps` pair).
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(2) * 2
}

/// The bf16 GEMM paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BIsaKind {
    /// Portable Rust: the bit-exact model of `vdpbf16ps` (the reference), also the
    /// fallback.
    Scalar,
    /// AVX-512 BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`) + AVX-512 F/BW/VL/DQ.
    Avx512Bf16,
    /// bf16 weights widened to f32 in registers (two bit moves per 16 pairs), f32
    /// activations (not rounded), f32 FMA: AVX-512 F/BW/VL/DQ + FMA, no BF16
    /// instruction; more accurate than Avx512Bf16 (only W is rounded). Work in
    /// progress on speed (see the module docs).
    Avx512Widen,
    /// AMX `tdpbf16ps` tiles (`bgemm/amx.rs`, over the tile interface of `tiles/`):
    /// AMX-BF16 + AVX-512 F/BW/VL/DQ + BF16 (conversion and epilogue). Not bitwise
    /// equal to Avx512Bf16 (the instruction's own accumulation order, `bgemm/amx.rs`).
    Amx,
    /// aarch64 NEON without a bf16 instruction (`bgemm/neon.rs`): weights `[kp][NR]`
    /// bf16 per panel widened to f32 by `shll #16`, f32 activations (not rounded),
    /// `fmla` by element: the f32 NEON GEMM's FMA chain on the rounded weights, as
    /// Avx512Widen is on x86. The bf16 path of aarch64 CPUs without FEAT_BF16.
    NeonWiden,
    /// aarch64 FEAT_BF16 `bfmmla` (`bgemm/neon.rs`): activations rounded to bf16 (as
    /// every dot-product path), weights in k-groups of 4 per column pair. The
    /// instruction's arithmetic is not `vdpbf16ps`'s (round-to-odd, the two products
    /// of a pair summed first): **not** bitwise equal to the reference; bitwise equal
    /// to the scalar model of `bfmmla` ([`testing::gemm_bf16_bfmmla_order_reference`]).
    NeonBf16,
}

impl BIsaKind {
    /// Every kind, lowest to highest preference by instruction set; [`BIsa::best`]
    /// still takes Avx512Widen wherever AVX-512 F is present ([`Family::PREFERRED`]:
    /// see the bench numbers in the module docs for how they compare).
    pub const ALL: [BIsaKind; 6] = [
        BIsaKind::Scalar,
        BIsaKind::Avx512Widen,
        BIsaKind::Avx512Bf16,
        BIsaKind::Amx,
        BIsaKind::NeonWiden,
        BIsaKind::NeonBf16,
    ];

    /// `scalar`, `avx512bf16`, `avx512widen`, `amx`, `neonwiden`, `neonbf16`.
    pub fn name(self) -> &'static str {
        match self {
            BIsaKind::Scalar => "scalar",
            BIsaKind::Avx512Bf16 => "avx512bf16",
            BIsaKind::Avx512Widen => "avx512widen",
            BIsaKind::Amx => "amx",
            BIsaKind::NeonWiden => "neonwiden",
            BIsaKind::NeonBf16 => "neonbf16",
        }
    }
}

impl crate::isa::sealed::Sealed for BIsaKind {}

impl Family for BIsaKind {
    const TOKEN: &'static str = "BIsa";
    const KINDS: &'static [BIsaKind] = &BIsaKind::ALL;
    const SCALAR: BIsaKind = BIsaKind::Scalar;
    /// None: the last available of [`BIsaKind::ALL`], i.e. `vdpbf16ps` wherever
    /// AVX512-BF16 is, else Avx512Widen on AVX-512 F. Until the `vdpbf16ps` tile's K
    /// loop moved to `asm!` (Dec 2) LLVM stored every accumulator after each
    /// `vdpbf16ps` and Avx512Widen was preferred; with the fix, on Zen 5 (AMD EPYC
    /// family 25 model 17, KVM) `vdpbf16ps` runs the model's GEMMs at 1.7-1.9x the f32
    /// GEMM and the whole forward at 1.7x (module docs). Not re-measured on Sapphire
    /// Rapids (whose `vdpbf16ps` probe was one per ~2 cycles: about the f32 FMA rate,
    /// half the weight bytes); per-CPU choice by measurement is issue 17 item 1.
    const PREFERRED: Option<BIsaKind> = None;

    fn name(self) -> &'static str {
        BIsaKind::name(self)
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            BIsaKind::Avx512Bf16 => &["avx512-bf16", "avx512_bf16", "bf16"],
            BIsaKind::Avx512Widen => &["widen"],
            BIsaKind::NeonBf16 => &["bfmmla"],
            BIsaKind::Scalar | BIsaKind::Amx | BIsaKind::NeonWiden => &[],
        }
    }

    /// Avx512Bf16 = avx512f/bw/vl/dq + avx2/fma + avx512bf16; Avx512Widen = the same
    /// without avx512bf16; NeonWiden = neon; NeonBf16 = neon + bf16.
    fn requires(self) -> Features {
        let avx512 = Features::AVX2.with(Features::AVX512);
        match self {
            BIsaKind::Scalar => Features::NONE,
            BIsaKind::Avx512Bf16 => avx512.with(Features::AVX512_BF16),
            BIsaKind::Avx512Widen => avx512,
            BIsaKind::Amx => avx512.with(Features::AVX512_BF16).with(Features::AMX_BF16),
            BIsaKind::NeonWiden => Features::NEON,
            BIsaKind::NeonBf16 => Features::NEON.with(Features::BF16),
        }
    }

    /// e.g. `"gemm_bf16_avx512bf16_8x32"` (the table in the module docs).
    fn kernel_name(self) -> &'static str {
        match self {
            BIsaKind::Scalar => "gemm_bf16_scalar",
            BIsaKind::Avx512Bf16 => "gemm_bf16_avx512bf16_8x32",
            BIsaKind::Avx512Widen => "gemm_bf16w_avx512_10x32",
            BIsaKind::Amx => "gemm_bf16_amx_32x32",
            BIsaKind::NeonWiden => "gemm_bf16w_neon_8x12",
            BIsaKind::NeonBf16 => "gemm_bf16_neonbf16_8x12",
        }
    }

    fn tile(self) -> (usize, usize) {
        match self {
            BIsaKind::Scalar => (1, 1),
            BIsaKind::Avx512Bf16 => (12, 32),
            BIsaKind::Avx512Widen => (10, 32),
            BIsaKind::Amx => (32, amx::NR),
            // bgemm/neon.rs: 8 rows x 12 columns on both aarch64 paths.
            BIsaKind::NeonWiden | BIsaKind::NeonBf16 => (8, 12),
        }
    }
}

crate::isa::family_str!(BIsaKind);

/// A token proving this CPU supports a [`BIsaKind`] (the one generic token,
/// [`crate::isa::Path`]: private field, only [`BIsa::new`] builds one after checking the
/// CPU). Holding it is what makes the `#[target_feature]` kernels behind it sound to
/// call. [`BIsa::best`] is [`BIsaKind::Avx512Widen`] where AVX-512 F is present (see
/// [`Family::PREFERRED`]); `BIsa::from_name` takes `scalar|avx512bf16|avx512widen` (and
/// aliases: `avx512-bf16`, `avx512_bf16`, `bf16`, `widen`).
pub type BIsa = Path<BIsaKind>;

/// Converts `a: [m, k]` f32 rows to bf16 bits `out: [m, padded_k(k)]` (pad element
/// 0) with [`f32_to_bf16`]'s rounding; bitwise identical on every [`BIsa`]
/// (AVX-512: `vcvtne2ps2bf16`, 32 floats per instruction).
pub fn convert_rows(
    isa: BIsa,
    a: &[f32],
    m: usize,
    k: usize,
    out: &mut [u16],
) -> Result<(), KernelError> {
    if a.len() != crate::checked_len("convert_rows a", &[m, k])? {
        return shape_err!(
            "convert_rows: a has {} floats, expected m*k = {m}*{k}",
            a.len()
        );
    }
    let kp = padded_k(k);
    if out.len() != crate::checked_len("convert_rows out", &[m, kp])? {
        return shape_err!(
            "convert_rows: out has {} elements, expected m*padded_k(k) = {m}*{kp}",
            out.len()
        );
    }
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        BIsaKind::Avx512Bf16 | BIsaKind::Amx => {
            // SAFETY: the token proves AVX-512 F/BW + BF16 (Amx requires them too); a holds m rows of k,
            // out m rows of kp (validated above).
            unsafe { x86::convert_rows(a.as_ptr(), m, k, out.as_mut_ptr()) }
        }
        _ => reference::convert_rows_unchecked(a, m, k, out),
    }
    Ok(())
}

/// Weights `W[n, k]` as bf16, packed once for one [`BIsa`]'s microkernel (layout in
/// the module docs). Immutable, `Send + Sync`: share one across threads.
#[derive(Clone)]
pub struct Bf16Matrix {
    isa: BIsa,
    n: usize,
    k: usize,
    kp: usize,
    /// Elements per column in a panel: `kp`, or for the AMX layout `kp` rounded up to
    /// whole 32-element tiles (zeros past `kp`).
    pk: usize,
    nr: usize,
    /// `ceil(n / NR)` panels of `[kp / 2][NR][2]` bf16, 64-byte aligned (an f32
    /// buffer holding one bf16 pair per element: `npanels · NR · kp / 2` pairs); packed
    /// here, or mapped from a file that holds it ([`Bf16Matrix::from_packed`]).
    data: WeightBuf,
}

impl Bf16Matrix {
    /// Rounds `w: [n, k]` (PyTorch Linear layout, row-major f32) to bf16
    /// ([`f32_to_bf16`]) and packs it for `isa`.
    pub fn from_f32(isa: BIsa, w: &[f32], n: usize, k: usize) -> Result<Bf16Matrix, KernelError> {
        Self::check("Bf16Matrix::from_f32", isa, w.len(), n, k)?;
        Ok(Self::pack(isa, n, k, |j, row| {
            for (d, &x) in row.iter_mut().zip(&w[j * k..(j + 1) * k]) {
                *d = f32_to_bf16(x);
            }
        }))
    }

    /// Packs bf16 weights as stored (`w: [n, k]` bf16 bit patterns, e.g. from a bf16
    /// safetensors file), bit for bit.
    pub fn from_bf16_bits(
        isa: BIsa,
        w: &[u16],
        n: usize,
        k: usize,
    ) -> Result<Bf16Matrix, KernelError> {
        Self::check("Bf16Matrix::from_bf16_bits", isa, w.len(), n, k)?;
        Ok(Self::pack(isa, n, k, |j, row| {
            row.copy_from_slice(&w[j * k..(j + 1) * k])
        }))
    }

    fn check(what: &str, isa: BIsa, len: usize, n: usize, k: usize) -> Result<(), KernelError> {
        if len != crate::checked_len(what, &[n, k])? {
            return shape_err!("{what}: w has {len} elements, expected n*k = {n}*{k}");
        }
        let nr = isa.tile().1;
        // Padded size (bf16 elements), checked too.
        crate::checked_len(what, &[n.div_ceil(nr), nr, panel_k(isa, padded_k(k))])?;
        Ok(())
    }

    /// Packs the rows `row(j, out)` writes (`out`: `[k]` bf16 bits) into `isa`'s layout
    /// ([`index`], one row's offsets worked out once: packing runs at every load without
    /// the packed-weights cache and in the tuning measurement).
    fn pack(isa: BIsa, n: usize, k: usize, row: impl Fn(usize, &mut [u16])) -> Bf16Matrix {
        let nr = isa.tile().1;
        let kp = padded_k(k);
        let pk = panel_k(isa, kp);
        let elems = n.div_ceil(nr) * nr * pk;
        let mut data = AlignedBuf::zeroed(elems / 2);
        {
            let s = data.as_mut_slice();
            // SAFETY: the f32 buffer holds `elems / 2` initialised floats = `elems`
            // u16 (elems is even because kp is); u16 has no invalid values and
            // alignment 2 <= 64.
            let d: &mut [u16] =
                unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u16>(), elems) };
            let mut r = vec![0u16; k];
            for j in 0..n {
                row(j, &mut r);
                scatter_row(isa.kind(), nr, pk, j, &r, d);
            }
        }
        Bf16Matrix {
            isa,
            n,
            k,
            kp,
            pk,
            nr,
            data: WeightBuf::Owned(data),
        }
    }

    /// The packed panels as bytes (`npanels · NR · pk` bf16), for saving them:
    /// [`Bf16Matrix::from_packed`] takes them back.
    pub fn packed_bytes(&self) -> &[u8] {
        self.data.bytes()
    }

    /// A matrix over panels packed earlier for `isa` (the bytes of
    /// [`Bf16Matrix::packed_bytes`] in a mapped file, e.g. the engine's packed-weights cache),
    /// used in place: bitwise the matrix [`Bf16Matrix::from_f32`] made. The range must hold
    /// exactly the layout's `npanels · NR · pk` bf16 and be 64-byte aligned.
    pub fn from_packed(
        isa: BIsa,
        n: usize,
        k: usize,
        data: crate::mapped::MappedF32,
    ) -> Result<Bf16Matrix, KernelError> {
        const WHAT: &str = "Bf16Matrix::from_packed";
        let nr = isa.tile().1;
        let kp = padded_k(k);
        let pk = panel_k(isa, kp);
        let elems = crate::checked_len(WHAT, &[n.div_ceil(nr), nr, pk])?;
        Ok(Bf16Matrix {
            isa,
            n,
            k,
            kp,
            pk,
            nr,
            data: WeightBuf::mapped(WHAT, data, elems / 2)?,
        })
    }

    /// Output features (columns of C).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// `padded_k(k)`: K rounded up to even.
    pub fn k_padded(&self) -> usize {
        self.kp
    }

    pub fn isa(&self) -> BIsa {
        self.isa
    }

    /// The microkernel's name, e.g. `"gemm_bf16_avx512bf16_8x32"`.
    pub fn kernel_name(&self) -> &'static str {
        self.isa.kernel_name()
    }

    /// Panel width NR of the layout.
    pub fn panel_width(&self) -> usize {
        self.nr
    }

    /// The bf16 weights unpacked back to `[n, k]` bits (tests, debugging).
    pub fn to_bf16_bits(&self) -> Vec<u16> {
        let d = self.elems();
        let mut w = vec![0u16; self.n * self.k];
        for j in 0..self.n {
            for q in 0..self.k {
                w[j * self.k + q] = d[index(self.isa.kind(), self.nr, self.pk, j, q)];
            }
        }
        w
    }

    /// The packed buffer as bf16 elements.
    fn elems(&self) -> &[u16] {
        let s = self.data.as_slice();
        // SAFETY: see `pack`: `2 · s.len()` initialised u16.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u16>(), s.len() * 2) }
    }
}

/// Elements per column of a weight panel for `isa`: `kp`, or on the AMX layout `kp`
/// rounded up to whole 32-element tiles (`bgemm/amx.rs`), or for `bfmmla` to whole
/// k-groups of 4 (`bgemm/neon.rs`).
fn panel_k(isa: BIsa, kp: usize) -> usize {
    match isa.kind() {
        BIsaKind::Amx => amx::panel_k(kp),
        BIsaKind::NeonBf16 => kp.div_ceil(4) * 4,
        _ => kp,
    }
}

/// Element index of `W[j, q]` in the packed layout of `kind` (panel depth `pk`):
/// - the pair layout (every x86 path, Scalar with NR = 1): panel, k-pair, column, half;
/// - NeonWiden `[pk][NR]`: panel, k, column (one k row of the panel is 12 bf16 that
///   `shll` / `shll2` widen to three f32 vectors);
/// - NeonBf16 `[pk / 4][NR / 2][2][4]`: panel, k-group of 4, column pair, column, k in
///   the group (one 16-byte `bfmmla` operand = a column pair's 4 k each).
#[inline]
fn index(kind: BIsaKind, nr: usize, pk: usize, j: usize, q: usize) -> usize {
    let (panel, c) = ((j / nr) * pk * nr, j % nr);
    match kind {
        BIsaKind::NeonWiden => panel + q * nr + c,
        BIsaKind::NeonBf16 => panel + (q / 4) * nr * 4 + (c / 2) * 8 + (c % 2) * 4 + q % 4,
        _ => panel + (q / 2) * nr * 2 + c * 2 + q % 2,
    }
}

/// Writes row `j` (`r: [k]`) of the weights into the packed buffer `d` at [`index`]'s
/// places, with the row's panel and column offsets hoisted out of the k loop.
fn scatter_row(kind: BIsaKind, nr: usize, pk: usize, j: usize, r: &[u16], d: &mut [u16]) {
    let (panel, c) = ((j / nr) * pk * nr, j % nr);
    match kind {
        BIsaKind::NeonWiden => {
            for (q, &v) in r.iter().enumerate() {
                d[panel + q * nr + c] = v;
            }
        }
        BIsaKind::NeonBf16 => {
            let base = panel + (c / 2) * 8 + (c % 2) * 4;
            crate::scatter_groups(r, 4, d, base, nr * 4);
        }
        _ => crate::scatter_groups(r, 2, d, panel + c * 2, nr * 2),
    }
}

impl std::fmt::Debug for Bf16Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bf16Matrix")
            .field("kernel", &self.kernel_name())
            .field("n", &self.n)
            .field("k", &self.k)
            .finish()
    }
}

/// Checks `a: [m, k]` and the epilogue against `b`.
fn validate_call(
    what: &str,
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    epilogue: &Epilogue,
) -> Result<(), KernelError> {
    if a.len() != crate::checked_len(what, &[m, b.k])? {
        return shape_err!(
            "{what} ({}): a has {} floats, expected m*k = {m}*{}",
            b.kernel_name(),
            a.len(),
            b.k
        );
    }
    validate_epilogue(epilogue, m, b.n)
}

/// `C[m, n] = epilogue(Σ_q bf16(A[i, q]) · W[j, q])` with f32 accumulation, on
/// `b.isa()`.
///
/// `a: [m, k]` f32 (converted to bf16 inside, per MC-row block, into a per-thread
/// scratch of ≤ 48 x padded_k(k) bf16), `c: [m, n]` (fully overwritten), epilogue
/// operands as for `gemm_f32` (`bias: [n]`, `residual: [m, n]`). `m = 0` is a no-op.
/// Single-threaded; row sub-slices (a, c and residual rows) can run on different
/// threads with bitwise identical results (see the module docs).
pub fn gemm_bf16(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    c: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    validate_call("gemm_bf16", a, m, b, &epilogue)?;
    if c.len() != crate::checked_len("gemm_bf16 c", &[m, b.n])? {
        return shape_err!(
            "gemm_bf16 ({}): c has {} floats, expected m*n = {m}*{}",
            b.kernel_name(),
            c.len(),
            b.n
        );
    }
    // SAFETY: a and epilogue validated for (m, n, k); c holds m rows of n and is
    // exclusively borrowed.
    unsafe { call(a, m, b, 0..b.n, c.as_mut_ptr(), b.n, epilogue) };
    Ok(())
}

/// Output columns `cols` only: `c_block[m, cols.len()]` (its own row stride
/// `cols.len()`) `=` those columns of [`gemm_bf16`], bitwise. `cols.start` must be a
/// multiple of the panel width ([`Bf16Matrix::panel_width`]) or `n`, `cols.end` one
/// too or `n`; the epilogue takes the **full** operands (`bias: [n]`, `residual:
/// [m, n]`). A column range into its own block; [`gemm_bf16_par`] is the engine's
/// N-split, writing the ranges in place.
pub fn gemm_bf16_cols(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    cols: std::ops::Range<usize>,
    c_block: &mut [f32],
    epilogue: Epilogue,
) -> Result<(), KernelError> {
    validate_call("gemm_bf16_cols", a, m, b, &epilogue)?;
    let (n, nr) = (b.n, b.nr);
    if cols.start > cols.end
        || cols.end > n
        || !(cols.start.is_multiple_of(nr) || cols.start == n)
        || !(cols.end.is_multiple_of(nr) || cols.end == n)
    {
        return shape_err!(
            "gemm_bf16_cols ({}): columns {cols:?} must lie in 0..{n}, start at a multiple \
             of NR = {nr} and end at one or at n",
            b.kernel_name()
        );
    }
    let w = cols.len();
    if c_block.len() != crate::checked_len("gemm_bf16_cols c_block", &[m, w])? {
        return shape_err!(
            "gemm_bf16_cols ({}): c_block has {} floats, expected m*cols = {m}*{w}",
            b.kernel_name(),
            c_block.len()
        );
    }
    // SAFETY: validated as above; c_block holds m rows of w at ldc = w.
    unsafe { call(a, m, b, cols, c_block.as_mut_ptr(), w, epilogue) };
    Ok(())
}

/// Rows at or below which [`gemm_bf16_par`] splits the output columns across threads
/// (a query: each thread streams its share of the weights) rather than the rows.
pub const BF16_COLUMN_SPLIT_MAX_M: usize = 32;

/// [`gemm_bf16`] on the current rayon pool with `threads` tasks, written in place:
/// whole weight panels per task for `m <= BF16_COLUMN_SPLIT_MAX_M`, else even row
/// shares. Bitwise equal to [`gemm_bf16`] (no result depends on the column or row
/// range it is computed in; see the accumulation-order docs above).
pub fn gemm_bf16_par(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    c: &mut [f32],
    epilogue: Epilogue,
    threads: usize,
) -> Result<(), KernelError> {
    validate_call("gemm_bf16_par", a, m, b, &epilogue)?;
    let (n, nr, k) = (b.n, b.nr, b.k);
    if c.len() != crate::checked_len("gemm_bf16_par c", &[m, n])? {
        return shape_err!(
            "gemm_bf16_par ({}): c has {} floats, expected m*n = {m}*{n}",
            b.kernel_name(),
            c.len()
        );
    }
    let run_part = |(rows, cols): crate::par::Part, at: *mut f32| {
        let (r0, rn) = (rows.start, rows.len());
        let epi = epilogue.for_rows(r0, rn, n);
        // SAFETY: a and the epilogue validated for (m, n, k) and sliced to this part's
        // rows; `cols` starts on a panel boundary inside 0..n; `at` is C's element
        // (r0, cols.start), and C rows r0.. at ldc = n, columns `cols`, lie inside c
        // (m*n floats, exclusively borrowed for this call) and the parts are disjoint
        // rectangles, so no two tasks write the same element.
        unsafe { call(&a[r0 * k..(r0 + rn) * k], rn, b, cols, at, n, epi) }
    };
    crate::par::split_output(c, (m, n), nr, threads, BF16_COLUMN_SPLIT_MAX_M, run_part);
    Ok(())
}

/// Columns `cols` of C into `c` (`m` rows at stride `ldc`, pointing at column
/// `cols.start`).
///
/// # Safety
/// `a`, epilogue validated for `(m, b.n, b.k)`; `cols` validated; `c` valid for `m`
/// rows of `cols.len()` floats at stride `ldc`, not overlapping the inputs.
unsafe fn call(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    cols: std::ops::Range<usize>,
    c: *mut f32,
    ldc: usize,
    epilogue: Epilogue,
) {
    if m == 0 || cols.is_empty() {
        return;
    }
    match b.isa.kind() {
        #[cfg(target_arch = "x86_64")]
        BIsaKind::Avx512Bf16 | BIsaKind::Avx512Widen if b.k > 0 => {
            let job = x86::Job::new(a, m, b, cols, c, ldc, epilogue);
            // SAFETY: per this function's contract; the token in `b` proves the ISA
            // and the buffer is packed for its NR.
            x86::run(&job)
        }
        #[cfg(target_arch = "x86_64")]
        BIsaKind::Amx if b.k > 0 => {
            let (j0, pk) = (cols.start, b.pk);
            let elems = b.elems();
            let call = amx::Call {
                a,
                k: b.k,
                m,
                b: &elems[((j0 / amx::NR) * pk * amx::NR).min(elems.len())..],
                pk,
                n: cols.len(),
                c,
                ldc,
                epi: crate::epilogue::Epi::new(epilogue, b.n, j0),
            };
            let mut unit =
                crate::tiles::Hardware::new().expect("the Amx token proves AMX is available");
            // SAFETY: per this function's contract (C rows and the epilogue hold the
            // call's rows and columns); the token's features include AVX-512.
            amx::run(&mut unit, &call, true).expect("AMX bf16 tile GEMM on validated operands");
        }
        #[cfg(target_arch = "aarch64")]
        BIsaKind::NeonWiden | BIsaKind::NeonBf16 if b.k > 0 => {
            let job = neon::Job::new(a, m, b, cols, c, ldc, epilogue);
            // SAFETY: per this function's contract; the token in `b` proves NEON (and
            // FEAT_BF16 for NeonBf16) and the buffer is packed for its kind.
            neon::run(b.isa.kind(), &job)
        }
        _ => reference::gemm_unchecked(a, m, b, cols, c, ldc, epilogue),
    }
}

/// Test support: the scalar model of the NeonBf16 (`bfmmla`) arithmetic, on any CPU. Not
/// part of the engine API.
#[doc(hidden)]
pub mod testing {
    use super::{f32_to_bf16, padded_k};
    use crate::{Epilogue, KernelError};

    /// The NeonBf16 GEMM's result element by element: `A` and `W` (`[n, k]` f32) rounded
    /// with [`f32_to_bf16`], K padded with zeros to a multiple of 4, each dot product as a
    /// chain of `bfmmla` (per pair of K: the two products summed, then added to the
    /// accumulator, each rounded to odd, denormals flushed; `bgemm/reference.rs`), then
    /// the scalar epilogue (GELU in f64).
    pub fn gemm_bf16_bfmmla_order_reference(
        a: &[f32],
        m: usize,
        w: &[f32],
        n: usize,
        k: usize,
        c: &mut [f32],
        epilogue: Epilogue,
    ) -> Result<(), KernelError> {
        crate::gemm::validate_dense(
            "gemm_bf16_bfmmla_order_reference",
            a.len(),
            w.len(),
            c.len(),
            m,
            n,
            k,
        )?;
        crate::epilogue::validate(&epilogue, m, n)?;
        let kp4 = padded_k(k).div_ceil(4) * 4;
        let round = |x: &[f32]| {
            let mut v: Vec<u16> = x.iter().map(|&y| f32_to_bf16(y)).collect();
            v.resize(kp4, 0);
            v
        };
        let wr: Vec<Vec<u16>> = (0..n).map(|j| round(&w[j * k..(j + 1) * k])).collect();
        for i in 0..m {
            let ar = round(&a[i * k..(i + 1) * k]);
            for (j, wj) in wr.iter().enumerate() {
                let acc = super::reference::dot_bfmmla(&ar, wj);
                c[i * n + j] = epilogue.apply(acc, i, j, n);
            }
        }
        Ok(())
    }

    /// One `bfmmla` dot product of bf16 bit patterns (`a`, `w` of equal length, padded
    /// here with zeros to a multiple of 4), as the model computes it: for hand-computed
    /// cases of the instruction's rounding.
    pub fn dot_bfmmla_bits(a: &[u16], w: &[u16]) -> f32 {
        assert_eq!(a.len(), w.len(), "dot_bfmmla_bits: lengths differ");
        let kp4 = a.len().div_ceil(4) * 4;
        let (mut x, mut y) = (a.to_vec(), w.to_vec());
        x.resize(kp4, 0);
        y.resize(kp4, 0);
        super::reference::dot_bfmmla(&x, &y)
    }
}

#[cfg(test)]
mod pack_tests {
    use super::{index, scatter_row, BIsaKind};

    /// Every layout's row scatter puts each element where `index` (the layout's
    /// definition, which unpacking uses) says, on awkward panel widths and depths.
    #[test]
    fn scatter_row_matches_index() {
        let kinds = [
            BIsaKind::Scalar,
            BIsaKind::NeonWiden,
            BIsaKind::NeonBf16,
            BIsaKind::Amx,
        ];
        for kind in kinds {
            for (nr, k) in [(16usize, 1usize), (16, 7), (12, 33), (32, 384), (8, 2)] {
                let pk = match kind {
                    BIsaKind::NeonBf16 => k.div_ceil(4) * 4,
                    _ => k.div_ceil(2) * 2,
                };
                let n = 2 * nr + 3;
                let len = n.div_ceil(nr) * nr * pk;
                let mut d = vec![0u16; len];
                let mut want = vec![0u16; len];
                for j in 0..n {
                    let r: Vec<u16> = (0..k).map(|q| (1 + j * 1000 + q) as u16).collect();
                    scatter_row(kind, nr, pk, j, &r, &mut d);
                    for (q, &v) in r.iter().enumerate() {
                        want[index(kind, nr, pk, j, q)] = v;
                    }
                }
                assert_eq!(d, want, "{kind:?} nr {nr} k {k}");
            }
        }
    }
}
