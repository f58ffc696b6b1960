//! CPU features (detected once) and the one ISA token every kernel family uses.
//!
//! [`Features`] is what this CPU has, read once per process. Each kernel family names
//! its paths with a small enum implementing [`Family`] (the f32 GEMM's [`IsaKind`], the
//! int8 GEMM's [`QIsaKind`](crate::qgemm::QIsaKind), the bf16 GEMM's
//! [`BIsaKind`](crate::bgemm::BIsaKind)), and each kind says which [`Features`] its
//! `#[target_feature]` code uses ([`Family::requires`]). A [`Path<F>`] is the proof token:
//! its field is private and only [`Path::new`] builds one, after checking the detected
//! features against the kind's. Every `#[target_feature]` function in this crate is
//! reached only through a `match` on a token's kind, which is what makes those `unsafe`
//! calls sound. [`Isa`], [`QIsa`](crate::qgemm::QIsa) and [`BIsa`](crate::bgemm::BIsa)
//! are `Path<IsaKind>`, `Path<QIsaKind>` and `Path<BIsaKind>`.
//!
//! The override for tests and benchmarks is explicit: [`Path::new`] with a kind, or
//! [`Path::from_name`] (`--isa`); nothing is read from the environment.

use crate::KernelError;
use std::fmt;
use std::hash::Hash;
use std::sync::OnceLock;

/// A set of the CPU features this crate's kernels use (a bit set; each constant is one
/// group the kernels enable together).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u32);

impl Features {
    /// Nothing: what the portable paths need.
    pub const NONE: Features = Features(0);
    /// `avx2` + `fma` (256-bit).
    pub const AVX2: Features = Features(1);
    /// `avx512f` + `avx512bw` + `avx512vl` + `avx512dq` (512-bit).
    pub const AVX512: Features = Features(1 << 1);
    /// `avxvnni`: VEX `vpdpbusd` on ymm.
    pub const AVX_VNNI: Features = Features(1 << 2);
    /// `avx512vnni`: `vpdpbusd` on zmm.
    pub const AVX512_VNNI: Features = Features(1 << 3);
    /// `avx512bf16`: `vdpbf16ps`, `vcvtne2ps2bf16`.
    pub const AVX512_BF16: Features = Features(1 << 4);
    /// aarch64 `neon` (Advanced SIMD, 128-bit; baseline on aarch64 Linux).
    pub const NEON: Features = Features(1 << 5);
    /// aarch64 `dotprod`: `sdot` / `udot` (4-way int8 dot products into i32 lanes).
    pub const DOTPROD: Features = Features(1 << 6);
    /// aarch64 `i8mm`: `smmla` / `usmmla` / `usdot` (int8 2x8 by 8x2 matrix multiply).
    pub const I8MM: Features = Features(1 << 7);
    /// aarch64 `bf16`: `bfdot` / `bfmmla` / `bfcvt`.
    pub const BF16: Features = Features(1 << 8);
    /// x86 AMX-TILE + AMX-INT8 (`tdpbusd`), enabled by the OS and permitted by Linux
    /// ([`crate::amx::status`] = Available with int8).
    pub const AMX_INT8: Features = Features(1 << 9);
    /// x86 AMX-TILE + AMX-BF16 (`tdpbf16ps`), enabled and permitted likewise.
    pub const AMX_BF16: Features = Features(1 << 10);

