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
//! (64-byte aligned buffer). `s_w` and `comp` are stored zero-padded to the panels.
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
mod reference;
#[cfg(target_arch = "x86_64")]
mod x86;
/// This architecture's int8 GEMM backend (`Job`, `Out`, `run`): x86-64 VNNI / AVX2,
/// aarch64 `sdot` (`qgemm/aarch64.rs`).
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;
#[cfg(target_arch = "x86_64")]
use x86 as arch;

use reference::InputMode;
pub use reference::{
    gemm_u8s8_i32_reference, gemm_u8s8_reference, quantize_input_reference,
    quantize_rows_reference, quantize_rows_smoothed_reference,
};

use crate::buf::AlignedBuf;
use crate::epilogue::{validate as validate_epilogue, Epilogue};
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
}

impl QIsaKind {
    /// Every kind, lowest to highest preference.
    pub const ALL: [QIsaKind; 5] = [
        QIsaKind::Scalar,
        QIsaKind::Avx2,
        QIsaKind::AvxVnni,
        QIsaKind::Avx512Vnni,
        QIsaKind::NeonDot,
    ];

    /// `scalar`, `avx2`, `avxvnni`, `avx512vnni`.
    pub fn name(self) -> &'static str {
        match self {
            QIsaKind::Scalar => "scalar",
            QIsaKind::Avx2 => "avx2",
            QIsaKind::AvxVnni => "avxvnni",
            QIsaKind::Avx512Vnni => "avx512vnni",
            QIsaKind::NeonDot => "neondot",
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
        }
    }

    fn tile(self) -> (usize, usize) {
        match self {
            QIsaKind::Scalar => (1, 1),
            QIsaKind::Avx2 => (4, 16),
            QIsaKind::AvxVnni => (6, 16),
            QIsaKind::Avx512Vnni => (12, 32),
            QIsaKind::NeonDot => (8, 12),
        }
    }
}

crate::isa::family_str!(QIsaKind);

/// A token proving this CPU supports a [`QIsaKind`] (the one generic token,
/// [`crate::isa::Path`]: private field, only [`QIsa::new`] builds one after checking the
/// CPU). Holding it is what makes the `#[target_feature]` kernels behind it sound to
/// call. `QIsa::from_name` takes `scalar|avx2|avxvnni|avx512vnni` (and aliases).
pub type QIsa = Path<QIsaKind>;

/// Weights quantized (symmetric int8 per output channel) and packed once for one
/// [`QIsa`]'s microkernel (layout in the module docs). Immutable, `Send + Sync`.
#[derive(Clone)]
pub struct QuantizedMatrix {
    isa: QIsa,
    n: usize,
    k: usize,
    kp: usize,
    nr: usize,
    qmax: i32,
    /// `ceil(n / NR)` panels of `[kp / 4][NR][4]` i8, 64-byte aligned (an f32
    /// buffer viewed as bytes: its length `npanels · kp · NR` is a multiple of 4).
    data: AlignedBuf,
    /// `s_w`: `[npanels · NR]`, zero past `n`.
    scales: Vec<f32>,
    /// `comp[j] = 128 · Σ_k Wq[j, k]`: `[npanels · NR]`, zero past `n`.
    comp: Vec<i32>,
    /// `128 · Σ_k Wq[j, k]` whatever the input mode (`comp` is 0 in unsigned mode):
    /// the aarch64 `sdot` kernel adds it back (`qgemm/aarch64.rs`).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    colsum128: Vec<i32>,
    /// SmoothQuant: `[k]` per-input-channel multipliers `1 / s` applied to the
    /// activations before they are quantized ([`QuantizedMatrix::quantize_input`]),
    /// when the weights were quantized from `W · diag(s)`.
    input_mul: Option<Vec<f32>>,
    /// Unsigned input mode ([`QuantizedMatrix::with_unsigned_input`]): the offset `c`
    /// added to every input element (inputs are `>= -c`); `comp` is then 0.
    input_offset: Option<f32>,
}

impl QuantizedMatrix {
    /// Quantizes `w: [n, k]` (PyTorch Linear layout) per output channel with the
    /// weight range of `isa` ([`QIsaKind::weight_qmax`]) and packs it for `isa`.
    pub fn quantize(
        isa: QIsa,
        w: &[f32],
        n: usize,
        k: usize,
    ) -> Result<QuantizedMatrix, KernelError> {
        Self::check_dims("QuantizedMatrix::quantize", isa, n, k)?;
        if w.len() != crate::checked_len("QuantizedMatrix::quantize", &[n, k])? {
            return shape_err!(
                "QuantizedMatrix::quantize: w has {} floats, expected n*k = {n}*{k}",
                w.len()
            );
        }
        if let Some(i) = w.iter().position(|x| !x.is_finite()) {
            return shape_err!("QuantizedMatrix::quantize: w[{i}] = {} is not finite", w[i]);
        }
        let qmax = isa.kind().weight_qmax();
        let mut wq = vec![0i8; n * k];
        let mut scales = vec![0f32; n];
        for j in 0..n {
            let row = &w[j * k..(j + 1) * k];
            let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
            if amax == 0.0 {
                continue;
            }
            scales[j] = amax / qmax as f32;
            let inv = qmax as f32 / amax;
            for q in 0..k {
                let v = (row[q] * inv).round_ties_even() as i32;
                wq[j * k + q] = v.clamp(-qmax, qmax) as i8;
            }
        }
        Self::pack(isa, &wq, &scales, n, k, qmax)
    }

