//! The AMX tile interface and the AMX int8 / bf16 GEMMs written over it.
//!
//! - The emulator's instructions against hand-computed cases (`tdpbusd` sums and int32
//!   wraparound, `tdpbf16ps` order, RNE, DAZ / FTZ), the zeroing of rows and bytes past
//!   a tile's shape, and every fault the hardware would raise.
//! - The AMX GEMMs through the emulator on any CPU: int8 bitwise equal to the existing
//!   paths (every QIsa here, every epilogue, raw i32, unsigned-input mode), bf16
//!   bitwise equal to the scalar model of the `tdpbf16ps` order and within the stated
//!   bound of the `vdpbf16ps`-order reference; edge shapes (m, n, k not multiples of
//!   16 / 64, m = 1) and larger ones.
//! - Hardware vs emulator, bit for bit, where AMX is available; elsewhere the test says
//!   loudly (stderr) that it did not run and why.

mod common;

use common::{assert_bitwise, assert_close, rng, GELU_ABS, GELU_REL};
use e5embed_kernels::bgemm::{
    f32_to_bf16, gemm_bf16, gemm_bf16_reference, BIsa, BIsaKind, Bf16Matrix,
};
use e5embed_kernels::qgemm::{
    gemm_u8s8, gemm_u8s8_i32, gemm_u8s8_reference, padded_k, QIsa, QIsaKind, QuantizedMatrix,
};
use e5embed_kernels::tiles::testing::{
    gemm_bf16_amx_emulated, gemm_bf16_amx_order_reference, gemm_u8s8_amx_emulated,
    gemm_u8s8_i32_amx_emulated,
};
use e5embed_kernels::tiles::{Emulator, TileConfig, TileFault, TileUnit};
use e5embed_kernels::Epilogue;
use rand::rngs::StdRng;
use rand::Rng;

fn bf(x: f32) -> [u8; 2] {
    let h = f32_to_bf16(x);
    assert_eq!(
        e5embed_kernels::bgemm::bf16_to_f32(h),
        x,
        "{x} is not a bf16"
    );
    h.to_le_bytes()
}

/// A 1 x 1 C tile (tmm0), a 1-row A (tmm1) and a B of `kd` rows x 1 dword (tmm2).
fn one_by_one(kd: usize) -> TileConfig {
    TileConfig::default()
        .with(0, 1, 4)
        .with(1, 1, 4 * kd)
        .with(2, kd, 4)
}

/// `tdpbf16ps` on one output element: C = `c0`, A pairs `a`, B pairs `b` (f32 values
/// that are exact bf16).
fn dp_bf16_one(c0: f32, a: &[(f32, f32)], b: &[(f32, f32)]) -> f32 {
    let kd = a.len();
    let mut e = Emulator::new();
    e.configure(&one_by_one(kd)).unwrap();
    let abytes: Vec<u8> = a
        .iter()
        .flat_map(|&(x, y)| [bf(x), bf(y)].concat())
        .collect();
    let bbytes: Vec<u8> = b
        .iter()
        .flat_map(|&(x, y)| [bf(x), bf(y)].concat())
        .collect();
    e.load::<0>(&c0.to_le_bytes(), 0, 4).unwrap();
    e.load::<1>(&abytes, 0, 4 * kd).unwrap();
    e.load::<2>(&bbytes, 0, 4).unwrap();
    e.dpbf16ps::<0, 1, 2>().unwrap();
    let mut out = [0u8; 4];
    e.store::<0>(&mut out, 0, 4).unwrap();
    f32::from_le_bytes(out)
}