    const NAMES: [(Features, &'static str); 11] = [
        (Features::AVX2, "avx2+fma"),
        (Features::AVX512, "avx512f/bw/vl/dq"),
        (Features::AVX_VNNI, "avxvnni"),
        (Features::AVX512_VNNI, "avx512vnni"),
        (Features::AVX512_BF16, "avx512bf16"),
        (Features::NEON, "neon"),
        (Features::DOTPROD, "dotprod"),
        (Features::I8MM, "i8mm"),
        (Features::BF16, "bf16"),
        (Features::AMX_INT8, "amx-int8"),
        (Features::AMX_BF16, "amx-bf16"),
    ];

    /// Both sets.
    pub const fn with(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }

    /// Whether every feature of `other` is in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// What this CPU has (detected on the first call, then cached).
    pub fn detected() -> Features {
        static DETECTED: OnceLock<Features> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Features::NAMES
            .iter()
            .filter(|(x, _)| self.contains(*x))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Features({})", names.join(" "))
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    use std::arch::is_x86_feature_detected as has;
    let mut f = Features::NONE;
    if has!("avx2") && has!("fma") {
        f = f.with(Features::AVX2);
    }
    if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
        f = f.with(Features::AVX512);
    }
    if has!("avxvnni") {
        f = f.with(Features::AVX_VNNI);
    }
    if has!("avx512vnni") {
        f = f.with(Features::AVX512_VNNI);
    }
    if has!("avx512bf16") {
        f = f.with(Features::AVX512_BF16);
    }
    // AMX needs the CPU, the OS (XCR0) and Linux's per-process permission: the one
    // check is `amx::status` (which asks for the permission once, only where the CPU
    // and OS have AMX).
    if let crate::amx::AmxStatus::Available { int8, bf16 } = crate::amx::status() {
        if int8 {
            f = f.with(Features::AMX_INT8);
        }
        if bf16 {
            f = f.with(Features::AMX_BF16);
        }
    }
    f
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Features {
    use std::arch::is_aarch64_feature_detected as has;
    let mut f = Features::NONE;
    if has!("neon") {
        f = f.with(Features::NEON);
    }
    if has!("dotprod") {
        f = f.with(Features::DOTPROD);
    }
    if has!("i8mm") {
        f = f.with(Features::I8MM);
    }
    if has!("bf16") {
        f = f.with(Features::BF16);
    }
    f
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Features {
    Features::NONE
}

pub(crate) mod sealed {
    /// Only this crate's kinds are families: a token's kind is what the kernels'
    /// `match`es trust.
    pub trait Sealed {}
}

/// The paths of one kernel family (an enum of kinds), and what each needs from the CPU.
/// Implemented by [`IsaKind`], [`QIsaKind`](crate::qgemm::QIsaKind) and
/// [`BIsaKind`](crate::bgemm::BIsaKind) only (sealed).
pub trait Family: Copy + Eq + Hash + fmt::Debug + Send + Sync + 'static + sealed::Sealed {
    /// The token's name in `Debug` output (`"Isa"`, `"QIsa"`, `"BIsa"`).
    const TOKEN: &'static str;
    /// Every kind, lowest to highest preference.
    const KINDS: &'static [Self];
    /// The portable kind, available everywhere.
    const SCALAR: Self;
    /// The kind [`Path::best`] takes where the CPU has it, before the last available of
    /// [`Family::KINDS`].
    const PREFERRED: Option<Self> = None;

    /// The name used by `--isa`, logs and kernel names.
    fn name(self) -> &'static str;
    /// Other spellings [`Path::from_name`] and `FromStr` accept (besides [`Family::name`]).
    fn aliases(self) -> &'static [&'static str] {
        &[]
    }
    /// The CPU features this kind's `#[target_feature]` code enables.
    fn requires(self) -> Features;
    /// The GEMM microkernel's name, e.g. `"gemm_u8s8_avx512vnni_12x32"`.
    fn kernel_name(self) -> &'static str;
    /// `(MR, NR)`: rows per full register tile, columns per weight panel.
    fn tile(self) -> (usize, usize);
}

/// Parses a kind's name or alias (ASCII case-insensitive, surrounding whitespace
/// ignored): the `FromStr` of every family.
pub(crate) fn parse_kind<F: Family>(s: &str) -> Result<F, KernelError> {
    let t = s.trim().to_ascii_lowercase();
    F::KINDS
        .iter()
        .copied()
        .find(|k| k.name() == t || k.aliases().contains(&t.as_str()))
        .ok_or_else(|| KernelError::UnknownIsa(s.to_string()))
}

/// `FromStr` (names and aliases) and `Display` (the name) for a [`Family`] enum.
macro_rules! family_str {
    ($kind:ty) => {
        impl std::str::FromStr for $kind {
            type Err = $crate::KernelError;
            /// The kind's name or one of its aliases (ASCII case-insensitive, surrounding
            /// whitespace ignored); [`KernelError::UnknownIsa`](crate::KernelError) otherwise.
            fn from_str(s: &str) -> Result<$kind, $crate::KernelError> {
                $crate::isa::parse_kind(s)
            }
        }

        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::isa::Family::name(*self))
            }
        }
    };
}
pub(crate) use family_str;

/// A token proving that this CPU supports the kind `F` (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path<F: Family>(F);

