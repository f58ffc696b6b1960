//! The AMX tile-instruction interface ([`TileUnit`]) and its two backends: the scalar
//! [`Emulator`] (any CPU, exact semantics, bounds- and config-checked) and the
//! [`Hardware`] one (`asm!`, only where [`crate::amx::status`] says Available). The AMX
//! int8 and bf16 GEMMs are written once over the interface (`tiles/gemm.rs`).
//!
//! # The instructions (palette 1: 8 tiles `tmm0..tmm7`, each ≤ 16 rows x ≤ 64 bytes)
//!
//! | method | instruction | what it does |
//! |---|---|---|
//! | [`TileUnit::configure`] | `ldtilecfg` | rows / bytes per row of each tile; zeroes every tile |
//! | [`TileUnit::zero`] | `tilezero` | one tile := 0 |
//! | [`TileUnit::load`] | `tileloadd` | `rows` rows of `colsb` bytes from `base + r·stride` |
//! | [`TileUnit::store`] | `tilestored` | the same rows back to memory |
//! | [`TileUnit::dpbusd`] | `tdpbusd` | `C[m][n] += Σ_k Σ_{t<4} u8(A[m][4k+t])·s8(B[k][4n+t])`, i32, wrapping |
//! | [`TileUnit::dpbf16ps`] | `tdpbf16ps` | bf16 pair dot products into f32 (order below) |
//! | [`TileUnit::release`] | `tilerelease` | back to the init state (unconfigured) |
//!
//! Sources: Intel SDM vol. 2 (the `LDTILECFG`, `TILELOADD`, `TDPBUSD`, `TDPBF16PS`
//! pages and the AMX exception class AMX-E4), read through the public HTML renderings
//! of the SDM pages (felixcloutier.com/x86/tdpbf16ps and its copies). Paraphrased, not
//! copied.
//!
//! **`tdpbusd`** (per row `m` of C, column `n`): the four byte products of each dword
//! pair are exact (`|Σ| ≤ 4·255·128`), their sum is added to the i32 accumulator
//! **with wraparound** (no saturation). Rows past `C.rows` and bytes past `C.colsb` are
//! zeroed (`write_row_and_zero`, `zero_upper_rows`).
//!
//! **`tdpbf16ps`**, the SDM pseudo-code (per row `m`, per output column `n`):
//! ```text
//! t[2n] = t[2n+1] = 0                                  // two f32 partial sums
//! for k in 0 .. A.colsb/4:                             // the K pairs of this tile
//!     t[2n+0] += f32(A[m].bf16[2k+0]) * f32(B[k].bf16[2n+0])   // FP32 FMA: DAZ, FTZ, RNE
//!     t[2n+1] += f32(A[m].bf16[2k+1]) * f32(B[k].bf16[2n+1])
//! tmp = t[2n] + t[2n+1]                                // DAZ, FTZ, RNE
//! C[m].fp32[n] = C[m].fp32[n] + tmp                    // DAZ, FTZ, RNE
//! ```
//! So per instruction the **even** and the **odd** elements of the pairs are two
//! separate f32 chains (each step one rounding of `acc + exact product`), added
//! together, then once to the accumulator; MXCSR is neither read nor written, no
//! exceptions. This is **not** the order of `vdpbf16ps` (one chain, odd element first:
//! `bgemm/mod.rs`), so the AMX bf16 GEMM is not bitwise equal to the `vdpbf16ps` one.
//! The emulator computes each step as the existing `vdpbf16ps` model does
//! (`bgemm::reference::dot_step`: the product of two bf16 exact in f64, the f64 sum
//! rounded once to f32, subnormal inputs and results flushed to signed zero).
//! Not modelled: NaN payloads (a NaN input gives a quiet NaN, the hardware's payload
//! may differ), and FTZ of a result that is tiny before rounding but rounds up to the
//! smallest normal (flushed here only when the rounded result is subnormal).
//!
//! # Faults
//!
//! The hardware raises `#GP` on `ldtilecfg` with an invalid palette-1 config and `#UD`
//! on a tile instruction whose tiles are unconfigured or whose shapes disagree
//! (AMX-E4: `C.rows == A.rows`, `C.colsb == B.colsb`, `A.colsb / 4 == B.rows`, all
//! within the palette limits, three distinct tiles), and a load or store outside the
//! mapped memory page-faults. Both backends check all of that first and return a
//! [`TileFault`] instead: the emulator to report it, the hardware backend so that the
//! instruction it then runs cannot fault (its `load` / `store` take slices and
//! check every row against them: that is what makes its `asm!` sound).
//!
//! Tile numbers are const generics (`T`, `C`, `A`, `B` in `0..8`): the hardware
//! instructions encode them as immediates.

