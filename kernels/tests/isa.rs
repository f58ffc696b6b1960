//! ISA tokens and ISA name parsing.

use e5embed_kernels::{Isa, IsaKind, KernelError};

#[test]
fn parse_names() {
    assert_eq!("scalar".parse::<IsaKind>(), Ok(IsaKind::Scalar));
    assert_eq!("avx2".parse::<IsaKind>(), Ok(IsaKind::Avx2));
    assert_eq!("avx512".parse::<IsaKind>(), Ok(IsaKind::Avx512));
    assert_eq!(" AVX512\n".parse::<IsaKind>(), Ok(IsaKind::Avx512));
    for bad in ["", "sse", "avx", "avx-512", "vnni", "amx", "avx2 fma"] {
        assert_eq!(
            bad.parse::<IsaKind>(),
            Err(KernelError::UnknownIsa(bad.to_string())),
            "{bad:?}"
        );
    }
    for k in IsaKind::ALL {
        assert_eq!(k.name().parse::<IsaKind>(), Ok(k));
        assert_eq!(k.to_string(), k.name());
    }
}

#[test]
fn from_name_is_the_env_logic() {
    assert_eq!(Isa::from_name(""), Ok(Isa::best()));
    assert_eq!(Isa::from_name("  "), Ok(Isa::best()));
    assert_eq!(Isa::from_name("scalar"), Ok(Isa::scalar()));
    assert!(matches!(
        Isa::from_name("sse9"),
        Err(KernelError::UnknownIsa(_))
    ));
    for k in IsaKind::ALL {
        match Isa::new(k) {
            Some(isa) => assert_eq!(Isa::from_name(k.name()), Ok(isa)),
            None => assert_eq!(
                Isa::from_name(k.name()),
                Err(KernelError::UnsupportedIsa(k.name().to_string()))
            ),
        }
    }
}

#[test]
fn tokens() {
    let avail = Isa::available();
    assert_eq!(avail[0], Isa::scalar());
    assert_eq!(*avail.last().unwrap(), Isa::best());
    assert_eq!(Isa::new(IsaKind::Scalar), Some(Isa::scalar()));
    for isa in &avail {
        assert_eq!(Isa::new(isa.kind()), Some(*isa));
        assert_eq!(isa.name(), isa.kind().name());
    }
    // AVX-512 implies AVX2 (+FMA).
    if Isa::new(IsaKind::Avx512).is_some() {
        assert!(Isa::new(IsaKind::Avx2).is_some());
    }
    // Detection agrees with std on x86_64.
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        assert_eq!(Isa::new(IsaKind::Avx2).is_some(), avx2);
        let avx512 = avx2
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq");
        assert_eq!(Isa::new(IsaKind::Avx512).is_some(), avx512);
    }
}

#[test]
fn errors_display() {
    let e = KernelError::UnknownIsa("sse".into());
    assert!(e.to_string().contains("sse"));
    let e: Box<dyn std::error::Error> = Box::new(KernelError::UnsupportedIsa("avx512".into()));
    assert!(e.to_string().contains("avx512"));
    assert!(KernelError::Shape("x".into()).to_string().contains("shape"));
}