#[test]
fn emulator_tdpbusd_hand_computed_and_int32_wrap() {
    let mut e = Emulator::new();
    e.configure(&one_by_one(2)).unwrap();
    // A: 2 dwords of u8, B: 2 rows of one dword of s8.
    let a = [255u8, 1, 2, 3, 10, 0, 0, 0];
    let b = [-128i8, 1, -1, 127, -7, 0, 0, 0].map(|x| x as u8);
    e.zero::<0>().unwrap();
    e.load::<1>(&a, 0, 8).unwrap();
    e.load::<2>(&b, 0, 4).unwrap();
    e.dpbusd::<0, 1, 2>().unwrap();
    let mut out = [0u8; 4];
    e.store::<0>(&mut out, 0, 4).unwrap();
    // 255·(-128) + 1·1 + 2·(-1) + 3·127 + 10·(-7) = -32640 + 1 - 2 + 381 - 70.
    assert_eq!(i32::from_le_bytes(out), -32330);

    // Wraparound: C = i32::MAX - 100, plus 255·127 + 0 = 32385 -> wraps past MAX.
    let start = i32::MAX - 100;
    e.load::<0>(&start.to_le_bytes(), 0, 4).unwrap();
    let a = [255u8, 0, 0, 0, 0, 0, 0, 0];
    let b = [127i8, 0, 0, 0, 0, 0, 0, 0].map(|x| x as u8);
    e.load::<1>(&a, 0, 8).unwrap();
    e.load::<2>(&b, 0, 4).unwrap();
    e.dpbusd::<0, 1, 2>().unwrap();
    e.store::<0>(&mut out, 0, 4).unwrap();
    assert_eq!(i32::from_le_bytes(out), start.wrapping_add(255 * 127));
    assert!(
        i32::from_le_bytes(out) < 0,
        "no saturation: wrapped to negative"
    );

    // The full 16 x 16 x 64 tile at the extremes, repeated until it wraps: each step
    // adds 64·255·(-128) = -2 088 960 to every element; 1100 steps pass i32::MIN.
    let cfg = TileConfig::default()
        .with(0, 16, 64)
        .with(1, 16, 64)
        .with(2, 16, 64);
    e.configure(&cfg).unwrap();
    e.load::<1>(&[255u8; 1024], 0, 64).unwrap();
    e.load::<2>(&[0x80u8; 1024], 0, 64).unwrap();
    let mut want = 0i32;
    for _ in 0..1100 {
        e.dpbusd::<0, 1, 2>().unwrap();
        want = want.wrapping_add(64 * 255 * -128);
    }
    let mut c = [0u8; 1024];
    e.store::<0>(&mut c, 0, 64).unwrap();
    assert!(want > 0, "the model wrapped: {want}");
    for v in c.chunks_exact(4) {
        assert_eq!(i32::from_le_bytes(v.try_into().unwrap()), want);
    }
}

#[test]
fn emulator_tdpbf16ps_order_rounding_daz_ftz() {
    let p12 = 4096.0f32; // 2^12
                         // Even products 2^24 and 1, odd products 1 and 1. AMX: even = rne(2^24 + 1) = 2^24
                         // (tie to even), odd = 2, then 2^24 + 2 exactly. One chain in vdpbf16ps order
                         // (odd first) gives 1, 2^24 + 1 -> 2^24, then 2^24 + 1 -> 2^24 twice: 2^24.
    let got = dp_bf16_one(0.0, &[(p12, 1.0), (1.0, 1.0)], &[(p12, 1.0), (1.0, 1.0)]);
    assert_eq!(got, 16777218.0);

    // RNE on the accumulation into C: 1 + 2^-24 is a tie -> 1 (even); (1 + 2^-23) +
    // 2^-24 is a tie -> 1 + 2^-22 (even).
    let t = 2f32.powi(-12);
    assert_eq!(dp_bf16_one(1.0, &[(t, 0.0)], &[(t, 0.0)]), 1.0);
    let c0 = 1.0 + 2f32.powi(-23);
    assert_eq!(
        dp_bf16_one(c0, &[(t, 0.0)], &[(t, 0.0)]),
        1.0 + 2f32.powi(-22)
    );
    // Just above the tie rounds up.
    let t2 = 2f32.powi(-12) * 1.0078125; // 2^-12 · (1 + 2^-7): a bf16
    assert_eq!(
        dp_bf16_one(1.0, &[(t2, 0.0)], &[(t, 0.0)]),
        1.0 + 2f32.powi(-23)
    );

    // DAZ on the inputs: a bf16 subnormal (0x0001 = 2^-133) times 2^100 would be 2^-33.
    let mut e = Emulator::new();
    e.configure(&one_by_one(1)).unwrap();
    e.zero::<0>().unwrap();
    let sub = 0x0001u16.to_le_bytes();
    e.load::<1>(&[sub, bf(0.0)].concat(), 0, 4).unwrap();
    e.load::<2>(&[bf(2f32.powi(100)), bf(0.0)].concat(), 0, 4)
        .unwrap();
    e.dpbf16ps::<0, 1, 2>().unwrap();
    let mut out = [0u8; 4];
    e.store::<0>(&mut out, 0, 4).unwrap();
    assert_eq!(f32::from_le_bytes(out), 0.0);

    // FTZ on the result: 2^-70 · 2^-70 = 2^-140 is an f32 subnormal -> 0.
    let tiny = 2f32.powi(-70);
    assert_eq!(dp_bf16_one(0.0, &[(tiny, 0.0)], &[(tiny, 0.0)]), 0.0);
    // DAZ on the accumulator: a subnormal C plus 0 -> 0.
    let sub32 = f32::from_bits(1);
    assert_eq!(dp_bf16_one(sub32, &[(0.0, 0.0)], &[(0.0, 0.0)]), 0.0);
    // Normal results are kept: 2^-60 · 2^-60 = 2^-120.
    let t60 = 2f32.powi(-60);
    assert_eq!(
        dp_bf16_one(0.0, &[(t60, 0.0)], &[(t60, 0.0)]),
        2f32.powi(-120)
    );
    // Signs and the even/odd sum: (3·-2) + (0.5·8) = -2.
    assert_eq!(dp_bf16_one(0.0, &[(3.0, 0.5)], &[(-2.0, 8.0)]), -2.0);
}