mod emu;
pub(crate) mod gemm;
#[cfg(target_arch = "x86_64")]
mod hw;

pub use emu::Emulator;
#[cfg(target_arch = "x86_64")]
pub use hw::Hardware;

/// Tiles in palette 1.
pub const TILES: usize = 8;
/// Largest rows per tile (palette 1).
pub const MAX_ROWS: usize = 16;
/// Largest bytes per tile row (palette 1).
pub const MAX_COLSB: usize = 64;

/// A palette-1 tile configuration: rows and bytes per row of each of the 8 tiles (a
/// tile with 0 rows and 0 bytes is unused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TileConfig {
    pub rows: [u8; TILES],
    pub colsb: [u16; TILES],
}

/// Why a tile instruction would fault on the hardware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TileFault {
    /// `ldtilecfg` with an invalid palette-1 configuration (`#GP`).
    BadConfig(String),
    /// A tile instruction with no configuration loaded, or on an unconfigured tile
    /// (`#UD`).
    NotConfigured(String),
    /// A `tdp*` instruction whose tile shapes disagree (`#UD`).
    Shape(String),
    /// A load or store outside the given memory (a page fault on the hardware).
    Bounds(String),
    /// The backend lacks the instruction (e.g. AMX-BF16 on an AMX-INT8-only CPU: `#UD`).
    Unsupported(&'static str),
}

impl std::fmt::Display for TileFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TileFault::BadConfig(s) => write!(f, "ldtilecfg: invalid config (#GP): {s}"),
            TileFault::NotConfigured(s) => write!(f, "tile not configured (#UD): {s}"),
            TileFault::Shape(s) => write!(f, "tile shapes disagree (#UD): {s}"),
            TileFault::Bounds(s) => write!(f, "tile access out of bounds: {s}"),
            TileFault::Unsupported(s) => write!(f, "instruction not supported (#UD): {s}"),
        }
    }
}

impl std::error::Error for TileFault {}

impl TileConfig {
    /// Tile `t` as `rows` x `colsb` bytes.
    pub fn with(mut self, t: usize, rows: usize, colsb: usize) -> TileConfig {
        self.rows[t] = rows as u8;
        self.colsb[t] = colsb as u16;
        self
    }

    /// The palette-1 checks of `ldtilecfg`: every tile `rows <= 16`, `colsb <= 64`, and
    /// either both zero (unused) or both non-zero.
    pub fn validate(&self) -> Result<(), TileFault> {
        for t in 0..TILES {
            let (r, c) = (self.rows[t] as usize, self.colsb[t] as usize);
            if r > MAX_ROWS || c > MAX_COLSB {
                return Err(TileFault::BadConfig(format!(
                    "tmm{t}: {r} rows x {c} bytes exceeds {MAX_ROWS} x {MAX_COLSB}"
                )));
            }
            if (r == 0) != (c == 0) {
                return Err(TileFault::BadConfig(format!(
                    "tmm{t}: {r} rows x {c} bytes (both zero or both non-zero)"
                )));
            }
        }
        Ok(())
    }

    /// The 64-byte memory operand of `ldtilecfg`: palette 1, start_row 0, `colsb` as
    /// u16 at bytes 16.., `rows` at bytes 48.., reserved bytes zero.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = 1;
        for t in 0..TILES {
            b[16 + 2 * t..18 + 2 * t].copy_from_slice(&self.colsb[t].to_le_bytes());
            b[48 + t] = self.rows[t];
        }
        b
    }

    /// `(rows, colsb)` of a configured tile `t`.
    fn tile(&self, t: usize, what: &str) -> Result<(usize, usize), TileFault> {
        let (r, c) = (self.rows[t] as usize, self.colsb[t] as usize);
        if r == 0 {
            return Err(TileFault::NotConfigured(format!(
                "{what}: tmm{t} is unused in the config"
            )));
        }
        Ok((r, c))
    }
}

