//! Cache sizes of the CPU (once per process), for the GEMM's cache blocking.
//!
//! Sources, first that answers: Linux sysfs (`/sys/devices/system/cpu/cpu0/cache/
//! index*/{level,type,size}`), then CPUID leaf 4 (Intel deterministic cache
//! parameters; AMD exposes the same layout as leaf 0x8000_001D), then conservative
//! defaults (32 KB L1D, 256 KB L2, 8 MB L3: every x86-64 with AVX2 has at least
//! that). Values are clamped to sane ranges so a bogus report cannot produce a
//! degenerate blocking.

use std::sync::OnceLock;

/// Per-core data cache sizes in bytes (L3 is the whole shared cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
    /// Where the numbers came from: `"sysfs"`, `"cpuid"` or `"default"`.
    pub source: &'static str,
}

const DEFAULT: CacheSizes = CacheSizes {
    l1d: 32 << 10,
    l2: 256 << 10,
    l3: 8 << 20,
    source: "default",
};

/// The detected cache sizes (cached after the first call).
pub fn cache_sizes() -> CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    *SIZES.get_or_init(|| {
        let c = from_sysfs().or_else(from_cpuid).unwrap_or(DEFAULT);
        CacheSizes {
            l1d: c.l1d.clamp(16 << 10, 1 << 20),
            l2: c.l2.clamp(128 << 10, 64 << 20),
            l3: c.l3.clamp(1 << 20, 4 << 30),
            source: c.source,
        }
    })
}

/// Parses sysfs sizes like `48K`, `2048K`, `260M`.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().map(|n| n * mult)
}

fn from_sysfs() -> Option<CacheSizes> {
    let mut c = CacheSizes {
        l1d: 0,
        l2: 0,
        l3: 0,
        source: "sysfs",
    };
    for i in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
        let (Some(level), Some(ty), Some(size)) = (read("level"), read("type"), read("size"))
        else {
            continue;
        };
        let size = parse_size(&size)?;
        match (level.trim(), ty.trim()) {
            ("1", "Data") => c.l1d = size,
            ("2", "Data" | "Unified") => c.l2 = size,
            ("3", "Data" | "Unified") => c.l3 = size,
            _ => {}
        }
    }
    (c.l1d > 0 && c.l2 > 0).then_some(CacheSizes {
        l3: if c.l3 > 0 { c.l3 } else { DEFAULT.l3 },
        ..c
    })
}

/// Writes back and drops every cache line holding a byte of `bytes`, from every cache level
/// of every core (x86-64 `clflush`, aarch64 `dc civac`; then a full fence), so the next read
/// of them comes from memory. The bytes are unchanged. For measuring a kernel that streams
/// its weights from memory, as a forward does with weights larger than the last-level cache
/// (`src/tune.rs`). Returns `false` where this architecture has no such instruction here
/// (nothing was evicted).
pub fn evict(bytes: &[u8]) -> bool {
    const LINE: usize = 64; // the smallest line of the CPUs served; a larger line is still hit
    if bytes.is_empty() {
        // An empty slice's pointer may be dangling: nothing to flush, and no address to touch.
        return cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
    }
    // The first address of each line holding a byte of `bytes`.
    let start = bytes.as_ptr() as usize;
    let lines = (start & !(LINE - 1)..start + bytes.len()).step_by(LINE);
    #[cfg(target_arch = "x86_64")]
    {
        for p in lines {
            // SAFETY: `p` lies in the cache line of a byte of `bytes` (non-empty, a live
            // borrow), and a line never crosses a page, so `p` is mapped and readable: CLFLUSH
            // (SSE2, baseline on x86-64), which faults like a load on an unmapped address,
            // raises nothing here and changes no data.
            unsafe { std::arch::x86_64::_mm_clflush(p as *const u8) };
        }
        // SAFETY: MFENCE (SSE2) orders the flushes before later loads; it touches no memory.
        unsafe { std::arch::x86_64::_mm_mfence() };
        true
    }
    #[cfg(target_arch = "aarch64")]
    {
        for p in lines {
            // SAFETY: `p` is mapped and readable as above; DC CIVAC (clean and invalidate by
            // address to the point of coherency) is allowed at EL0 on Linux (SCTLR_EL1.UCI)
            // and changes no data.
            unsafe {
                std::arch::asm!("dc civac, {0}", in(reg) p, options(nostack, preserves_flags))
            };
        }
        // SAFETY: a barrier; it touches no memory.
        unsafe { std::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = lines;
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn from_cpuid() -> Option<CacheSizes> {
    use std::arch::x86_64::__cpuid_count;
    // CPUID exists on every x86-64 CPU (the intrinsic is safe on this toolchain).
    let max_leaf = __cpuid_count(0, 0).eax;
    if max_leaf < 4 {
        return None;
    }
    let mut c = CacheSizes {
        l1d: 0,
        l2: 0,
        l3: 0,
        source: "cpuid",
    };
    for sub in 0..16 {
        let r = __cpuid_count(4, sub); // leaf 4 supported (checked above)
        let ty = r.eax & 0x1f; // 0 = no more caches, 1 = data, 2 = instruction, 3 = unified
        if ty == 0 {
            break;
        }
        let level = (r.eax >> 5) & 0x7;
        let ways = ((r.ebx >> 22) & 0x3ff) as usize + 1;
        let parts = ((r.ebx >> 12) & 0x3ff) as usize + 1;
        let line = (r.ebx & 0xfff) as usize + 1;
        let sets = r.ecx as usize + 1;
        let size = ways * parts * line * sets;
        match (level, ty) {
            (1, 1) => c.l1d = size,
            (2, 1 | 3) => c.l2 = size,
            (3, 1 | 3) => c.l3 = size,
            _ => {}
        }
    }
    (c.l1d > 0 && c.l2 > 0).then_some(CacheSizes {
        l3: if c.l3 > 0 { c.l3 } else { DEFAULT.l3 },
        ..c
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn from_cpuid() -> Option<CacheSizes> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_sizes() {
        assert_eq!(parse_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_size("260M"), Some(260 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn evict_leaves_the_bytes_as_they_were() {
        // Unaligned starts and ends, empty slices, a slice inside one line, several pages.
        let data: Vec<u8> = (0..3 * 4096 + 77).map(|i| (i * 131 % 251) as u8).collect();
        let copy = data.clone();
        for (a, b) in [
            (0, data.len()),
            (1, 63),
            (5, 5),
            (63, 65),
            (100, 8200),
            (4095, 9000),
        ] {
            let evicted = evict(&data[a..b]);
            assert_eq!(
                evicted,
                cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
            );
            assert_eq!(data, copy, "after evicting {a}..{b}");
        }
        // An empty slice's dangling pointer is never touched (it segfaulted when it was).
        assert_eq!(
            evict(&[]),
            cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        );
        assert_eq!(
            evict(&Vec::<u8>::new()),
            cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        );
    }

    #[test]
    fn detected_sizes_are_sane() {
        let c = cache_sizes();
        assert!(
            c.l1d >= 16 << 10 && c.l2 >= c.l1d && c.l3 >= 1 << 20,
            "{c:?}"
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(id) = from_cpuid() {
            // sysfs and CPUID agree where both exist (same hardware description).
            if let Some(fs) = from_sysfs() {
                assert_eq!((fs.l1d, fs.l2), (id.l1d, id.l2), "{fs:?} vs {id:?}");
            }
        }
    }
}