#[test]
fn emulator_zeroes_past_the_shape() {
    let mut e = Emulator::new();
    let cfg = TileConfig::default()
        .with(0, 2, 8)
        .with(1, 2, 8)
        .with(2, 2, 8);
    e.configure(&cfg).unwrap();
    let src: Vec<u8> = (1..=64).collect();
    // Rows 0 and 1 of 8 bytes at stride 32: bytes 0..8 and 32..40.
    e.load::<1>(&src, 0, 32).unwrap();
    let t = e.tile_bytes(1);
    assert_eq!(&t[0][..8], &src[..8]);
    assert_eq!(&t[1][..8], &src[32..40]);
    assert!(t[0][8..].iter().all(|&x| x == 0) && t[2..].iter().flatten().all(|&x| x == 0));
    let mut dst = vec![0xaau8; 64];
    e.store::<1>(&mut dst, 4, 20).unwrap();
    assert_eq!(&dst[4..12], &src[..8]);
    assert_eq!(&dst[24..32], &src[32..40]);
    assert!(dst[..4]
        .iter()
        .chain(&dst[12..24])
        .chain(&dst[32..])
        .all(|&x| x == 0xaa));
    // A tdp writes C's rows and zeroes the rest of the register.
    e.load::<0>(&[0xffu8; 64], 0, 8).unwrap();
    e.load::<2>(&[0u8; 64], 0, 8).unwrap();
    e.dpbusd::<0, 1, 2>().unwrap();
    let t = e.tile_bytes(0);
    assert!(t[0][..8].iter().all(|&x| x == 0xff), "C + 0 keeps C");
    assert!(t[0][8..].iter().all(|&x| x == 0) && t[2..].iter().flatten().all(|&x| x == 0));
}