    /// Packs already quantized weights `wq: [n, k]` with their per-channel scales
    /// `scales: [n]` (e.g. from a pre-quantized model file). Every `|wq|` must be at
    /// most `isa`'s [`QIsaKind::weight_qmax`] (64 on Avx2, else 127: -128 is refused).
    pub fn from_quantized(
        isa: QIsa,
        wq: &[i8],
        scales: &[f32],
        n: usize,
        k: usize,
    ) -> Result<QuantizedMatrix, KernelError> {
        Self::check_dims("QuantizedMatrix::from_quantized", isa, n, k)?;
        if wq.len() != crate::checked_len("QuantizedMatrix::from_quantized", &[n, k])?
            || scales.len() != n
        {
            return shape_err!(
                "QuantizedMatrix::from_quantized: wq has {} bytes and scales {} floats, \
                 expected n*k = {n}*{k} and n",
                wq.len(),
                scales.len()
            );
        }
        let qmax = isa.kind().weight_qmax();
        if let Some(i) = wq.iter().position(|&x| (x as i32).abs() > qmax) {
            return shape_err!(
                "QuantizedMatrix::from_quantized: wq[{i}] = {} is outside [-{qmax}, {qmax}] \
                 ({} path)",
                wq[i],
                isa.name()
            );
        }
        Self::pack(isa, wq, scales, n, k, qmax)
    }

    fn check_dims(what: &str, isa: QIsa, n: usize, k: usize) -> Result<(), KernelError> {
        if k > QK_MAX {
            return shape_err!("{what}: k = {k} exceeds QK_MAX = {QK_MAX} (i32 accumulators)");
        }
        let nr = isa.tile().1;
        crate::checked_len(what, &[n.div_ceil(nr), nr, padded_k(k)])?;
        Ok(())
    }

