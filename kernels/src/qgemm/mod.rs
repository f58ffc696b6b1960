//! int8 GEMM (`u8 x s8 -> i32`) with fused dequantization epilogues:
//! `C[m, n] = epilogue(dequant(Aq[m, k] · Wqᵀ))`, W in the PyTorch Linear layout
//! `[n = out, k = in]`, C in f32.
//!
//! # API (all safe; lengths checked, `KernelError::Shape` on mismatch)
//! - [`QIsa`] (token; [`QIsa::available`], [`QIsa::best`], [`QIsa::from_name`]);
//! - [`QuantizedMatrix::quantize`] / [`QuantizedMatrix::from_quantized`]: weights,
//!   once at load, packed for one QIsa;
//! - [`quantize_rows`]: f32 rows `[m, k]` -> u8 `[m, padded_k(k)]` + `s_a: [m]`;
//! - [`gemm_u8s8`]: -> f32 C with a fused [`Epilogue`]; [`gemm_u8s8_par`]: the same
//!   split across rayon tasks in place; [`gemm_u8s8_cols`]: a column range into its own
//!   block; [`gemm_u8s8_quantized`]: -> the next GEMM's u8 rows;
//!   [`gemm_u8s8_i32`]: raw integer sums;
//! - references: [`quantize_rows_reference`], [`gemm_u8s8_reference`],
//!   [`gemm_u8s8_i32_reference`] (integer-exact, same epilogue arithmetic).
//!
//! # Quantization scheme
//!
//! **Weights** (once, at load: [`QuantizedMatrix::quantize`]): symmetric, per output
//! channel: `s_w[n] = max_k |W[n, k]| / QMAX`, `Wq[n, k] = round(W[n, k] / s_w[n])`
//! (computed as `round_ties_even(W · (QMAX / max))`, clamped) in `[-QMAX, QMAX]`,
//! never -128. `QMAX = 127` on every path except [`QIsaKind::Avx2`], which uses the
//! *reduced range* `QMAX = 64` (see "Saturation" below);
//! [`QuantizedMatrix::qmax`] says which one a matrix used. A row of zeros gets
//! `s_w = 0` and `Wq = 0`.
//!
//! **Activations** (per call: [`quantize_rows`]): dynamic, symmetric, per row
//! (token): `s_a[m] = max_k |A[m, k]| / 127` (f32 division), `Aq = round_ties_even(
//! A · (127 / max))` clamped to `[-127, 127]` and stored as the **u8 `Aq + 128`**
//! (so 0.0 is stored as 128) for the u8 x s8 instructions. A row of zeros gets
//! `s_a = 0` and bytes 128, so its output is the epilogue of 0 (bias etc.).
//! Rows are `kp = padded_k(k)` bytes (k rounded up to a multiple of 4, the VNNI
//! group); pad bytes are written as 128 and never matter (the packed weights are 0
//! there).
//!
//! **Integer accumulation and the compensation term**: the kernels compute
//! `acc[m, n] = Σ_k (Aq[m, k] + 128) · Wq[n, k]` in i32. The wanted sum is
//! `Σ_k Aq·Wq = acc − 128 · colsum[n]` with `colsum[n] = Σ_k Wq[n, k]`, precomputed
//! at pack time and stored as `comp[n] = 128 · colsum[n]` (one `vpsubd` per output
//! vector in the epilogue). Range: `|acc| <= 255·127·k` and `|Σ Aq·Wq| <= 127·127·k`,
//! both below 2^31 for `k <= QK_MAX = 65536` (255·127·65536 = 2 122 383 360), so
//! nothing wraps; `|comp| <= 128·127·k` likewise.
//!
//! **Epilogue** (f32, in this exact order on every path, no FMA, so the scalar
//! reference and the SIMD kernels agree **bitwise** for every epilogue but GELU):
//! `x = (f32)(acc − comp[n])` (exact below 2^24, else round-to-nearest-even on
//! both), `y = (s_a[m] · s_w[n]) · x`, then `y + bias[n]`, `gelu(y + bias[n])`
//! (exact-erf GELU: the vectorized `math::gelu`, vs f64 `erf` in the reference), or
//! `(y + bias[n]) + residual[m, n]`: the [`Epilogue`] variants of the f32 GEMM.
//!
//! # Saturation (why [`QIsaKind::Avx2`] uses 7-bit weights)
//!
//! Without VNNI the u8 x s8 product goes through `vpmaddubsw`, which multiplies
//! byte pairs and adds the two products into an **i16 with signed saturation**:
//! `sat16(a0·w0 + a1·w1)`. With `a` in `[0, 255]` (any u8; `Aq + 128` is in
//! `[1, 255]`) and `|w| <= QMAX`, the pair sum is bounded by `2 · 255 · QMAX`:
//! - full range `QMAX = 127`: `2·255·127 = 64770 > 32767`: saturates (e.g. two
//!   activations at +max with two weights at +127 give 32767 instead of 64770;
//!   test `avx2_full_range_saturates_reduced_range_is_exact`);
//! - `QMAX = 64`: `2·255·64 = 32640 <= 32767` (and `-32640 >= -32768`): never
//!   saturates for *any* u8 input, so the AVX2 path is integer-exact. 65 would give
//!   33150 > 32767, so 64 is the largest safe bound.
//!
//! Then `vpmaddwd` with a vector of 1s adds the two i16 neighbours into an i32 (exact).
//! The price is ~1 bit of weight precision on that path only (the matrix carries
//! its `qmax`, the reference uses the same `Wq`, so the reference models that path
//! exactly). VNNI `vpdpbusd` (AVX-512 and AVX-VNNI) sums the four products in i32
//! without intermediate saturation: full range there.
//!
//! # Packed weight layout (VNNI layout) and microkernel contract
//!
//! `Wq` is packed into `ceil(n / NR)` panels of NR output columns; panel `p` is
//! `[kp / 4][NR][4]` i8: for k-group `g`, column `j` of the panel holds the 4
//! consecutive `Wq[p·NR + j, 4g .. 4g+4]` side by side (what `vpdpbusd` /
//! `vpmaddubsw` multiply with the 4 broadcast activation bytes `A[m, 4g .. 4g+4]`).
//! Columns past `n` and k past `k` are zero. Panel `p` starts at byte `p · kp · NR`
//! (64-byte aligned buffer). The `smmla` path ([`QIsaKind::NeonI8mm`]) packs k-groups
//! of 8 instead ([`QIsaKind::k_group`]): panel `p` is `[kp8 / 8][NR][8]` with `kp8` =
//! `kp` rounded up to a multiple of 8 (zeros past `k`), starting at byte `p · kp8 · NR`;
//! two adjacent columns' 8 bytes are one `smmla` operand. The activation rows stay
//! `kp` bytes on every path. `s_w` and `comp` are stored zero-padded to the panels.
//!
//! The microkernel holds an `R x V` tile of i32 vectors (`V` vectors of `LANES`
//! columns per row, i.e. `V / 2` panels: NR = 2 vectors), loops over all of K
//! (no K blocking: integer sums are exact, and K ≤ 1536 keeps a 32-column panel at
//! ≤ 48 KB), and applies the epilogue right after the K loop; column edges
//! store with masks, rows are exact (`R` from a jump table). The driver
//! (`x86::driver`) loops: row blocks of MC (A block in L2) → panels → row tiles.
//! The last, partial row tile uses wider tiles (more panels per call) so that a
//! 1-row call still has enough independent accumulators to hide `vpdpbusd` latency.
//!
//! | QIsa        | kernel                        | MR x NR | rem-row tiles (rows: panels)  |
//! |-------------|-------------------------------|---------|-------------------------------|
//! | scalar      | `gemm_u8s8_scalar`            | 1 x 1   | -                             |
//! | avx2        | `gemm_u8s8_avx2_4x16`         | 4 x 16  | 1: 4, 2: 2, 3: 1              |
//! | avxvnni     | `gemm_u8s8_avxvnni_6x16`      | 6 x 16  | 1: 4, 2-3: 2, 4-5: 1          |
//! | avx512vnni  | `gemm_u8s8_avx512vnni_12x32`  | 12 x 32 | 1-2: 4, 3: 3, 4-6: 2, 7-11: 1 |
//! | neondot     | `gemm_u8s8_neondot_8x12`      | 8 x 12  | 1-7: the same tile, fewer rows |
//! | amx         | `gemm_u8s8_amx_32x32`         | 32 x 16 | edge tiles of 1-15 rows / columns |
//! | neoni8mm    | `gemm_u8s8_neoni8mm_8x12`     | 8 x 12  | 1-7: the same tile, fewer rows |
//!
//! **amx** (`qgemm/amx.rs`): `tdpbusd` tiles over the tile interface of
//! [`crate::tiles`] (2 x 2 accumulator tiles per 32 x 32 block); panels of NR = 16 with
//! K padded with zeros to whole 64-byte tiles ([`QuantizedMatrix`] then stores
//! `pk = round_up(kp, 64)` bytes per column), A copied into a per-thread scratch with the
//! same padding; the epilogue is the VNNI kernel's, so its results are bitwise those of
//! `avx512vnni`. Only where `amx::status()` is Available; never run on hardware yet
//! (tested through the emulator: `kernels/tests/amx_tiles.rs`).
//!
//! Tile reasoning (Sapphire Rapids; Ice Lake similar):
//! - **avx512vnni 12 x 32**: `vpdpbusd zmm` issues on p0 and p5 (2/cycle), latency 5,
//!   so ≥ 10 independent accumulators are needed; 12 rows x 2 zmm = 24 accumulators,
//!   plus 2 B vectors and 1 broadcast: 27 of 32 zmm. Per k-group: 2 B loads and 12
//!   `vpbroadcastd` loads feed 24 `vpdpbusd` (12 cycles), far under 2-3 loads/cycle.
//!   NR = 32 divides every model N (384, 1152, 1536), MR = 12 is also the f32
//!   GEMM's MR (the engine's row chunks fit both).
//! - **avxvnni 6 x 16**: `vpdpbusd ymm` 2/cycle (two vector-integer multiply
//!   ports), latency 5: 6 x 2 = 12 accumulators, with 2 B and 1 broadcast 15 of 16 ymm.
//! - **avx2 4 x 16**: each 4-product step is 3 instructions (`vpmaddubsw`,
//!   `vpmaddwd`, `vpaddd`) and needs a temporary and the 1s vector: 8 accumulators,
//!   2 B, 1 broadcast, 1 ones, 2 temporaries = 14 of 16 ymm. The add chain has
//!   latency 1, so 8 accumulators are plenty; the multiply ports are the limit.
//!
//! # Fusion with the next layer's quantization
//! [`gemm_u8s8_quantized`] writes u8 rows + scales for the next GEMM instead of f32
//! (the FFN: up-projection + GELU -> the down-projection's input), through a small
//! per-thread f32 row scratch; bitwise equal to [`gemm_u8s8`] then [`quantize_rows`].
//!
//! # Bitwise reproducibility
//! Integer sums are exact and the epilogue is per element in a fixed order, so for a
//! given QIsa a row's result does not depend on `m`, the row's position, row
//! chunking or which tile computed it. Different QIsas give identical results except
//! for GELU (vector erf) and for Avx2 vs the others (different `Wq`).

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub(crate) mod amx;
mod entry;
mod matrix;
mod quantize;
mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;
/// This architecture's int8 GEMM backend (`Job`, `Out`, `run`): x86-64 VNNI / AVX2,
/// aarch64 `sdot` / `smmla` (`qgemm/aarch64.rs`).
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86 as arch;

