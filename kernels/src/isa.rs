//! CPU feature detection (once) and ISA tokens.
//!
//! An [`Isa`] is a proof token: its field is private and it can only be built through
//! [`Isa::new`], which checks the CPU. Every `#[target_feature]` function in this
//! crate is reached only through a `match` on a token's [`IsaKind`], which is what
//! makes those `unsafe` calls sound.

use crate::KernelError;
use std::str::FromStr;
use std::sync::OnceLock;

/// The instruction-set paths this crate implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IsaKind {
    /// Portable Rust, no intrinsics: the readable path and the fallback.
    Scalar,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512 F/BW/VL/DQ (+ AVX2 + FMA) (512-bit).
    Avx512,
}

impl IsaKind {
    /// Every kind, in order of preference from lowest to highest.
    pub const ALL: [IsaKind; 3] = [IsaKind::Scalar, IsaKind::Avx2, IsaKind::Avx512];

    /// The name used by `--isa`, logs and kernel names.
    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Scalar => "scalar",
            IsaKind::Avx2 => "avx2",
            IsaKind::Avx512 => "avx512",
        }
    }
}

impl FromStr for IsaKind {
    type Err = KernelError;

    /// Parses `scalar`, `avx2` or `avx512` (ASCII case-insensitive, surrounding
    /// whitespace ignored).
    fn from_str(s: &str) -> Result<IsaKind, KernelError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(IsaKind::Scalar),
            "avx2" => Ok(IsaKind::Avx2),
            "avx512" => Ok(IsaKind::Avx512),
            _ => Err(KernelError::UnknownIsa(s.to_string())),
        }
    }
}

impl std::fmt::Display for IsaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token proving that this CPU supports an [`IsaKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Isa(IsaKind);

/// Detected support, computed once per process.
#[derive(Clone, Copy, Debug)]
struct Detected {
    avx2: bool,
    avx512: bool,
}

fn detected() -> Detected {
    static DETECTED: OnceLock<Detected> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Detected {
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let avx512 = avx2
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512dq");
    Detected { avx2, avx512 }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Detected {
    Detected {
        avx2: false,
        avx512: false,
    }
}

impl Isa {
    /// The portable path; always available.
    pub fn scalar() -> Isa {
        Isa(IsaKind::Scalar)
    }

    /// A token for `kind`, or `None` if this CPU lacks it
    /// (Avx2 = avx2+fma; Avx512 = avx512f+bw+vl+dq and avx2+fma).
    pub fn new(kind: IsaKind) -> Option<Isa> {
        let d = detected();
        let ok = match kind {
            IsaKind::Scalar => true,
            IsaKind::Avx2 => d.avx2,
            IsaKind::Avx512 => d.avx512,
        };
        ok.then_some(Isa(kind))
    }

    /// The best path this CPU has (cached detection).
    pub fn best() -> Isa {
        *Isa::available().last().expect("scalar is always available")
    }

    /// Every path this CPU has, scalar first, best last.
    pub fn available() -> Vec<Isa> {
        IsaKind::ALL.iter().filter_map(|&k| Isa::new(k)).collect()
    }

    /// Resolves an ISA name (`--isa`): empty -> [`Isa::best`], otherwise the
    /// named ISA, with [`KernelError::UnknownIsa`] / [`KernelError::UnsupportedIsa`].
    pub fn from_name(name: &str) -> Result<Isa, KernelError> {
        if name.trim().is_empty() {
            return Ok(Isa::best());
        }
        let kind: IsaKind = name.parse()?;
        Isa::new(kind).ok_or_else(|| KernelError::UnsupportedIsa(kind.name().to_string()))
    }

    /// Which path this token stands for.
    pub fn kind(self) -> IsaKind {
        self.0
    }

    /// `"scalar"`, `"avx2"` or `"avx512"`.
    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
