//! AMX plumbing: the status agrees with the raw CPUID / XCR0 facts, the permission
//! request answers consistently, and the status says why AMX is missing.

use e5embed_kernels::amx::{self, AmxStatus};

#[cfg(target_arch = "x86_64")]
#[test]
fn status_agrees_with_cpuid_and_permission() {
    let c = amx::cpuid();
    let s = amx::status();
    println!("AMX cpuid {c:?}; status: {s}");
    assert!(
        c.tile || !(c.int8 || c.bf16),
        "AMX-INT8/BF16 without AMX-TILE: {c:?}"
    );
    match s {
        AmxStatus::Available { int8, bf16 } => {
            assert!(c.tile && c.os_enabled);
            assert_eq!((int8, bf16), (c.int8, c.bf16));
            // Asking again after a grant succeeds (the permission is per process).
            assert_eq!(amx::request_tile_permission(), Ok(()));
        }
        AmxStatus::NotInCpu => {
            assert!(!c.tile);
            // Without AMX the kernel refuses the request: the clean fallback path.
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            assert!(amx::request_tile_permission().is_err());
        }
        AmxStatus::NotEnabledByOs => assert!(c.tile && !c.os_enabled),
        AmxStatus::PermissionRefused(errno) => {
            assert!(c.tile && c.os_enabled && errno > 0)
        }
        AmxStatus::NotX86 => panic!("NotX86 on an x86-64 build"),
    }
    assert!(s.is_available() == matches!(s, AmxStatus::Available { .. }));
    // Cached: the same answer every time.
    assert_eq!(amx::status(), s);
    let text = s.to_string();
    assert!(text.contains("AMX"), "{text}");
}

/// Off x86-64 (aarch64 under tools/test-aarch64) there is no AMX: the status says so.
#[cfg(not(target_arch = "x86_64"))]
#[test]
fn no_amx_off_x86() {
    let s = amx::status();
    assert!(matches!(s, AmxStatus::NotX86), "{s}");
    assert!(!amx::cpuid().tile);
}