/// The checks of a `tilezero` of tile `t`: configured, and `t` used by the config.
pub(crate) fn check_zero(cfg: Option<&TileConfig>, t: usize) -> Result<(), TileFault> {
    let cfg = cfg.ok_or_else(|| TileFault::NotConfigured("tilezero: no ldtilecfg".into()))?;
    cfg.tile(t, "tilezero")?;
    Ok(())
}

/// The checks of a `tileloadd` / `tilestored` of tile `t` against a memory of `len`
/// bytes: the tile's `rows` rows of `colsb` bytes at `offset + r·stride` all inside.
/// Returns `(rows, colsb)`.
pub(crate) fn check_access(
    cfg: Option<&TileConfig>,
    t: usize,
    what: &str,
    len: usize,
    offset: usize,
    stride: usize,
) -> Result<(usize, usize), TileFault> {
    let cfg = cfg.ok_or_else(|| TileFault::NotConfigured(format!("{what}: no ldtilecfg")))?;
    let (rows, colsb) = cfg.tile(t, what)?;
    let end = (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(offset))
        .and_then(|x| x.checked_add(colsb));
    match end {
        Some(e) if e <= len => Ok((rows, colsb)),
        _ => Err(TileFault::Bounds(format!(
            "{what} tmm{t}: {rows} rows x {colsb} bytes at offset {offset}, stride {stride}, \
             in {len} bytes"
        ))),
    }
}

/// The AMX-E4 checks of `tdp* C, A, B`; returns `(C.rows, C.colsb / 4, A.colsb / 4)`
/// (rows, dword columns of C, K dwords).
pub(crate) fn check_dp(
    cfg: Option<&TileConfig>,
    what: &str,
    c: usize,
    a: usize,
    b: usize,
) -> Result<(usize, usize, usize), TileFault> {
    let cfg = cfg.ok_or_else(|| TileFault::NotConfigured(format!("{what}: no ldtilecfg")))?;
    if c == a || c == b || a == b {
        return Err(TileFault::Shape(format!(
            "{what} tmm{c}, tmm{a}, tmm{b}: the three tiles must differ"
        )));
    }
    let (cr, cc) = cfg.tile(c, what)?;
    let (ar, ac) = cfg.tile(a, what)?;
    let (br, bc) = cfg.tile(b, what)?;
    if cc % 4 != 0 || ac % 4 != 0 || bc % 4 != 0 {
        return Err(TileFault::Shape(format!(
            "{what}: colsb {cc} / {ac} / {bc} not multiples of 4"
        )));
    }
    if cr != ar || cc != bc || ac / 4 != br {
        return Err(TileFault::Shape(format!(
            "{what}: C {cr}x{cc}, A {ar}x{ac}, B {br}x{bc} (need C.rows = A.rows, \
             C.colsb = B.colsb, A.colsb / 4 = B.rows)"
        )));
    }
    Ok((cr, cc / 4, ac / 4))
}

/// One tile-instruction backend (see the module docs). Tile numbers are const
/// generics in `0..8` (checked at compile time).
pub trait TileUnit {
    /// `"emulator"` or `"hardware"`.
    fn name(&self) -> &'static str;
    /// `ldtilecfg`: validates and loads `cfg`; every tile becomes zero.
    fn configure(&mut self, cfg: &TileConfig) -> Result<(), TileFault>;
    /// `tilezero tmmT`.
    fn zero<const T: usize>(&mut self) -> Result<(), TileFault>;
    /// `tileloadd tmmT, [src + offset + r·stride]`.
    fn load<const T: usize>(
        &mut self,
        src: &[u8],
        offset: usize,
        stride: usize,
    ) -> Result<(), TileFault>;
    /// `tilestored [dst + offset + r·stride], tmmT`.
    fn store<const T: usize>(
        &mut self,
        dst: &mut [u8],
        offset: usize,
        stride: usize,
    ) -> Result<(), TileFault>;
    /// `tdpbusd tmmC, tmmA, tmmB` (A u8, B s8, C i32).
    fn dpbusd<const C: usize, const A: usize, const B: usize>(&mut self) -> Result<(), TileFault>;
    /// `tdpbf16ps tmmC, tmmA, tmmB` (A, B bf16 pairs, C f32).
    fn dpbf16ps<const C: usize, const A: usize, const B: usize>(&mut self)
        -> Result<(), TileFault>;
    /// `tilerelease`: back to the unconfigured init state.
    fn release(&mut self);
}