    /// Packs `wq` into the panel layout (no range check: the callers check).
    fn pack(
        isa: QIsa,
        wq: &[i8],
        scales: &[f32],
        n: usize,
        k: usize,
        qmax: i32,
    ) -> Result<QuantizedMatrix, KernelError> {
        let nr = isa.tile().1;
        let kp = padded_k(k);
        let np = n.div_ceil(nr);
        let bytes = np * nr * kp;
        let mut data = AlignedBuf::zeroed(bytes / 4);
        {
            let s = data.as_mut_slice();
            // SAFETY: the f32 buffer holds `bytes / 4` initialised floats = `bytes`
            // bytes (bytes is a multiple of 4 because kp is); u8/i8 have no
            // invalid values and alignment 1.
            let d: &mut [i8] =
                unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<i8>(), bytes) };
            for j in 0..n {
                let (p, jj) = (j / nr, j % nr);
                for q in 0..k {
                    d[p * kp * nr + (q / 4) * nr * 4 + jj * 4 + q % 4] = wq[j * k + q];
                }
            }
        }
        let mut sc = vec![0f32; np * nr];
        sc[..n].copy_from_slice(scales);
        let mut comp = vec![0i32; np * nr];
        for j in 0..n {
            // Compensation for the +128 offset of the u8 activations:
            // Σ Aq·Wq = Σ (Aq + 128)·Wq − 128·Σ Wq.
            comp[j] = 128
                * wq[j * k..(j + 1) * k]
                    .iter()
                    .map(|&x| x as i32)
                    .sum::<i32>();
        }
        Ok(QuantizedMatrix {
            isa,
            n,
            k,
            kp,
            nr,
            qmax,
            data,
            scales: sc,
            colsum128: comp.clone(),
            comp,
            input_mul: None,
            input_offset: None,
        })
    }

    /// Attaches SmoothQuant input multipliers `mul: [k]` (`1 / s` when these weights
    /// were quantized from `W · diag(s)`): [`QuantizedMatrix::quantize_input`] then
    /// quantizes `A · diag(mul)`, so `(A · diag(1/s)) · (W · diag(s))ᵀ = A · Wᵀ`.
    /// Every multiplier must be finite and positive.
    pub fn with_input_mul(mut self, mul: Vec<f32>) -> Result<QuantizedMatrix, KernelError> {
        validate_mul("QuantizedMatrix::with_input_mul", &mul, self.k)?;
        self.input_mul = Some(mul);
        Ok(self)
    }

    /// The SmoothQuant input multipliers `[k]`, if any.
    pub fn input_mul(&self) -> Option<&[f32]> {
        self.input_mul.as_deref()
    }

    /// Unsigned input mode for inputs bounded below by `-offset` (e.g. GELU outputs,
    /// `>= -0.17`): [`QuantizedMatrix::quantize_input`] quantizes `t = max(x + offset,
    /// 0)` per row to the full u8 range `[0, 255]` (`s_a = max t / 255`: twice the
    /// resolution of the signed `[-127, 127]` for a one-sided input) and the kernels
    /// drop the `+128` compensation (`comp = 0`). The GEMM then computes
    /// `(X + offset) · Ŵᵀ`: the caller subtracts [`QuantizedMatrix::offset_correction`]
    /// (`offset · Σ_k Ŵ[n, k]`) from its bias. `offset` finite and `>= 0`.
    pub fn with_unsigned_input(mut self, offset: f32) -> Result<QuantizedMatrix, KernelError> {
        validate_offset("QuantizedMatrix::with_unsigned_input", offset)?;
        self.input_offset = Some(offset);
        self.comp.fill(0);
        Ok(self)
    }

    /// The unsigned-input offset, if that mode is on.
    pub fn input_offset(&self) -> Option<f32> {
        self.input_offset
    }

    /// `[n]`: what the unsigned input mode adds to each output,
    /// `offset · (s_w[n] · Σ_k Wq[n, k])` (zeros without that mode).
    pub fn offset_correction(&self) -> Vec<f32> {
        let c = self.input_offset.unwrap_or(0.0);
        self.colsums()
            .iter()
            .zip(self.scales())
            .map(|(&sum, &sw)| c * (sw * sum as f32))
            .collect()
    }

    fn input_mode(&self) -> InputMode<'_> {
        InputMode {
            mul: self.input_mul(),
            offset: self.input_offset,
        }
    }

    /// Quantizes this matrix's input `a: [m, k]` for it: [`quantize_rows`], or
    /// [`quantize_rows_smoothed`] with the matrix's input multipliers.
    pub fn quantize_input(
        &self,
        a: &[f32],
        m: usize,
        out: &mut [u8],
        scales: &mut [f32],
    ) -> Result<(), KernelError> {
        quantize_rows_impl(self.isa, a, m, self.k, self.input_mode(), out, scales)
    }

    /// Output features (columns of C).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Row length in bytes of the quantized activations this matrix multiplies
    /// (`padded_k(k)`).
    pub fn k_padded(&self) -> usize {
        self.kp
    }

    /// Per-output-channel scales `s_w: [n]`.
    pub fn scales(&self) -> &[f32] {
        &self.scales[..self.n]
    }

    /// `Σ_k Wq[j, k]` per output channel (`[n]`).
    pub fn colsums(&self) -> Vec<i32> {
        self.unpack_weights()
            .chunks_exact(self.k.max(1))
            .take(self.n)
            .map(|row| row.iter().map(|&x| x as i32).sum())
            .chain(std::iter::repeat(0))
            .take(self.n)
            .collect()
    }

    /// Largest |Wq| of the range used: 127, or 64 for the reduced-range Avx2 path.
    pub fn qmax(&self) -> i32 {
        self.qmax
    }

    /// True when the weights use the reduced (7-bit) range.
    pub fn reduced_range(&self) -> bool {
        self.qmax < 127
    }

    pub fn isa(&self) -> QIsa {
        self.isa
    }

    /// The microkernel's name, e.g. `"gemm_u8s8_avx512vnni_12x32"`.
    pub fn kernel_name(&self) -> &'static str {
        self.isa.kernel_name()
    }

    /// Panel width NR of the layout.
    pub fn panel_width(&self) -> usize {
        self.nr
    }

    /// The quantized weights unpacked back to `[n, k]` (tests, debugging).
    pub fn unpack_weights(&self) -> Vec<i8> {
        let d = self.bytes();
        let mut w = vec![0i8; self.n * self.k];
        for j in 0..self.n {
            for q in 0..self.k {
                w[j * self.k + q] = d[self.index(j, q)];
            }
        }
        w
    }

    /// Byte index of `Wq[j, q]` in the packed buffer.
    #[inline]
    fn index(&self, j: usize, q: usize) -> usize {
        let nr = self.nr;
        (j / nr) * self.kp * nr + (q / 4) * nr * 4 + (j % nr) * 4 + q % 4
    }

    fn bytes(&self) -> &[i8] {
        let s = self.data.as_slice();
        // SAFETY: see `pack`: `4 · s.len()` initialised bytes.
        unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<i8>(), s.len() * 4) }
    }
}

impl std::fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("kernel", &self.kernel_name())
            .field("n", &self.n)
            .field("k", &self.k)
            .field("qmax", &self.qmax)
            .finish()
    }
}

/// Checks `a: [m, kp]`, `out: [m, kp]`, `scales: [m]` for the quantizers.
fn validate_quantize(
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
fn quantize_rows_impl(
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
        QIsaKind::Avx512Vnni => {
            // SAFETY: the token proves AVX-512 F/BW/VL/DQ; lengths validated (mul: [k]).
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

/// Checks `a: [m, kp]`, `scales: [m]`, the epilogue and `c: [m, n]`.
fn validate_gemm(
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