#[test]
fn emulator_faults_where_the_hardware_would() {
    let mut e = Emulator::new();
    let bad = |r: Result<(), TileFault>| match r {
        Err(TileFault::BadConfig(_)) => {}
        other => panic!("expected BadConfig, got {other:?}"),
    };
    bad(e.configure(&TileConfig::default().with(0, 17, 64)));
    bad(e.configure(&TileConfig::default().with(0, 16, 65)));
    bad(e.configure(&TileConfig::default().with(3, 4, 0)));
    bad(e.configure(&TileConfig::default().with(3, 0, 4)));
    assert!(e.config().is_none());
    // Nothing configured: every instruction faults (#UD).
    let mut buf = [0u8; 64];
    assert!(matches!(e.zero::<0>(), Err(TileFault::NotConfigured(_))));
    assert!(matches!(
        e.load::<0>(&buf, 0, 4),
        Err(TileFault::NotConfigured(_))
    ));
    assert!(matches!(
        e.dpbusd::<0, 1, 2>(),
        Err(TileFault::NotConfigured(_))
    ));
    let cfg = TileConfig::default()
        .with(0, 4, 16)
        .with(1, 4, 8)
        .with(2, 2, 16)
        .with(3, 3, 16);
    e.configure(&cfg).unwrap();
    // An unused tile.
    assert!(matches!(e.zero::<5>(), Err(TileFault::NotConfigured(_))));
    // Bounds: 4 rows of 16 bytes at stride 16 need 64 bytes from the offset.
    e.load::<0>(&buf, 0, 16).unwrap();
    assert!(matches!(
        e.load::<0>(&buf, 1, 16),
        Err(TileFault::Bounds(_))
    ));
    assert!(matches!(
        e.store::<0>(&mut buf[..63], 0, 16),
        Err(TileFault::Bounds(_))
    ));
    assert!(matches!(
        e.load::<0>(&buf, 0, usize::MAX),
        Err(TileFault::Bounds(_))
    ));
    // Shapes: C 4x16, A 4x8 (K = 2 dwords), B 2x16: fine; B with 3 rows: not.
    e.dpbusd::<0, 1, 2>().unwrap();
    e.dpbf16ps::<0, 1, 2>().unwrap();
    assert!(matches!(e.dpbusd::<0, 1, 3>(), Err(TileFault::Shape(_))));
    assert!(matches!(e.dpbusd::<2, 1, 0>(), Err(TileFault::Shape(_))));
    assert!(matches!(e.dpbusd::<0, 0, 2>(), Err(TileFault::Shape(_))));
    assert!(matches!(e.dpbf16ps::<1, 1, 2>(), Err(TileFault::Shape(_))));
    // Released: back to the init state.
    e.release();
    assert!(matches!(e.zero::<0>(), Err(TileFault::NotConfigured(_))));
    // The ldtilecfg bytes: palette 1, colsb at 16.., rows at 48...
    let b = cfg.to_bytes();
    assert_eq!((b[0], b[1]), (1, 0));
    assert_eq!(u16::from_le_bytes([b[16], b[17]]), 16);
    assert_eq!(u16::from_le_bytes([b[18], b[19]]), 8);
    assert_eq!(&b[48..52], &[4, 4, 2, 3]);
    assert!(b[2..16]
        .iter()
        .chain(&b[32..48])
        .chain(&b[56..])
        .all(|&x| x == 0));
}

/// Edge shapes (m, n, k) around the 16-row / 16-column / 64-byte (32-bf16) tiles and
/// the 32 x 32 blocks, m = 1, and larger ones.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 16, 64),
    (1, 17, 65),
    (1, 384, 384),
    (2, 3, 5),
    (15, 15, 63),
    (16, 16, 64),
    (17, 33, 129),
    (31, 31, 31),
    (32, 32, 32),
    (33, 48, 200),
    (40, 100, 7),
    (64, 64, 128),
    (65, 40, 300),
    (70, 1, 96),
    (96, 384, 384),
    (129, 160, 1536),
    // k = 0 (C is the epilogue of zeros) and n = 0.
    (5, 7, 0),
    (33, 40, 0),
    (3, 0, 4),
];

fn bytes(r: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| r.gen()).collect()
}