/// Compile-time check of a tile number.
pub(crate) struct Tmm<const T: usize>;
impl<const T: usize> Tmm<T> {
    pub(crate) const OK: () = assert!(T < TILES, "tile numbers are 0..8");
}

/// `&mut [u32]` as bytes (tile stores of i32 / f32 results).
pub(crate) fn u32_bytes_mut(x: &mut [u32]) -> &mut [u8] {
    // SAFETY: u32 has no padding and any byte pattern is a valid u32; the byte slice
    // covers exactly the same memory and borrows it exclusively.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<u8>(), x.len() * 4) }
}

/// `&[i8]` as bytes.
pub(crate) fn i8_bytes(x: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment and no invalid values.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), x.len()) }
}

/// `&[u16]` as bytes.
pub(crate) fn u16_bytes(x: &[u16]) -> &[u8] {
    // SAFETY: u16 has no padding; the byte slice covers the same memory, shared.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), x.len() * 2) }
}

/// Test support: the AMX GEMMs through the [`Emulator`] on any CPU, and the scalar
/// model of the AMX bf16 order. Not part of the engine API.
#[doc(hidden)]
pub mod testing {
    use crate::bgemm::{f32_to_bf16, padded_k, Bf16Matrix};
    use crate::qgemm::QuantizedMatrix;
    use crate::{Epilogue, KernelError};

    /// `gemm_u8s8` through the tile interface on the emulator: `b`'s weights (any
    /// path's matrix) repacked into the AMX layout, the same compensation, scales and
    /// epilogue (the AVX-512 vector epilogue where AVX-512 is, else the scalar one).
    pub fn gemm_u8s8_amx_emulated(
        a: &[u8],
        scales: &[f32],
        m: usize,
        b: &QuantizedMatrix,
        c: &mut [f32],
        epilogue: Epilogue,
    ) -> Result<(), KernelError> {
        use crate::qgemm::amx::{emulated, EmuOut};
        emulated(a, Some(scales), m, b, EmuOut::F32(c), epilogue)
    }

    /// `gemm_u8s8_i32` through the tile interface on the emulator.
    pub fn gemm_u8s8_i32_amx_emulated(
        a: &[u8],
        m: usize,
        b: &QuantizedMatrix,
        c: &mut [i32],
    ) -> Result<(), KernelError> {
        use crate::qgemm::amx::{emulated, EmuOut};
        emulated(a, None, m, b, EmuOut::I32(c), Epilogue::None)
    }

    /// `gemm_bf16` through the tile interface on the emulator (`b` repacked).
    pub fn gemm_bf16_amx_emulated(
        a: &[f32],
        m: usize,
        b: &Bf16Matrix,
        c: &mut [f32],
        epilogue: Epilogue,
    ) -> Result<(), KernelError> {
        crate::bgemm::amx::emulated(a, m, b, c, epilogue)
    }

    /// The AMX bf16 GEMM's result element by element, with no tiles: `A` and `W`
    /// (`[n, k]` f32) rounded to bf16, each dot product in `tdpbf16ps` order (per 32
    /// elements of K: even and odd chains, their sum added to the accumulator), then
    /// the scalar epilogue (GELU in f64).
    pub fn gemm_bf16_amx_order_reference(
        a: &[f32],
        m: usize,
        w: &[f32],
        n: usize,
        k: usize,
        c: &mut [f32],
        epilogue: Epilogue,
    ) -> Result<(), KernelError> {
        crate::gemm::validate_dense(
            "gemm_bf16_amx_order_reference",
            a.len(),
            w.len(),
            c.len(),
            m,
            n,
            k,
        )?;
        crate::epilogue::validate(&epilogue, m, n)?;
        let kp = padded_k(k);
        let round = |x: &[f32]| {
            let mut v: Vec<u16> = x.iter().map(|&y| f32_to_bf16(y)).collect();
            v.resize(kp, 0);
            v
        };
        for i in 0..m {
            let ar = round(&a[i * k..(i + 1) * k]);
            for j in 0..n {
                let wr = round(&w[j * k..(j + 1) * k]);
                let acc = crate::bgemm::amx::order_reference(&ar, &wr, kp);
                c[i * n + j] = epilogue.apply(acc, i, j, n);
            }
        }
        Ok(())
    }
}