pub(crate) use entry::validate_gemm;
pub use entry::{
    gemm_u8s8, gemm_u8s8_cols, gemm_u8s8_i32, gemm_u8s8_par, gemm_u8s8_quantized,
    gemm_u8s8_quantized_for, INT8_COLUMN_SPLIT_MAX_M,
};
pub use matrix::{PackedExtras, QuantizedMatrix};
pub use quantize::{quantize_rows, quantize_rows_smoothed};
pub(crate) use quantize::{quantize_rows_impl, validate_mul, validate_offset, validate_quantize};
pub use reference::{
    gemm_u8s8_i32_reference, gemm_u8s8_reference, quantize_input_reference,
    quantize_rows_reference, quantize_rows_smoothed_reference,
};

use crate::isa::{Family, Features, Path};
use crate::{shape_err, KernelError};

/// Largest K (reduction length) accepted: keeps every i32 sum below 2^31
/// (`255 · 127 · 65536 < 2^31`).
pub const QK_MAX: usize = 65536;

/// Row length in bytes of quantized activations for a reduction length `k`:
/// `k` rounded up to a multiple of 4 (the VNNI k-group).
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(4) * 4
}

/// The int8 paths this module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QIsaKind {
    /// Portable Rust: the integer-exact reference, also the fallback.
    Scalar,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` (no VNNI): reduced-range (7-bit) weights.
    Avx2,
    /// AVX-VNNI: VEX `vpdpbusd` on ymm (+ AVX2/FMA for the epilogue).
    AvxVnni,
    /// AVX-512 VNNI: `vpdpbusd` on zmm (+ AVX-512 F/BW/VL/DQ).
    Avx512Vnni,
    /// aarch64 NEON `sdot` by element (the `dotprod` extension), s8 x s8 with the
    /// activations' +128 folded back exactly (`qgemm/aarch64.rs`).
    NeonDot,
    /// AMX `tdpbusd` tiles (`qgemm/amx.rs`, over the tile interface of `tiles/`), with
    /// the AVX-512 quantizer and epilogue (+ AMX-INT8, AVX-512 F/BW/VL/DQ, VNNI).
    Amx,
    /// aarch64 `smmla` (the `i8mm` extension: 2x8 by 8x2 int8 matrix multiply into a
    /// 2x2 i32 block), s8 x s8 as [`QIsaKind::NeonDot`], on weights packed in k-groups
    /// of 8 (`qgemm/aarch64.rs`); bitwise equal to it.
    NeonI8mm,
}

impl QIsaKind {
    /// Every kind, lowest to highest preference.
    pub const ALL: [QIsaKind; 7] = [
        QIsaKind::Scalar,
        QIsaKind::Avx2,
        QIsaKind::AvxVnni,
        QIsaKind::Avx512Vnni,
        QIsaKind::NeonDot,
        QIsaKind::Amx,
        QIsaKind::NeonI8mm,
    ];

    /// `scalar`, `avx2`, `avxvnni`, `avx512vnni`, `neondot`, `amx`, `neoni8mm`.
    pub fn name(self) -> &'static str {
        match self {
            QIsaKind::Scalar => "scalar",
            QIsaKind::Avx2 => "avx2",
            QIsaKind::AvxVnni => "avxvnni",
            QIsaKind::Avx512Vnni => "avx512vnni",
            QIsaKind::NeonDot => "neondot",
            QIsaKind::Amx => "amx",
            QIsaKind::NeonI8mm => "neoni8mm",
        }
    }

    /// Bytes of K per column side by side in the packed weights (the k-group of the
    /// layout): 8 for `smmla` ([`QIsaKind::NeonI8mm`]), 4 (the VNNI / `sdot` group)
    /// for every other path.
    pub fn k_group(self) -> usize {
        match self {
            QIsaKind::NeonI8mm => 8,
            _ => 4,
        }
    }

    /// Largest |Wq| this path's weights use: 64 on Avx2 (saturation), else 127.
    pub fn weight_qmax(self) -> i32 {
        match self {
            QIsaKind::Avx2 => 64,
            _ => 127,
        }
    }
}

impl crate::isa::sealed::Sealed for QIsaKind {}

impl Family for QIsaKind {
    const TOKEN: &'static str = "QIsa";
    const KINDS: &'static [QIsaKind] = &QIsaKind::ALL;
    const SCALAR: QIsaKind = QIsaKind::Scalar;

    fn name(self) -> &'static str {
        QIsaKind::name(self)
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            QIsaKind::AvxVnni => &["avx-vnni"],
            QIsaKind::Avx512Vnni => &["avx512-vnni", "vnni"],
            QIsaKind::NeonDot => &["dotprod", "sdot"],
            QIsaKind::NeonI8mm => &["i8mm", "smmla"],
            _ => &[],
        }
    }

    /// Avx2 = avx2+fma; AvxVnni = that + avxvnni; Avx512Vnni = avx512f/bw/vl/dq +
    /// avx2/fma + avx512vnni.
    fn requires(self) -> Features {
        match self {
            QIsaKind::Scalar => Features::NONE,
            QIsaKind::Avx2 => Features::AVX2,
            QIsaKind::AvxVnni => Features::AVX2.with(Features::AVX_VNNI),
            QIsaKind::Avx512Vnni => Features::AVX2
                .with(Features::AVX512)
                .with(Features::AVX512_VNNI),
            QIsaKind::NeonDot => Features::NEON.with(Features::DOTPROD),
            QIsaKind::Amx => Features::AVX2
                .with(Features::AVX512)
                .with(Features::AVX512_VNNI)
                .with(Features::AMX_INT8),
            QIsaKind::NeonI8mm => Features::NEON.with(Features::I8MM),
        }
    }

    /// The table in the module docs.
    fn kernel_name(self) -> &'static str {
        match self {
            QIsaKind::Scalar => "gemm_u8s8_scalar",
            QIsaKind::Avx2 => "gemm_u8s8_avx2_4x16",
            QIsaKind::AvxVnni => "gemm_u8s8_avxvnni_6x16",
            QIsaKind::Avx512Vnni => "gemm_u8s8_avx512vnni_12x32",
            QIsaKind::NeonDot => "gemm_u8s8_neondot_8x12",
            QIsaKind::Amx => "gemm_u8s8_amx_32x32",
            QIsaKind::NeonI8mm => "gemm_u8s8_neoni8mm_8x12",
        }
    }

    fn tile(self) -> (usize, usize) {
        match self {
            QIsaKind::Scalar => (1, 1),
            QIsaKind::Avx2 => (4, 16),
            QIsaKind::AvxVnni => (6, 16),
            QIsaKind::Avx512Vnni => (12, 32),
            QIsaKind::NeonDot | QIsaKind::NeonI8mm => (8, 12),
            QIsaKind::Amx => (32, amx::NR),
        }
    }
}

crate::isa::family_str!(QIsaKind);

/// A token proving this CPU supports a [`QIsaKind`] (the one generic token,
/// [`crate::isa::Path`]: private field, only [`QIsa::new`] builds one after checking the
/// CPU). Holding it is what makes the `#[target_feature]` kernels behind it sound to
/// call. `QIsa::from_name` takes `scalar|avx2|avxvnni|avx512vnni` (and aliases).
pub type QIsa = Path<QIsaKind>;

/// Test support: builds matrices the public API refuses, to demonstrate failure
/// modes. Not part of the engine API.
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// An Avx2-packed matrix with **full-range** weights (`|wq| <= 127`), which
    /// `vpmaddubsw` can saturate on: the demonstration of why the Avx2 path uses
    /// reduced range. Safe (saturation gives wrong numbers, not UB).
    pub fn avx2_full_range(
        isa: QIsa,
        wq: &[i8],
        scales: &[f32],
        n: usize,
        k: usize,
    ) -> Result<QuantizedMatrix, KernelError> {
        if isa.kind() != QIsaKind::Avx2 || wq.len() != n * k || scales.len() != n {
            return shape_err!("testing::avx2_full_range: needs an Avx2 token and [n, k] data");
        }
        QuantizedMatrix::check_dims("testing::avx2_full_range", isa, n, k)?;
        if wq.contains(&i8::MIN) {
            return shape_err!("testing::avx2_full_range: -128 is never used");
        }
        QuantizedMatrix::pack(isa, wq, scales, n, k, 127)
    }
}
