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
        assert!(Isa::new(IsaKind::Neon).is_none());
    }
    // And on aarch64 (under qemu-aarch64 -cpu MODEL, tools/test-aarch64, std reads the
    // emulated CPU's HWCAPs). NEON is baseline on aarch64 Linux.
    #[cfg(target_arch = "aarch64")]
    {
        use e5embed_kernels::isa::Features;
        let neon = std::arch::is_aarch64_feature_detected!("neon");
        assert!(neon, "aarch64 Linux without NEON");
        assert_eq!(Isa::new(IsaKind::Neon).is_some(), neon);
        assert!(Isa::new(IsaKind::Avx2).is_none() && Isa::new(IsaKind::Avx512).is_none());
        assert_eq!(Isa::best().kind(), IsaKind::Neon);
        let f = Features::detected();
        assert_eq!(
            f.contains(Features::DOTPROD),
            std::arch::is_aarch64_feature_detected!("dotprod")
        );
        assert_eq!(
            f.contains(Features::I8MM),
            std::arch::is_aarch64_feature_detected!("i8mm")
        );
        assert_eq!(
            f.contains(Features::BF16),
            std::arch::is_aarch64_feature_detected!("bf16")
        );
        eprintln!("aarch64 features detected: {f:?}");
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

#[test]
fn one_token_for_every_family() {
    use e5embed_kernels::bgemm::{BIsa, BIsaKind};
    use e5embed_kernels::isa::Features;
    use e5embed_kernels::qgemm::{QIsa, QIsaKind};
    let f = Features::detected();
    assert_eq!(
        f,
        Features::detected(),
        "detected once, the same every call"
    );
    // Each kind's token exists exactly when the detected features cover its needs.
    assert_eq!(
        Isa::new(IsaKind::Avx512).is_some(),
        f.contains(Features::AVX2.with(Features::AVX512))
    );
    assert_eq!(
        QIsa::new(QIsaKind::AvxVnni).is_some(),
        f.contains(Features::AVX2.with(Features::AVX_VNNI))
    );
    assert_eq!(
        BIsa::new(BIsaKind::Avx512Bf16).is_some(),
        f.contains(
            Features::AVX2
                .with(Features::AVX512)
                .with(Features::AVX512_BF16)
        )
    );
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = std::arch::is_x86_feature_detected!("avx512vnni");
        assert_eq!(f.contains(Features::AVX512_VNNI), vnni);
    }
    // Debug names the family's token, Display the path.
    assert_eq!(format!("{:?}", Isa::scalar()), "Isa(Scalar)");
    assert_eq!(format!("{:?}", QIsa::scalar()), "QIsa(Scalar)");
    assert_eq!(format!("{}", BIsa::scalar()), "scalar");
    // Aliases parse to the same kind; names round-trip on every family.
    assert_eq!("VNNI".parse::<QIsaKind>(), Ok(QIsaKind::Avx512Vnni));
    assert_eq!("avx-vnni".parse::<QIsaKind>(), Ok(QIsaKind::AvxVnni));
    assert_eq!(" widen ".parse::<BIsaKind>(), Ok(BIsaKind::Avx512Widen));
    assert_eq!("bf16".parse::<BIsaKind>(), Ok(BIsaKind::Avx512Bf16));
    assert!(matches!(
        "avx512".parse::<QIsaKind>(),
        Err(KernelError::UnknownIsa(_))
    ));
    for k in QIsaKind::ALL {
        assert_eq!(k.to_string().parse::<QIsaKind>(), Ok(k));
    }
    for k in BIsaKind::ALL {
        assert_eq!(k.to_string().parse::<BIsaKind>(), Ok(k));
    }
    // The bf16 family takes the most specialised path the CPU has: AMX tiles, then
    // vdpbf16ps, then the AVX-512 widening path; on aarch64 bfmmla, then NEON widening.
    let expected = [
        BIsaKind::Amx,
        BIsaKind::Avx512Bf16,
        BIsaKind::Avx512Widen,
        BIsaKind::NeonBf16,
        BIsaKind::NeonWiden,
    ]
    .into_iter()
    .find_map(BIsa::new)
    .unwrap_or_else(BIsa::scalar);
    assert_eq!(BIsa::best(), expected);
    assert_eq!(*BIsa::available().last().unwrap(), BIsa::best());
    assert_eq!(*QIsa::available().last().unwrap(), QIsa::best());
    // The f32 token reports the GEMM's microkernel like the gemm module does.
    for isa in Isa::available() {
        assert_eq!(isa.kernel_name(), e5embed_kernels::gemm::kernel_name(isa));
        assert_eq!(isa.tile(), e5embed_kernels::gemm::tile(isa));
    }
}