impl<F: Family> Path<F> {
    /// A token for `kind`, or `None` if this CPU lacks its [`Family::requires`].
    pub fn new(kind: F) -> Option<Path<F>> {
        Features::detected()
            .contains(kind.requires())
            .then_some(Path(kind))
    }

    /// The portable path; always available.
    pub fn scalar() -> Path<F> {
        Path(F::SCALAR)
    }

    /// Every path this CPU has, in [`Family::KINDS`] order (scalar first).
    pub fn available() -> Vec<Path<F>> {
        F::KINDS.iter().filter_map(|&k| Path::new(k)).collect()
    }

    /// The best path this CPU has: [`Family::PREFERRED`] if available, else the last
    /// of [`Path::available`].
    pub fn best() -> Path<F> {
        F::PREFERRED.and_then(Path::new).unwrap_or_else(|| {
            *Path::available()
                .last()
                .expect("scalar is always available")
        })
    }

    /// Resolves a path name (`--isa`): empty -> [`Path::best`], otherwise the named
    /// kind, with [`KernelError::UnknownIsa`] / [`KernelError::UnsupportedIsa`].
    pub fn from_name(name: &str) -> Result<Path<F>, KernelError> {
        if name.trim().is_empty() {
            return Ok(Path::best());
        }
        let kind: F = parse_kind(name)?;
        Path::new(kind).ok_or_else(|| KernelError::UnsupportedIsa(kind.name().to_string()))
    }

    /// Which path this token stands for.
    pub fn kind(self) -> F {
        self.0
    }

    /// The kind's name, e.g. `"avx512"`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The GEMM microkernel's name, e.g. `"gemm_f32_avx512_12x32"`.
    pub fn kernel_name(self) -> &'static str {
        self.0.kernel_name()
    }

    /// `(MR, NR)`: rows per full register tile and columns per weight panel. Row
    /// chunks that are multiples of MR avoid the remainder tiles.
    pub fn tile(self) -> (usize, usize) {
        self.0.tile()
    }
}

impl<F: Family> fmt::Display for Path<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<F: Family> fmt::Debug for Path<F> {
    /// `Isa(Avx512)`, `QIsa(Avx512Vnni)`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:?})", F::TOKEN, self.0)
    }
}

/// The f32 family's paths (GEMM, LayerNorm / GELU / softmax, attention, peak probes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IsaKind {
    /// Portable Rust, no intrinsics: the readable path and the fallback.
    Scalar,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512 F/BW/VL/DQ (+ AVX2 + FMA) (512-bit).
    Avx512,
    /// aarch64 NEON (Advanced SIMD, 128-bit, 32 vector registers).
    Neon,
}

impl IsaKind {
    /// Every kind, in order of preference from lowest to highest.
    pub const ALL: [IsaKind; 4] = [
        IsaKind::Scalar,
        IsaKind::Avx2,
        IsaKind::Avx512,
        IsaKind::Neon,
    ];

    /// The name used by `--isa`, logs and kernel names.
    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Scalar => "scalar",
            IsaKind::Avx2 => "avx2",
            IsaKind::Avx512 => "avx512",
            IsaKind::Neon => "neon",
        }
    }
}

impl sealed::Sealed for IsaKind {}

impl Family for IsaKind {
    const TOKEN: &'static str = "Isa";
    const KINDS: &'static [IsaKind] = &IsaKind::ALL;
    const SCALAR: IsaKind = IsaKind::Scalar;

    fn name(self) -> &'static str {
        IsaKind::name(self)
    }

    /// Avx2 = avx2+fma; Avx512 = avx512f/bw/vl/dq and avx2+fma; Neon = neon.
    fn requires(self) -> Features {
        match self {
            IsaKind::Scalar => Features::NONE,
            IsaKind::Avx2 => Features::AVX2,
            IsaKind::Avx512 => Features::AVX2.with(Features::AVX512),
            IsaKind::Neon => Features::NEON,
        }
    }

    fn kernel_name(self) -> &'static str {
        crate::gemm::kernel_info(self).name
    }

    fn tile(self) -> (usize, usize) {
        let i = crate::gemm::kernel_info(self);
        (i.mr, i.nr)
    }
}

family_str!(IsaKind);

/// A token proving that this CPU supports an [`IsaKind`]: the f32 kernels' path.
pub type Isa = Path<IsaKind>;