fn uni(r: &mut StdRng, len: usize, s: f32) -> Vec<f32> {
    (0..len).map(|_| r.gen_range(-s..s)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn amx_int8_emulated_equals_every_path_bitwise() {
    let mut r = rng(0xa31);
    let has_avx512 =
        e5embed_kernels::isa::Features::detected().contains(e5embed_kernels::isa::Features::AVX512);
    for &(m, n, k) in SHAPES {
        for isa in QIsa::available() {
            let kp = padded_k(k);
            let w = uni(&mut r, n * k, 1.0);
            let b = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
            let a = bytes(&mut r, m * kp);
            let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            let bias = uni(&mut r, n, 1.0);
            let res = uni(&mut r, m * n, 2.0);
            let what = format!("{} m={m} n={n} k={k}", b.kernel_name());

            let mut want_i = vec![0i32; m * n];
            let mut got_i = vec![1i32; m * n];
            gemm_u8s8_i32(&a, m, &b, &mut want_i).unwrap();
            gemm_u8s8_i32_amx_emulated(&a, m, &b, &mut got_i).unwrap();
            assert_eq!(got_i, want_i, "{what}: i32");

            let epis: [(&str, Epilogue); 4] = [
                ("none", Epilogue::None),
                ("bias", Epilogue::Bias(&bias)),
                ("gelu", Epilogue::BiasGelu(&bias)),
                (
                    "residual",
                    Epilogue::BiasResidual {
                        bias: &bias,
                        residual: &res,
                    },
                ),
            ];
            for (name, e) in epis {
                let mut got = vec![f32::NAN; m * n];
                let mut want = vec![0f32; m * n];
                gemm_u8s8_amx_emulated(&a, &sa, m, &b, &mut got, e).unwrap();
                gemm_u8s8(&a, &sa, m, &b, &mut want, e).unwrap();
                // GELU: the AMX epilogue is the AVX-512 vector one where AVX-512 is
                // (bitwise that of the AVX-512 VNNI path), else the scalar-lane one;
                // the scalar path's is f64 erf, the 256-bit paths' the AVX2 vector erf.
                let same_gelu = match isa.kind() {
                    QIsaKind::Avx512Vnni | QIsaKind::Amx => has_avx512,
                    _ => false,
                };
                let gelu_differs = name == "gelu" && !same_gelu;
                if gelu_differs {
                    assert_close(&format!("{what} {name}"), &got, &want, |i| {
                        GELU_ABS + GELU_REL * want[i].abs() as f64
                    });
                } else {
                    assert!(
                        bits(&got) == bits(&want),
                        "{what} {name}: not bitwise equal"
                    );
                }
            }
            // And against the scalar reference (bitwise but GELU).
            let mut want = vec![0f32; m * n];
            let mut got = vec![0f32; m * n];
            let e = Epilogue::BiasResidual {
                bias: &bias,
                residual: &res,
            };
            gemm_u8s8_reference(&a, &sa, m, &b, &mut want, e).unwrap();
            gemm_u8s8_amx_emulated(&a, &sa, m, &b, &mut got, e).unwrap();
            assert_bitwise(&format!("{what} vs reference"), &got, &want);
        }
    }
}

#[test]
fn amx_int8_emulated_unsigned_input_and_empty() {
    let mut r = rng(0xa32);
    let isa = QIsa::best();
    let (m, n, k) = (37, 70, 150);
    let w = uni(&mut r, n * k, 1.0);
    let b = QuantizedMatrix::quantize(isa, &w, n, k)
        .unwrap()
        .with_unsigned_input(0.17)
        .unwrap();
    let a = bytes(&mut r, m * padded_k(k));
    let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
    let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
    gemm_u8s8_amx_emulated(&a, &sa, m, &b, &mut got, Epilogue::None).unwrap();
    gemm_u8s8(&a, &sa, m, &b, &mut want, Epilogue::None).unwrap();
    assert_bitwise("unsigned input", &got, &want);
    // m = 0 and shape errors.
    gemm_u8s8_amx_emulated(&[], &[], 0, &b, &mut [], Epilogue::None).unwrap();
    assert!(gemm_u8s8_amx_emulated(&a[1..], &sa, m, &b, &mut got, Epilogue::None).is_err());
}

#[test]
fn amx_bf16_emulated_equals_the_order_model_bitwise_and_the_reference_within_bound() {
    let mut r = rng(0xb16);
    let isa = BIsa::scalar();
    for &(m, n, k) in SHAPES {
        let a = uni(&mut r, m * k, 2.0);
        let w = uni(&mut r, n * k, 1.0);
        let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
        let bias = uni(&mut r, n, 1.0);
        let res = uni(&mut r, m * n, 2.0);
        let what = format!("amx bf16 m={m} n={n} k={k}");
        let epis: [(&str, Epilogue); 4] = [
            ("none", Epilogue::None),
            ("bias", Epilogue::Bias(&bias)),
            ("gelu", Epilogue::BiasGelu(&bias)),
            (
                "residual",
                Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            ),
        ];
        for (name, e) in epis {
            let mut got = vec![f32::NAN; m * n];
            let mut model = vec![0f32; m * n];
            gemm_bf16_amx_emulated(&a, m, &b, &mut got, e).unwrap();
            gemm_bf16_amx_order_reference(&a, m, &w, n, k, &mut model, e).unwrap();
            if name == "gelu" {
                assert_close(&format!("{what} {name}"), &got, &model, |i| {
                    GELU_ABS + GELU_REL * model[i].abs() as f64
                });
            } else {
                assert_bitwise(&format!("{what} {name}"), &got, &model);
            }
        }
        // vs the vdpbf16ps-order reference: the same exact products summed in another
        // order, each sum one f32 rounding: |d| <= 2·kp·u·Σ|a·w| (u = 2^-24).
        let mut got = vec![0f32; m * n];
        let mut want = vec![0f32; m * n];
        gemm_bf16_amx_emulated(&a, m, &b, &mut got, Epilogue::None).unwrap();
        gemm_bf16_reference(&a, m, &w, n, k, &mut want, Epilogue::None).unwrap();
        let rb = |x: f32| e5embed_kernels::bgemm::bf16_to_f32(f32_to_bf16(x)) as f64;
        let kp = k.div_ceil(2) * 2;
        let u = 2f64.powi(-24);
        assert_close(&format!("{what} vs reference"), &got, &want, |idx| {
            let (i, j) = (idx / n, idx % n);
            let s: f64 = (0..k)
                .map(|q| (rb(a[i * k + q]) * rb(w[j * k + q])).abs())
                .sum();
            2.0 * kp as f64 * u * s
        });
        // And the path this CPU runs (vdpbf16ps / widening / scalar) is within it too.
        let best = BIsa::best();
        if best.kind() == BIsaKind::Avx512Bf16 {
            let bb = Bf16Matrix::from_f32(best, &w, n, k).unwrap();
            let mut fast = vec![0f32; m * n];
            gemm_bf16(&a, m, &bb, &mut fast, Epilogue::None).unwrap();
            assert_bitwise(&format!("{what} vdpbf16ps vs reference"), &fast, &want);
        }
    }
}

#[test]
fn amx_tokens_only_where_the_hardware_is() {
    let status = e5embed_kernels::amx::status();
    let q = QIsa::new(QIsaKind::Amx);
    let b = BIsa::new(BIsaKind::Amx);
    match status {
        e5embed_kernels::amx::AmxStatus::Available { int8, bf16 } => {
            assert_eq!(q.is_some(), int8);
            assert_eq!(b.is_some(), bf16);
        }
        _ => {
            assert!(q.is_none() && b.is_none(), "{status}");
            assert!(QIsa::from_name("amx").is_err());
            assert!(BIsa::from_name("amx").is_err());
            assert_ne!(QIsa::best().kind(), QIsaKind::Amx);
            assert_ne!(BIsa::best().kind(), BIsaKind::Amx);
        }
    }
    assert_eq!("amx".parse::<QIsaKind>().unwrap(), QIsaKind::Amx);
    assert_eq!("amx".parse::<BIsaKind>().unwrap(), BIsaKind::Amx);
    assert_eq!(QIsaKind::Amx.to_string(), "amx");
}

/// The hardware backend against the emulator, bit for bit: single instructions on
/// random tiles (int32 wrap, bf16 subnormals and ties included; NaN payloads aside, see
/// below), and the whole GEMMs.
/// Where AMX is not available, says so on stderr and checks nothing.
#[test]
fn amx_hardware_equals_emulator_bitwise() {
    #[cfg(target_arch = "x86_64")]
    {
        use e5embed_kernels::tiles::Hardware;
        let mut hw = match Hardware::new() {
            Ok(h) => h,
            Err(status) => {
                eprintln!(
                    "\n*** AMX HARDWARE TEST NOT RUN: {status}. Only the emulator was \
                     tested on this machine. ***\n"
                );
                return;
            }
        };
        eprintln!(
            "*** AMX hardware test RUNNING: {} ***",
            e5embed_kernels::amx::status()
        );
        let mut emu = Emulator::new();
        let mut r = rng(0x4a3);
        let cfg = TileConfig::default()
            .with(0, 16, 64)
            .with(1, 16, 64)
            .with(2, 16, 64)
            .with(3, 7, 20)
            .with(4, 7, 12)
            .with(5, 3, 20);
        hw.configure(&cfg).unwrap();
        emu.configure(&cfg).unwrap();
        let mut nan_payloads = 0usize;
        for round in 0..200 {
            let c = bytes(&mut r, 1024);
            let a = bytes(&mut r, 1024);
            let mut b = bytes(&mut r, 1024);
            if round % 2 == 1 {
                // bf16 with small exponents: subnormals, FTZ and ties happen.
                for x in b.chunks_exact_mut(2) {
                    x[1] &= 0x81;
                }
            }
            let mut outs = Vec::new();
            for unit in 0..2 {
                let mut o = vec![0u8; 1024];
                let mut o3 = vec![0u8; 7 * 20];
                macro_rules! go {
                    ($t:expr) => {{
                        let t = $t;
                        t.load::<0>(&c, 0, 64).unwrap();
                        t.load::<1>(&a, 0, 64).unwrap();
                        t.load::<2>(&b, 0, 64).unwrap();
                        t.load::<3>(&c, 0, 20).unwrap();
                        t.load::<4>(&a, 0, 12).unwrap();
                        t.load::<5>(&b, 0, 20).unwrap();
                        if round % 2 == 0 {
                            t.dpbusd::<0, 1, 2>().unwrap();
                            t.dpbusd::<3, 4, 5>().unwrap();
                        } else {
                            t.dpbf16ps::<0, 1, 2>().unwrap();
                            t.dpbf16ps::<3, 4, 5>().unwrap();
                        }
                        t.store::<0>(&mut o, 0, 64).unwrap();
                        t.store::<3>(&mut o3, 0, 20).unwrap();
                    }};
                }
                if unit == 0 {
                    go!(&mut hw)
                } else {
                    go!(&mut emu)
                }
                outs.push((o, o3));
            }
            // NaN payloads: the SDM's pseudo-code does not say which NaN a sum of two
            // NaN-carrying terms keeps, and Rust does not fix it for `f32 + f32`
            // (LLVM may swap the operands), so in the bf16 rounds any NaN matches any
            // NaN (counted and printed below); every other dword is compared bit for bit.
            let bf16 = round % 2 == 1;
            let dw =
                |v: &[u8], i: usize| u32::from_le_bytes(v[4 * i..4 * i + 4].try_into().unwrap());
            let nan = |x: u32| f32::from_bits(x).is_nan();
            let (h, e) = (&outs[0], &outs[1]);
            let mut first_diff = |x: &[u8], y: &[u8]| {
                (0..x.len() / 4).find(|&i| {
                    let (hv, ev) = (dw(x, i), dw(y, i));
                    if bf16 && hv != ev && nan(hv) && nan(ev) {
                        nan_payloads += 1;
                        return false;
                    }
                    hv != ev
                })
            };
            for (tile, x, y, cols) in [("tmm0", &h.0, &e.0, 16), ("tmm3", &h.1, &e.1, 5)] {
                if let Some(i) = first_diff(x, y) {
                    let (hv, ev) = (dw(x, i), dw(y, i));
                    let (hf, ef) = (f32::from_bits(hv), f32::from_bits(ev));
                    panic!(
                        "round {round} ({}): hardware != emulator at {tile}[{}][{}]: \
                         hardware {hv:#010x} ({hf:e}), emulator {ev:#010x} ({ef:e})",
                        if bf16 { "tdpbf16ps" } else { "tdpbusd" },
                        i / cols,
                        i % cols
                    );
                }
            }
        }
        hw.release();
        eprintln!(
            "AMX hardware = emulator on 200 rounds of single instructions (NaN-for-NaN with \
             another payload: {nan_payloads} dwords)"
        );

        // Whole GEMMs: the Amx-packed matrices on the hardware vs the emulator.
        let qisa = QIsa::new(QIsaKind::Amx);
        let bisa = BIsa::new(BIsaKind::Amx);
        for &(m, n, k) in SHAPES {
            let a8 = bytes(&mut r, m * padded_k(k));
            let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            let w = uni(&mut r, n * k, 1.0);
            let bias = uni(&mut r, n, 1.0);
            let e = Epilogue::BiasGelu(&bias);
            if let Some(q) = qisa {
                let b = QuantizedMatrix::quantize(q, &w, n, k).unwrap();
                let (mut h, mut s) = (vec![0f32; m * n], vec![0f32; m * n]);
                gemm_u8s8(&a8, &sa, m, &b, &mut h, e).unwrap();
                gemm_u8s8_amx_emulated(&a8, &sa, m, &b, &mut s, e).unwrap();
                assert_bitwise(&format!("int8 hw vs emu m={m} n={n} k={k}"), &h, &s);
            }
            if let Some(bi) = bisa {
                let a = uni(&mut r, m * k, 2.0);
                let b = Bf16Matrix::from_f32(bi, &w, n, k).unwrap();
                let (mut h, mut s) = (vec![0f32; m * n], vec![0f32; m * n]);
                gemm_bf16(&a, m, &b, &mut h, e).unwrap();
                gemm_bf16_amx_emulated(&a, m, &b, &mut s, e).unwrap();
                assert_bitwise(&format!("bf16 hw vs emu m={m} n={n} k={k}"), &h, &s);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!(
        "\n*** AMX HARDWARE TEST NOT RUN: {}. ***\n",
        e5embed_kernels::amx::status()
    );
}
