//! AMX (Advanced Matrix Extensions) detection and the Linux tile-data permission.
//!
//! AMX needs three things before a tile instruction may run:
//! 1. **The CPU**: CPUID.(EAX=7, ECX=0):EDX bit 24 `AMX-TILE`, bit 25 `AMX-INT8`
//!    (`tdpbusd`, ...), bit 22 `AMX-BF16` (`tdpbf16ps`).
//! 2. **The OS enabling the state**: XCR0 bits 17 (`XTILECFG`) and 18 (`XTILEDATA`),
//!    read with `xgetbv` (only when CPUID.1:ECX.OSXSAVE says `xgetbv` exists).
//! 3. **Linux's per-process permission** for the 8 KB of tile data in every context
//!    switch: `arch_prctl(ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18)`, asked
//!    once per process (Linux >= 5.16). Without it the first tile instruction faults
//!    (SIGILL).
//!
//! [`status`] checks all three, once, and caches the answer; [`AmxStatus::Available`] is
//! the only state in which an AMX kernel may be called. Every other state is a clean
//! fallback: the caller keeps its AVX-512 VNNI / BF16 path and can print
//! [`AmxStatus`]'s `Display` to say why.
//!
//! The AMX kernels (`qgemm/amx.rs`, `bgemm/amx.rs`) are written over the tile interface
//! of [`crate::tiles`], whose hardware backend exists only where [`status`] is
//! Available (the `Amx` kinds of `QIsa` / `BIsa` require the `AMX_INT8` / `AMX_BF16`
//! [`crate::isa::Features`], which come from [`status`]). **They have never run on AMX
//! hardware**: the machines this crate was built on (KVM guests of a Sapphire Rapids
//! class host, an AMD EPYC Zen 5) expose no AMX (step 1 fails: the three CPUID bits are
//! 0, and `arch_prctl` answers `EINVAL`); they were tested through the tile emulator,
//! and `kernels/tests/amx_tiles.rs` compares hardware and emulator bit for bit wherever
//! AMX exists.

use std::sync::OnceLock;

/// What stands between this process and AMX tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmxStatus {
    /// CPU, OS and permission all present: tile instructions may run.
    Available { int8: bool, bf16: bool },
    /// Not an x86-64 build.
    NotX86,
    /// The CPU (or the hypervisor's CPUID) reports no AMX-TILE.
    NotInCpu,
    /// The CPU has AMX but the OS has not enabled the tile state in XCR0.
    NotEnabledByOs,
    /// Linux refused `ARCH_REQ_XCOMP_PERM` for XTILEDATA (errno; e.g. an older kernel).
    PermissionRefused(i64),
}

impl AmxStatus {
    pub fn is_available(self) -> bool {
        matches!(self, AmxStatus::Available { .. })
    }
}

impl std::fmt::Display for AmxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmxStatus::Available { int8, bf16 } => {
                write!(f, "AMX available (int8 {int8}, bf16 {bf16})")
            }
            AmxStatus::NotX86 => f.write_str("no AMX: not an x86-64 build"),
            AmxStatus::NotInCpu => f.write_str("no AMX: CPUID reports no AMX-TILE on this CPU"),
            AmxStatus::NotEnabledByOs => {
                f.write_str("no AMX: the OS has not enabled the tile state (XCR0 bits 17/18)")
            }
            AmxStatus::PermissionRefused(errno) => write!(
                f,
                "no AMX: Linux refused the tile-data permission (arch_prctl \
                 ARCH_REQ_XCOMP_PERM, errno {errno}; Linux >= 5.16 is needed)"
            ),
        }
    }
}

/// The raw CPUID facts (cheap; no permission request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AmxCpuid {
    pub tile: bool,
    pub int8: bool,
    pub bf16: bool,
    /// XCR0 has both XTILECFG and XTILEDATA enabled.
    pub os_enabled: bool,
}

/// Reads the CPUID bits and XCR0 (see the module docs).
pub fn cpuid() -> AmxCpuid {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        // Leaf 7 is only read when the maximum basic leaf (leaf 0's EAX) reaches it.
        let max_leaf = __cpuid_count(0, 0).eax;
        if max_leaf < 7 {
            return AmxCpuid::default();
        }
        let edx = __cpuid_count(7, 0).edx;
        let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
        let os_enabled = osxsave && {
            let xcr0: u64;
            // SAFETY: xgetbv with ECX = 0 is valid whenever CPUID.1:ECX.OSXSAVE is set
            // (checked just above); it reads XCR0 and touches no memory.
            unsafe {
                let (lo, hi): (u32, u32);
                std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                    options(nomem, nostack, preserves_flags));
                xcr0 = (u64::from(hi) << 32) | u64::from(lo);
            }
            xcr0 & (0b11 << 17) == (0b11 << 17)
        };
        AmxCpuid {
            tile: edx & (1 << 24) != 0,
            int8: edx & (1 << 25) != 0,
            bf16: edx & (1 << 22) != 0,
            os_enabled,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    AmxCpuid::default()
}

/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: `Ok` or the errno. Asking
/// is harmless on any Linux x86-64 (a CPU without AMX answers `EINVAL`).
pub fn request_tile_permission() -> Result<(), i64> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        const SYS_ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call with these arguments only changes this
        // process's permitted XSAVE features (or fails); it reads and writes no user
        // memory. `syscall` clobbers rcx and r11, declared here.
        unsafe {
            std::arch::asm!("syscall",
                inlateout("rax") SYS_ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _, lateout("r11") _,
                options(nostack));
        }
        if ret == 0 {
            Ok(())
        } else {
            Err(-ret)
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    Err(38) // ENOSYS
}

/// CPU, OS and permission, checked once per process (the permission is requested at
/// most once, and only when the CPU and OS have AMX).
pub fn status() -> AmxStatus {
    static STATUS: OnceLock<AmxStatus> = OnceLock::new();
    *STATUS.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return AmxStatus::NotX86;
        }
        // Miri cannot run `cpuid` (inline assembly); its runs (tools/sanitize) check the
        // safe wrappers' bounds, not AMX, which no kernel then takes.
        if cfg!(miri) {
            return AmxStatus::NotInCpu;
        }
        let c = cpuid();
        if !c.tile {
            return AmxStatus::NotInCpu;
        }
        if !c.os_enabled {
            return AmxStatus::NotEnabledByOs;
        }
        match request_tile_permission() {
            Ok(()) => AmxStatus::Available {
                int8: c.int8,
                bf16: c.bf16,
            },
            Err(errno) => AmxStatus::PermissionRefused(errno),
        }
    })
}
