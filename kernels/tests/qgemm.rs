//! int8 GEMM (`qgemm`): integer-exact vs the scalar reference on every QIsa this CPU
//! has, saturation control on the AVX2 path, quantizer parity, quantization error
//! vs f32, bitwise row invariance, error paths.

mod common;

use common::{assert_close, rng, GELU_ABS, GELU_REL};
use e5embed_kernels::qgemm::{
    self, gemm_u8s8, gemm_u8s8_i32, gemm_u8s8_i32_reference, gemm_u8s8_reference, padded_k,
    quantize_rows, quantize_rows_reference, QIsa, QIsaKind, QuantizedMatrix,
};
use e5embed_kernels::{gemm_f32_reference, Epilogue, KernelError};
use rand::rngs::StdRng;
use rand::Rng;

/// Relative Frobenius error of the whole int8 GEMM (per-row activations, per-channel
/// weights) vs the f32 GEMM on Gaussian data, k = 384. Rounding noise model: step
/// `Δ ≈ 2.9σ / QMAX` per operand, noise `Δ/√12`: ≈ 0.66% per operand at QMAX 127,
/// ≈ 0.9% combined; at QMAX 64 (Avx2) the weight term doubles: ≈ 1.5%. Budgets
/// with margin:
const QERR_FULL: f64 = 0.0125;
const QERR_REDUCED: f64 = 0.02;

fn isas() -> Vec<QIsa> {
    let v = QIsa::available();
    println!(
        "QIsa available: {:?}",
        v.iter().map(|i| i.name()).collect::<Vec<_>>()
    );
    v
}

fn gauss(r: &mut StdRng, len: usize) -> Vec<f32> {
    // Box-Muller.
    (0..len)
        .map(|_| {
            let u1: f64 = r.gen_range(1e-12..1.0);
            let u2: f64 = r.gen_range(0.0..1.0);
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

fn bytes(r: &mut StdRng, len: usize) -> Vec<u8> {
    (0..len).map(|_| r.gen()).collect()
}

fn uni(r: &mut StdRng, len: usize, s: f32) -> Vec<f32> {
    (0..len).map(|_| r.gen_range(-s..s)).collect()
}

/// Independent i32 model: `Σ_k (byte − 128)·Wq` from the unpacked weights.
fn naive_i32(a: &[u8], m: usize, wq: &[i8], n: usize, k: usize) -> Vec<i32> {
    let kp = padded_k(k);
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|q| (a[i * kp + q] as i32 - 128) * wq[j * k + q] as i32)
                .sum();
        }
    }
    c
}

#[test]
fn tokens_and_names() {
    let av = isas();
    assert_eq!(av[0].kind(), QIsaKind::Scalar);
    assert_eq!(QIsa::best(), *av.last().unwrap());
    for i in &av {
        assert_eq!(QIsa::from_name(i.name()).unwrap(), *i);
        assert!(i.kernel_name().starts_with("gemm_u8s8_"));
    }
    // The AMX path is a known name, available only where amx::status() says so.
    match QIsa::from_name("amx") {
        Ok(q) => assert_eq!(q.kind(), QIsaKind::Amx),
        Err(e) => {
            assert!(matches!(e, KernelError::UnsupportedIsa(_)), "{e}");
            assert!(!e5embed_kernels::amx::status().is_available());
        }
    }
    assert!(matches!(
        QIsa::from_name("tmul"),
        Err(KernelError::UnknownIsa(_))
    ));
    assert_eq!(QIsa::from_name("").unwrap(), QIsa::best());
    #[cfg(target_arch = "x86_64")]
    {
        let has = |f: bool, k| assert_eq!(f, QIsa::new(k).is_some(), "{k:?}");
        has(
            std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("fma"),
            QIsaKind::Avx512Vnni,
        );
        has(
            std::arch::is_x86_feature_detected!("avxvnni")
                && std::arch::is_x86_feature_detected!("fma"),
            QIsaKind::AvxVnni,
        );
        assert!(QIsa::new(QIsaKind::NeonDot).is_none());
    }
    #[cfg(target_arch = "aarch64")]
    assert_eq!(
        QIsa::new(QIsaKind::NeonDot).is_some(),
        std::arch::is_aarch64_feature_detected!("dotprod"),
        "the sdot path exists exactly where the (emulated) CPU has dotprod"
    );
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(
            QIsa::new(QIsaKind::NeonI8mm).is_some(),
            std::arch::is_aarch64_feature_detected!("i8mm"),
            "the smmla path exists exactly where the (emulated) CPU has i8mm"
        );
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            assert_eq!(QIsa::best().kind(), QIsaKind::NeonI8mm, "smmla preferred");
        }
    }
    #[cfg(not(target_arch = "aarch64"))]
    assert!(QIsa::new(QIsaKind::NeonI8mm).is_none());
}

/// The `smmla` kernel (i8mm) against the `sdot` one (dotprod): the same i32 sums and the
/// same epilogue code, so bitwise equal for every epilogue, GELU included; on awkward
/// shapes (k = 4 mod 8: the last 8-byte group half padding; every row remainder) and
/// both input modes. Runs where the (emulated) CPU has both (`qemu-aarch64 -cpu max`).
#[test]
fn smmla_equals_sdot_bitwise() {
    let (Some(mm), Some(dot)) = (QIsa::new(QIsaKind::NeonI8mm), QIsa::new(QIsaKind::NeonDot))
    else {
        println!("no i8mm + dotprod here: nothing to compare");
        return;
    };
    let mut r = rng(18);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for &(n, k) in &[
        (12usize, 8usize),
        (13, 4),
        (25, 12),
        (24, 36),
        (50, 100),
        (384, 1536),
    ] {
        let w = gauss(&mut r, n * k);
        for unsigned in [false, true] {
            let (mut bm, mut bd) = (
                QuantizedMatrix::quantize(mm, &w, n, k).unwrap(),
                QuantizedMatrix::quantize(dot, &w, n, k).unwrap(),
            );
            if unsigned {
                bm = bm.with_unsigned_input(0.17).unwrap();
                bd = bd.with_unsigned_input(0.17).unwrap();
            }
            assert_eq!(
                bm.unpack_weights(),
                bd.unpack_weights(),
                "n={n} k={k}: weights"
            );
            let ms: &[usize] = if n * k > 100_000 {
                &[1, 9, 50]
            } else {
                &[1, 2, 3, 7, 8, 9, 15, 49]
            };
            for &m in ms {
                let what = format!("smmla vs sdot m={m} n={n} k={k} unsigned={unsigned}");
                let a = bytes(&mut r, m * padded_k(k));
                let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
                let bias = uni(&mut r, n, 1.0);
                let (mut im, mut id) = (vec![0i32; m * n], vec![1i32; m * n]);
                gemm_u8s8_i32(&a, m, &bm, &mut im).unwrap();
                gemm_u8s8_i32(&a, m, &bd, &mut id).unwrap();
                assert_eq!(im, id, "{what}: i32");
                for e in [Epilogue::None, Epilogue::BiasGelu(&bias)] {
                    let (mut cm, mut cd) = (vec![f32::NAN; m * n], vec![0f32; m * n]);
                    gemm_u8s8(&a, &sa, m, &bm, &mut cm, e).unwrap();
                    gemm_u8s8(&a, &sa, m, &bd, &mut cd, e).unwrap();
                    assert!(bits(&cm) == bits(&cd), "{what}: f32 not bitwise equal");
                }
            }
        }
    }
}

#[test]
fn quantize_rows_matches_reference_bitwise() {
    let mut r = rng(11);
    for &k in &[1usize, 3, 4, 5, 15, 16, 17, 33, 384, 1536] {
        for &m in &[0usize, 1, 2, 7, 17] {
            let kp = padded_k(k);
            let mut a = uni(&mut r, m * k, 3.0);
            if m > 1 {
                // A zero row, and a row with exact ties (x·inv = t + 0.5).
                a[k..2 * k].fill(0.0);
                for q in 0..k {
                    a[q] = [127.0, 0.5, -1.5, 2.5, -63.5][q % 5];
                }
            }
            let mut want = vec![0u8; m * kp];
            let mut ws = vec![0f32; m];
            quantize_rows_reference(&a, m, k, &mut want, &mut ws).unwrap();
            for i in 0..m {
                let row = &want[i * kp..(i + 1) * kp];
                assert!(row[k..].iter().all(|&b| b == 128), "pad bytes");
                assert!(
                    row.iter().all(|&b| b >= 1),
                    "byte 0 = Aq -128 is never used"
                );
                if ws[i] > 0.0 {
                    assert!(row.iter().any(|&b| b == 1 || b == 255), "max maps to ±127");
                } else {
                    assert!(row.iter().all(|&b| b == 128), "zero row");
                }
            }
            if m > 1 {
                // Ties round to even: 0.5 -> 0, -1.5 -> -2, 2.5 -> 2, -63.5 -> -64.
                let exp = [255u8, 128, 126, 130, 64];
                for q in 0..k.min(5) {
                    assert_eq!(want[q], exp[q], "tie at {q}");
                }
            }
            for isa in QIsa::available() {
                let mut got = vec![0u8; m * kp];
                let mut gs = vec![0f32; m];
                quantize_rows(isa, &a, m, k, &mut got, &mut gs).unwrap();
                assert_eq!(got, want, "{isa} m={m} k={k}");
                assert_eq!(
                    gs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    ws.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{isa} scales m={m} k={k}"
                );
            }
        }
    }
}

#[test]
fn weight_quantization_and_packing() {
    let mut r = rng(12);
    for isa in isas() {
        for &(n, k) in &[(1usize, 4usize), (7, 5), (33, 17), (40, 70)] {
            let mut w = uni(&mut r, n * k, 0.2);
            w[..k].fill(0.0); // a zero output channel
            let b = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
            let qmax = if isa.kind() == QIsaKind::Avx2 {
                64
            } else {
                127
            };
            assert_eq!(b.qmax(), qmax);
            assert_eq!(b.reduced_range(), qmax < 127);
            assert_eq!((b.n(), b.k(), b.k_padded()), (n, k, padded_k(k)));
            let wq = b.unpack_weights();
            let mut colsum = vec![0i32; n];
            for j in 0..n {
                let row = &w[j * k..(j + 1) * k];
                let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
                assert_eq!(b.scales()[j], amax / qmax as f32);
                for q in 0..k {
                    let want = if amax == 0.0 {
                        0
                    } else {
                        ((row[q] * (qmax as f32 / amax)).round_ties_even() as i32)
                            .clamp(-qmax, qmax)
                    };
                    assert_eq!(wq[j * k + q] as i32, want, "{isa} ({n},{k}) w[{j},{q}]");
                    colsum[j] += want;
                }
                if amax > 0.0 {
                    assert!(wq[j * k..(j + 1) * k]
                        .iter()
                        .any(|&x| (x as i32).abs() == qmax));
                }
            }
            assert_eq!(b.colsums(), colsum);
        }
    }
}

/// Every epilogue vs the reference: None / Bias / BiasResidual bitwise (same f32
/// arithmetic), BiasGelu within the GELU budget of the vector erf; i32 sums exact.
fn check_exact(isa: QIsa, m: usize, n: usize, k: usize, r: &mut StdRng) {
    let kp = padded_k(k);
    let w = gauss(r, n * k);
    let b = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
    // Any u8 is a valid input (not only quantize_rows output): full byte range.
    let a = bytes(r, m * kp);
    let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
    let bias = uni(r, n, 1.0);
    let res = uni(r, m * n, 2.0);
    let what = format!("{} m={m} n={n} k={k}", b.kernel_name());

    let mut ci = vec![0i32; m * n];
    let mut ri = vec![1i32; m * n];
    gemm_u8s8_i32(&a, m, &b, &mut ci).unwrap();
    gemm_u8s8_i32_reference(&a, m, &b, &mut ri).unwrap();
    assert_eq!(ci, ri, "{what}: i32");
    if m * n * k <= 1 << 22 {
        assert_eq!(
            ri,
            naive_i32(&a, m, &b.unpack_weights(), n, k),
            "{what}: reference"
        );
    }

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
        let mut c = vec![f32::NAN; m * n];
        let mut want = vec![0f32; m * n];
        gemm_u8s8(&a, &sa, m, &b, &mut c, e).unwrap();
        gemm_u8s8_reference(&a, &sa, m, &b, &mut want, e).unwrap();
        if name == "gelu" && isa.kind() != QIsaKind::Scalar {
            assert_close(&format!("{what} {name}"), &c, &want, |i| {
                GELU_ABS + GELU_REL * want[i].abs() as f64
            });
        } else {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(&c) == bits(&want), "{what} {name}: not bitwise equal");
        }
    }
}

#[test]
fn integer_exact_vs_reference_edge_shapes() {
    let mut r = rng(13);
    for isa in isas() {
        for &(n, k) in &[
            (1usize, 4usize),
            (7, 5),
            (17, 33),
            (33, 17),
            (65, 9),
            (5, 0),
            (0, 4),
        ] {
            for &m in &[
                0usize, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 17, 25, 33, 128, 200, 385,
            ] {
                check_exact(isa, m, n, k, &mut r);
            }
        }
    }
}

#[test]
fn integer_exact_vs_reference_model_shapes() {
    let mut r = rng(14);
    for isa in isas() {
        for &(n, k) in &[(384usize, 384usize), (1152, 384), (1536, 384), (384, 1536)] {
            // Trimmed product: every remainder class of a 12/6/4-row tile is hit by
            // the edge-shape test; here one skinny, one odd and one multi-tile m.
            for &m in &[1usize, 7, 33] {
                check_exact(isa, m, n, k, &mut r);
            }
        }
        check_exact(isa, 385, 384, 384, &mut r);
        check_exact(isa, 383, 64, 1536, &mut r);
    }
}

/// `sat16(a0·w0 + a1·w1)` pairs, then the exact sum: what `vpmaddubsw` +
/// `vpmaddwd` compute.
fn saturating_model(a: &[u8], m: usize, wq: &[i8], n: usize, k: usize, comp: &[i32]) -> Vec<i32> {
    let kp = padded_k(k);
    let mut c = vec![0i32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0i32;
            for q in (0..kp).step_by(2) {
                let p = |t: usize| {
                    if t < k {
                        a[i * kp + t] as i32 * wq[j * k + t] as i32
                    } else {
                        0
                    }
                };
                acc += (p(q) + p(q + 1)).clamp(-32768, 32767);
            }
            c[i * n + j] = acc - comp[j];
        }
    }
    c
}

#[test]
fn avx2_full_range_saturates_reduced_range_is_exact() {
    let Some(isa) = QIsa::new(QIsaKind::Avx2) else {
        println!("no AVX2: skipped");
        return;
    };
    let (m, n, k) = (5, 20, 64);
    let kp = padded_k(k);
    let mut r = rng(15);
    // Worst case: activations at +max (byte 255) and weights at ±127.
    let mut a = vec![255u8; m * kp];
    a[kp..2 * kp].copy_from_slice(&bytes(&mut r, kp));
    let wq_full: Vec<i8> = (0..n * k)
        .map(|i| if i % 3 == 0 { -127 } else { 127 })
        .collect();
    let ones = vec![1f32; n];

    // 1. Full range on the AVX2 kernel: 2·255·127 = 64770 > 32767, so it saturates.
    let full = qgemm::testing::avx2_full_range(isa, &wq_full, &ones, n, k).unwrap();
    let mut got = vec![0i32; m * n];
    let mut exact = vec![0i32; m * n];
    gemm_u8s8_i32(&a, m, &full, &mut got).unwrap();
    gemm_u8s8_i32_reference(&a, m, &full, &mut exact).unwrap();
    assert_ne!(got, exact, "full-range weights must saturate vpmaddubsw");
    let comp: Vec<i32> = full.colsums().iter().map(|s| 128 * s).collect();
    assert_eq!(
        got,
        saturating_model(&a, m, &wq_full, n, k, &comp),
        "the kernel is exactly the saturating model"
    );
    let worst = got
        .iter()
        .zip(&exact)
        .map(|(g, e)| (g - e).abs())
        .max()
        .unwrap();
    println!(
        "full range on avx2: worst |error| {worst} (of |exact| up to {})",
        255 * 127 * k
    );

    // 2. The public API refuses full range on Avx2, accepts |w| <= 64.
    assert!(QuantizedMatrix::from_quantized(isa, &wq_full, &ones, n, k).is_err());
    let wq_red: Vec<i8> = (0..n * k)
        .map(|i| if i % 3 == 0 { -64 } else { 64 })
        .collect();
    let red = QuantizedMatrix::from_quantized(isa, &wq_red, &ones, n, k).unwrap();
    // 2·255·64 = 32640 <= 32767: never saturates, for any u8 activations.
    gemm_u8s8_i32(&a, m, &red, &mut got).unwrap();
    gemm_u8s8_i32_reference(&a, m, &red, &mut exact).unwrap();
    assert_eq!(got, exact, "reduced range is exact");
    assert_eq!(got, naive_i32(&a, m, &wq_red, n, k));
    // And quantize() on Avx2 picks the reduced range itself.
    let w = gauss(&mut r, n * k);
    assert_eq!(QuantizedMatrix::quantize(isa, &w, n, k).unwrap().qmax(), 64);
    // The VNNI paths take full range exactly (no intermediate saturation).
    for vi in QIsa::available() {
        if matches!(vi.kind(), QIsaKind::AvxVnni | QIsaKind::Avx512Vnni) {
            let b = QuantizedMatrix::from_quantized(vi, &wq_full, &ones, n, k).unwrap();
            gemm_u8s8_i32(&a, m, &b, &mut got).unwrap();
            assert_eq!(got, naive_i32(&a, m, &wq_full, n, k), "{vi} full range");
        }
    }
}

#[test]
fn quantization_error_vs_f32_gemm() {
    let (m, n, k) = (64, 384, 384);
    let mut r = rng(16);
    let a = gauss(&mut r, m * k);
    let w: Vec<f32> = gauss(&mut r, n * k).iter().map(|x| x * 0.05).collect();
    let bias = uni(&mut r, n, 0.1);
    let mut want = vec![0f32; m * n];
    gemm_f32_reference(&a, m, &w, n, k, &mut want, Epilogue::Bias(&bias)).unwrap();
    let kp = padded_k(k);
    for isa in isas() {
        let b = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
        let mut aq = vec![0u8; m * kp];
        let mut sa = vec![0f32; m];
        quantize_rows(isa, &a, m, k, &mut aq, &mut sa).unwrap();
        let mut c = vec![0f32; m * n];
        gemm_u8s8(&aq, &sa, m, &b, &mut c, Epilogue::Bias(&bias)).unwrap();
        let (mut num, mut den) = (0f64, 0f64);
        for (x, y) in c.iter().zip(&want) {
            num += (*x as f64 - *y as f64).powi(2);
            den += (*y as f64).powi(2);
        }
        let rel = (num / den).sqrt();
        let budget = if b.reduced_range() {
            QERR_REDUCED
        } else {
            QERR_FULL
        };
        println!("{isa}: relative Frobenius error vs f32 {rel:.4} (budget {budget})");
        assert!(rel < budget, "{isa}: {rel} >= {budget}");
    }
}

#[test]
fn zero_rows_give_the_epilogue_of_zero() {
    let (m, n, k) = (3, 40, 24);
    let mut r = rng(17);
    let mut a = uni(&mut r, m * k, 1.0);
    a[k..2 * k].fill(0.0);
    let bias = uni(&mut r, n, 1.0);
    for isa in isas() {
        let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
        let mut aq = vec![0u8; m * padded_k(k)];
        let mut sa = vec![0f32; m];
        quantize_rows(isa, &a, m, k, &mut aq, &mut sa).unwrap();
        assert_eq!(sa[1], 0.0);
        let mut c = vec![0f32; m * n];
        gemm_u8s8(&aq, &sa, m, &b, &mut c, Epilogue::Bias(&bias)).unwrap();
        assert_eq!(&c[n..2 * n], &bias[..], "{isa}");
    }
}

#[test]
fn rows_are_bitwise_invariant_to_chunking() {
    let (m, n, k) = (41, 70, 52);
    let kp = padded_k(k);
    let mut r = rng(18);
    let a = bytes(&mut r, m * kp);
    let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
    let bias = uni(&mut r, n, 1.0);
    let res = uni(&mut r, m * n, 1.0);
    for isa in isas() {
        let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
        for gelu in [false, true] {
            let mut full = vec![0f32; m * n];
            let epi = |lo: usize, hi: usize| {
                if gelu {
                    Epilogue::BiasGelu(&bias)
                } else {
                    Epilogue::BiasResidual {
                        bias: &bias,
                        residual: &res[lo * n..hi * n],
                    }
                }
            };
            gemm_u8s8(&a, &sa, m, &b, &mut full, epi(0, m)).unwrap();
            for chunk in [1usize, 2, 5, 12, 13, 19, 40] {
                let mut c = vec![0f32; m * n];
                let mut lo = 0;
                while lo < m {
                    let hi = (lo + chunk).min(m);
                    gemm_u8s8(
                        &a[lo * kp..hi * kp],
                        &sa[lo..hi],
                        hi - lo,
                        &b,
                        &mut c[lo * n..hi * n],
                        epi(lo, hi),
                    )
                    .unwrap();
                    lo = hi;
                }
                let same = c.iter().zip(&full).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{isa} gelu={gelu} chunk={chunk}");
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let isa = QIsa::best();
    let (m, n, k) = (3, 8, 6);
    let kp = padded_k(k);
    assert_eq!(kp, 8);
    let shape = |r: Result<(), KernelError>| assert!(matches!(r, Err(KernelError::Shape(_))));
    let w = vec![0.5f32; n * k];
    assert!(QuantizedMatrix::quantize(isa, &w[1..], n, k).is_err());
    assert!(QuantizedMatrix::quantize(isa, &[f32::NAN; 4], 1, 4).is_err());
    assert!(QuantizedMatrix::quantize(isa, &[], 0, qgemm::QK_MAX + 1).is_err());
    assert!(QuantizedMatrix::quantize(isa, &[], usize::MAX, 2).is_err());
    assert!(QuantizedMatrix::from_quantized(isa, &[-128i8; 4], &[1.0], 1, 4).is_err());
    assert!(QuantizedMatrix::from_quantized(isa, &[1i8; 4], &[1.0, 2.0], 1, 4).is_err());
    let b = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
    let a = vec![0.0f32; m * k];
    let (mut aq, mut sa) = (vec![0u8; m * kp], vec![0f32; m]);
    shape(quantize_rows(isa, &a[1..], m, k, &mut aq, &mut sa));
    shape(quantize_rows(isa, &a, m, k, &mut aq[..m * k], &mut sa));
    shape(quantize_rows(isa, &a, m, k, &mut aq, &mut sa[1..]));
    shape(quantize_rows_reference(&a, m, k, &mut aq, &mut sa[1..]));
    quantize_rows(isa, &a, m, k, &mut aq, &mut sa).unwrap();
    let mut c = vec![0f32; m * n];
    let bias = vec![0f32; n];
    let res = vec![0f32; m * n];
    shape(gemm_u8s8(&aq[1..], &sa, m, &b, &mut c, Epilogue::None));
    shape(gemm_u8s8(&aq[..m * k], &sa, m, &b, &mut c, Epilogue::None));
    shape(gemm_u8s8(&aq, &sa[1..], m, &b, &mut c, Epilogue::None));
    shape(gemm_u8s8(&aq, &sa, m, &b, &mut c[1..], Epilogue::None));
    shape(gemm_u8s8(
        &aq,
        &sa,
        m,
        &b,
        &mut c,
        Epilogue::Bias(&bias[1..]),
    ));
    shape(gemm_u8s8(
        &aq,
        &sa,
        m,
        &b,
        &mut c,
        Epilogue::BiasGelu(&bias[1..]),
    ));
    shape(gemm_u8s8(
        &aq,
        &sa,
        m,
        &b,
        &mut c,
        Epilogue::BiasResidual {
            bias: &bias,
            residual: &res[1..],
        },
    ));
    shape(gemm_u8s8_reference(
        &aq,
        &sa,
        m,
        &b,
        &mut c[1..],
        Epilogue::None,
    ));
    let mut ci = vec![0i32; m * n];
    shape(gemm_u8s8_i32(&aq, m, &b, &mut ci[1..]));
    shape(gemm_u8s8_i32_reference(&aq[1..], m, &b, &mut ci));
    // m = 0 is a no-op; huge m overflows cleanly.
    gemm_u8s8(&[], &[], 0, &b, &mut [], Epilogue::None).unwrap();
    shape(gemm_u8s8(&aq, &sa, usize::MAX, &b, &mut c, Epilogue::None));
}

#[test]
fn fused_requantization_equals_gemm_then_quantize_rows() {
    let mut r = rng(19);
    for isa in isas() {
        for &(m, n, k) in &[
            (1usize, 7usize, 5usize),
            (13, 70, 52),
            (37, 384, 96),
            (9, 1536, 32),
        ] {
            let kp = padded_k(k);
            let np = padded_k(n);
            let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
            let mut a = bytes(&mut r, m * kp);
            let mut sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            // A zero input row: its output row is the epilogue of 0.
            a[..kp].fill(128);
            sa[0] = 0.0;
            let bias = uni(&mut r, n, 1.0);
            let res = uni(&mut r, m * n, 1.0);
            for e in [
                Epilogue::None,
                Epilogue::BiasGelu(&bias),
                Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            ] {
                let mut c = vec![0f32; m * n];
                gemm_u8s8(&a, &sa, m, &b, &mut c, e).unwrap();
                let (mut want, mut ws) = (vec![0u8; m * np], vec![0f32; m]);
                quantize_rows(isa, &c, m, n, &mut want, &mut ws).unwrap();
                let (mut got, mut gs) = (vec![7u8; m * np], vec![7f32; m]);
                qgemm::gemm_u8s8_quantized(&a, &sa, m, &b, e, &mut got, &mut gs).unwrap();
                assert_eq!(got, want, "{isa} m={m} n={n} k={k} {e:?}");
                assert_eq!(gs, ws, "{isa} m={m} n={n} k={k} scales");
            }
            let (mut got, mut gs) = (vec![0u8; m * np], vec![0f32; m]);
            let e = Epilogue::None;
            assert!(qgemm::gemm_u8s8_quantized(&a, &sa, m, &b, e, &mut got[1..], &mut gs).is_err());
            assert!(qgemm::gemm_u8s8_quantized(&a, &sa, m, &b, e, &mut got, &mut gs[1..]).is_err());
            assert!(qgemm::gemm_u8s8_quantized(&a[1..], &sa, m, &b, e, &mut got, &mut gs).is_err());
        }
    }
}

#[test]
fn column_ranges_equal_the_full_call() {
    let mut r = rng(20);
    for isa in isas() {
        for &(m, n, k) in &[(1usize, 100usize, 40usize), (13, 384, 64), (2, 33, 9)] {
            let kp = padded_k(k);
            let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
            let nr = b.panel_width();
            let a = bytes(&mut r, m * kp);
            let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            let bias = uni(&mut r, n, 1.0);
            let res = uni(&mut r, m * n, 1.0);
            for e in [
                Epilogue::None,
                Epilogue::BiasGelu(&bias),
                Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            ] {
                let mut full = vec![0f32; m * n];
                gemm_u8s8(&a, &sa, m, &b, &mut full, e).unwrap();
                // Two halves split on a panel boundary, and a middle range.
                let mid = (n / 2 / nr) * nr;
                let ranges = [0..mid, mid..n, nr.min(n)..(3 * nr).min(n), n..n];
                for cols in ranges {
                    let w = cols.len();
                    let mut blk = vec![f32::NAN; m * w];
                    qgemm::gemm_u8s8_cols(&a, &sa, m, &b, cols.clone(), &mut blk, e).unwrap();
                    for i in 0..m {
                        for (jj, j) in cols.clone().enumerate() {
                            assert_eq!(
                                blk[i * w + jj].to_bits(),
                                full[i * n + j].to_bits(),
                                "{isa} m={m} n={n} cols={cols:?} ({i},{j}) {e:?}"
                            );
                        }
                    }
                }
            }
            if nr > 1 {
                let mut blk = vec![0f32; m * n];
                let e = Epilogue::None;
                assert!(
                    qgemm::gemm_u8s8_cols(&a, &sa, m, &b, 1..n, &mut blk[..m * (n - 1)], e)
                        .is_err()
                );
            }
            let mut blk = vec![0f32; m * n];
            assert!(
                qgemm::gemm_u8s8_cols(&a, &sa, m, &b, 0..n + 1, &mut blk, Epilogue::None).is_err()
            );
            assert!(
                qgemm::gemm_u8s8_cols(&a, &sa, m, &b, 0..n, &mut blk[1..], Epilogue::None).is_err()
            );
        }
    }
}

/// `gemm_u8s8_par` (columns split for skinny m, rows otherwise, on a rayon pool, written
/// in place) is bitwise equal to `gemm_u8s8` on every path, for any thread count.
#[test]
fn parallel_call_equals_the_single_threaded_call() {
    let mut r = rng(21);
    for isa in isas() {
        for &(m, n, k) in &common::PAR_SHAPES {
            let kp = padded_k(k);
            let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
            let a = bytes(&mut r, m * kp);
            let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            let bias = uni(&mut r, n, 1.0);
            let res = uni(&mut r, m * n, 1.0);
            for e in [
                Epilogue::Bias(&bias),
                Epilogue::BiasGelu(&bias),
                Epilogue::BiasResidual {
                    bias: &bias,
                    residual: &res,
                },
            ] {
                let mut want = vec![f32::NAN; m * n];
                gemm_u8s8(&a, &sa, m, &b, &mut want, e).unwrap();
                for threads in [1usize, 2, 3, 7] {
                    let mut got = vec![f32::NAN; m * n];
                    common::pool(threads)
                        .install(|| qgemm::gemm_u8s8_par(&a, &sa, m, &b, &mut got, e, threads))
                        .unwrap();
                    let what = format!("{isa} m={m} n={n} k={k} threads={threads} {e:?}");
                    common::assert_bitwise(&what, &got, &want);
                }
            }
            let mut short = vec![0f32; m * n - 1];
            let e = Epilogue::None;
            assert!(qgemm::gemm_u8s8_par(&a, &sa, m, &b, &mut short, e, 2).is_err());
        }
    }
}

/// Power-of-two and arbitrary positive multipliers (SmoothQuant factors' inverses).
fn muls(r: &mut StdRng, k: usize) -> Vec<f32> {
    (0..k)
        .map(|q| match q % 3 {
            0 => 2f32.powi(r.gen_range(-6..7)),
            1 => r.gen_range(0.01..20.0),
            _ => 1.0,
        })
        .collect()
}

#[test]
fn quantize_rows_smoothed_matches_reference_bitwise() {
    let mut r = rng(31);
    for &k in &[1usize, 3, 4, 5, 15, 16, 17, 33, 384, 1536] {
        for &m in &[0usize, 1, 2, 7, 17] {
            let kp = padded_k(k);
            let mut a = uni(&mut r, m * k, 3.0);
            if m > 1 {
                a[k..2 * k].fill(0.0); // a zero row
            }
            let mul = muls(&mut r, k);
            let mut want = vec![0u8; m * kp];
            let mut ws = vec![0f32; m];
            qgemm::quantize_rows_smoothed_reference(&a, m, k, &mul, &mut want, &mut ws).unwrap();
            // The reference is quantize_rows of the column-scaled rows.
            let scaled: Vec<f32> = a
                .iter()
                .enumerate()
                .map(|(i, &x)| x * mul[i % k.max(1)])
                .collect();
            let (mut plain, mut ps) = (vec![0u8; m * kp], vec![0f32; m]);
            quantize_rows_reference(&scaled, m, k, &mut plain, &mut ps).unwrap();
            assert_eq!(want, plain, "m={m} k={k}");
            assert_eq!(ws, ps, "m={m} k={k}");
            for isa in QIsa::available() {
                let mut got = vec![0u8; m * kp];
                let mut gs = vec![0f32; m];
                qgemm::quantize_rows_smoothed(isa, &a, m, k, &mul, &mut got, &mut gs).unwrap();
                assert_eq!(got, want, "{isa} m={m} k={k}");
                assert_eq!(
                    gs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    ws.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "{isa} scales m={m} k={k}"
                );
                // Through a matrix carrying the multipliers.
                let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, 3 * k), 3, k)
                    .unwrap()
                    .with_input_mul(mul.clone())
                    .unwrap();
                assert_eq!(b.input_mul(), Some(&mul[..]));
                let (mut got2, mut gs2) = (vec![0u8; m * kp], vec![0f32; m]);
                b.quantize_input(&a, m, &mut got2, &mut gs2).unwrap();
                assert_eq!(got2, want, "{isa} quantize_input m={m} k={k}");
                assert_eq!(gs2, ws, "{isa} quantize_input m={m} k={k}");
            }
        }
    }
}

#[test]
fn smoothing_multipliers_are_checked() {
    let mut r = rng(32);
    let (m, k) = (3usize, 10usize);
    let kp = padded_k(k);
    let a = uni(&mut r, m * k, 1.0);
    let (mut out, mut s) = (vec![0u8; m * kp], vec![0f32; m]);
    for isa in isas() {
        let good = vec![1.0f32; k];
        for bad in [
            vec![1.0f32; k - 1],
            vec![1.0f32; k + 1],
            [vec![1.0f32; k - 1], vec![0.0]].concat(),
            [vec![1.0f32; k - 1], vec![-2.0]].concat(),
            [vec![f32::NAN], vec![1.0f32; k - 1]].concat(),
            [vec![f32::INFINITY], vec![1.0f32; k - 1]].concat(),
        ] {
            let e = qgemm::quantize_rows_smoothed(isa, &a, m, k, &bad, &mut out, &mut s);
            assert!(matches!(e, Err(KernelError::Shape(_))), "{isa} {bad:?}");
            let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, 2 * k), 2, k).unwrap();
            assert!(b.with_input_mul(bad).is_err());
        }
        // Operand shapes are still checked with a valid multiplier.
        let e = qgemm::quantize_rows_smoothed(isa, &a[1..], m, k, &good, &mut out, &mut s);
        assert!(e.is_err());
        let e = qgemm::quantize_rows_smoothed(isa, &a, m, k, &good, &mut out[1..], &mut s);
        assert!(e.is_err());
    }
}

#[test]
fn fused_requantization_for_a_smoothed_next_matrix() {
    let mut r = rng(33);
    for isa in isas() {
        for &(m, n, k) in &[(1usize, 7usize, 5usize), (13, 70, 52), (37, 384, 96)] {
            let kp = padded_k(k);
            let np = padded_k(n);
            let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
            let mul = muls(&mut r, n);
            let next = QuantizedMatrix::quantize(isa, &gauss(&mut r, 5 * n), 5, n)
                .unwrap()
                .with_input_mul(mul.clone())
                .unwrap();
            let plain_next = QuantizedMatrix::quantize(isa, &gauss(&mut r, 5 * n), 5, n).unwrap();
            let a = bytes(&mut r, m * kp);
            let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            let bias = uni(&mut r, n, 1.0);
            let e = Epilogue::BiasGelu(&bias);
            let mut c = vec![0f32; m * n];
            gemm_u8s8(&a, &sa, m, &b, &mut c, e).unwrap();
            for nx in [&next, &plain_next] {
                let (mut want, mut ws) = (vec![0u8; m * np], vec![0f32; m]);
                nx.quantize_input(&c, m, &mut want, &mut ws).unwrap();
                let (mut got, mut gs) = (vec![7u8; m * np], vec![7f32; m]);
                qgemm::gemm_u8s8_quantized_for(&a, &sa, m, &b, e, nx, &mut got, &mut gs).unwrap();
                assert_eq!(got, want, "{isa} m={m} n={n} k={k}");
                assert_eq!(gs, ws, "{isa} m={m} n={n} k={k} scales");
            }
            // The next matrix must take n inputs.
            let wrong =
                QuantizedMatrix::quantize(isa, &gauss(&mut r, 5 * (n + 1)), 5, n + 1).unwrap();
            let (mut got, mut gs) = (vec![0u8; m * np], vec![0f32; m]);
            let res = qgemm::gemm_u8s8_quantized_for(&a, &sa, m, &b, e, &wrong, &mut got, &mut gs);
            assert!(res.is_err());
        }
    }
}

#[test]
fn unsigned_input_mode_matches_reference_on_every_path() {
    let mut r = rng(34);
    for &k in &[1usize, 3, 4, 5, 15, 16, 17, 33, 384, 1536] {
        for &m in &[0usize, 1, 2, 7, 17] {
            let kp = padded_k(k);
            let n = 37;
            // GELU-like one-sided inputs in [-0.17, 4], a zero row and a row at -offset.
            let mut a: Vec<f32> = (0..m * k).map(|_| r.gen_range(-0.17f32..4.0)).collect();
            if m > 1 {
                a[..k].fill(0.0);
                a[k..2 * k].fill(-0.17);
            }
            for mul in [None, Some(muls(&mut r, k))] {
                let (mut want, mut ws) = (vec![0u8; m * kp], vec![0f32; m]);
                let md = mul.as_deref();
                qgemm::quantize_input_reference(&a, m, k, md, Some(0.17), &mut want, &mut ws)
                    .unwrap();
                for i in 0..m {
                    let row = &want[i * kp..(i + 1) * kp];
                    assert!(
                        row[k..].iter().all(|&b| b == 0),
                        "pad bytes are the quantized 0"
                    );
                    if ws[i] > 0.0 {
                        assert!(row[..k].contains(&255), "max maps to 255");
                    }
                }
                if m > 1 && mul.is_none() {
                    // x = 0 -> t = 0.17 (nonzero); x = -0.17 -> t = 0: a zero row.
                    assert!(ws[0] > 0.0);
                    assert_eq!(ws[1], 0.0);
                    assert!(want[kp..2 * kp].iter().all(|&b| b == 0));
                }
                for isa in QIsa::available() {
                    let w = gauss(&mut r, n * k);
                    let mut b = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
                    let colsum = b.colsums();
                    if let Some(mul) = &mul {
                        b = b.with_input_mul(mul.clone()).unwrap();
                    }
                    let b = b.with_unsigned_input(0.17).unwrap();
                    assert_eq!(b.input_offset(), Some(0.17));
                    assert_eq!(b.colsums(), colsum, "colsums survive comp = 0");
                    let corr = b.offset_correction();
                    for j in 0..n {
                        assert_eq!(corr[j], 0.17 * (b.scales()[j] * colsum[j] as f32));
                    }
                    let (mut got, mut gs) = (vec![9u8; m * kp], vec![9f32; m]);
                    b.quantize_input(&a, m, &mut got, &mut gs).unwrap();
                    assert_eq!(got, want, "{isa} m={m} k={k}");
                    assert_eq!(
                        gs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        ws.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "{isa} scales m={m} k={k}"
                    );
                    // The GEMM on unsigned bytes: no compensation, integer-exact.
                    let (mut ci, mut cr) = (vec![0i32; m * n], vec![0i32; m * n]);
                    gemm_u8s8_i32(&got, m, &b, &mut ci).unwrap();
                    gemm_u8s8_i32_reference(&got, m, &b, &mut cr).unwrap();
                    assert_eq!(ci, cr, "{isa} m={m} k={k}");
                    let wq = b.unpack_weights();
                    for i in 0..m.min(3) {
                        for j in 0..n {
                            let dot: i32 = (0..k)
                                .map(|q| got[i * kp + q] as i32 * wq[j * k + q] as i32)
                                .sum();
                            assert_eq!(ci[i * n + j], dot, "{isa} plain u8 dot");
                        }
                    }
                    // Dequantized: ≈ (A·diag(mul) + 0.17) · Ŵᵀ; minus the correction ≈ A·diag(mul)·Ŵᵀ.
                    let bias = uni(&mut r, n, 1.0);
                    let mut c = vec![0f32; m * n];
                    gemm_u8s8(&got, &gs, m, &b, &mut c, Epilogue::Bias(&bias)).unwrap();
                    let mut cref = vec![0f32; m * n];
                    gemm_u8s8_reference(&got, &gs, m, &b, &mut cref, Epilogue::Bias(&bias))
                        .unwrap();
                    assert_eq!(c, cref, "{isa} epilogue m={m} k={k}");
                    // (With multipliers the bound -0.17 would apply to x · mul, not x.)
                    if k >= 16 && m > 2 && mul.is_none() {
                        let wd: Vec<f32> = (0..n * k)
                            .map(|x| wq[x] as f32 * b.scales()[x / k])
                            .collect();
                        let am: Vec<f32> = a
                            .iter()
                            .enumerate()
                            .map(|(x, &v)| v * mul.as_ref().map_or(1.0, |c| c[x % k]))
                            .collect();
                        let mut f = vec![0f32; m * n];
                        gemm_f32_reference(&am, m, &wd, n, k, &mut f, Epilogue::None).unwrap();
                        for i in 2..m {
                            for j in 0..n {
                                let got = c[i * n + j] - bias[j] - corr[j];
                                let scale: f32 = (0..k)
                                    .map(|q| (am[i * k + q] + 0.17).abs() * wd[j * k + q].abs())
                                    .sum();
                                assert!(
                                    (got - f[i * n + j]).abs() <= 0.01 * scale + 1e-4,
                                    "{isa} dequantized ({i}, {j}): {got} vs {}",
                                    f[i * n + j]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn fused_requantization_for_an_unsigned_next_matrix_and_bad_offsets() {
    let mut r = rng(35);
    for isa in isas() {
        for &(m, n, k) in &[(1usize, 7usize, 5usize), (13, 70, 52), (37, 384, 96)] {
            let kp = padded_k(k);
            let np = padded_k(n);
            let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, n * k), n, k).unwrap();
            let next = QuantizedMatrix::quantize(isa, &gauss(&mut r, 5 * n), 5, n)
                .unwrap()
                .with_unsigned_input(0.17)
                .unwrap();
            let a = bytes(&mut r, m * kp);
            let sa: Vec<f32> = (0..m).map(|_| r.gen_range(0.0..0.05)).collect();
            let bias = uni(&mut r, n, 1.0);
            let e = Epilogue::BiasGelu(&bias);
            let mut c = vec![0f32; m * n];
            gemm_u8s8(&a, &sa, m, &b, &mut c, e).unwrap();
            let (mut want, mut ws) = (vec![0u8; m * np], vec![0f32; m]);
            next.quantize_input(&c, m, &mut want, &mut ws).unwrap();
            let (mut got, mut gs) = (vec![7u8; m * np], vec![7f32; m]);
            qgemm::gemm_u8s8_quantized_for(&a, &sa, m, &b, e, &next, &mut got, &mut gs).unwrap();
            assert_eq!(got, want, "{isa} m={m} n={n} k={k}");
            assert_eq!(gs, ws, "{isa} m={m} n={n} k={k} scales");
        }
        let b = QuantizedMatrix::quantize(isa, &gauss(&mut r, 4 * 8), 4, 8).unwrap();
        for bad in [-0.1f32, f32::NAN, f32::INFINITY, -0.0 - 1e-30] {
            assert!(b.clone().with_unsigned_input(bad).is_err(), "{bad}");
        }
        assert!(b.clone().with_unsigned_input(0.0).is_ok());
        let (mut o, mut s) = (vec![0u8; 8], vec![0f32; 1]);
        assert!(
            qgemm::quantize_input_reference(&[0.0; 8], 1, 8, None, Some(-1.0), &mut o, &mut s)
                .is_err()
        );
    }
}

/// int8 weights saved (`packed_bytes`, `packed_extras`) and mapped back (`from_packed`) are
/// the same matrix, plain and with SmoothQuant multipliers and the unsigned input mode: the
/// same bytes and vectors, bitwise the same quantized input and GEMM, on every int8 path;
/// a short range or extras of the wrong length are refused.
#[test]
fn from_packed_mapped_bytes_is_bitwise_the_packed_matrix() {
    use e5embed_kernels::mapped::MappedF32;
    let mut r = common::rng(73);
    for isa in isas() {
        for (n, k) in [(50, 70), (384, 1536)] {
            let w = gauss(&mut r, n * k);
            let plain = QuantizedMatrix::quantize(isa, &w, n, k).unwrap();
            let modes = [
                plain.clone(),
                plain
                    .clone()
                    .with_input_mul(muls(&mut r, k))
                    .unwrap()
                    .with_unsigned_input(0.17)
                    .unwrap(),
            ];
            for b in modes {
                let bytes = b.packed_bytes();
                let map = common::mapped(bytes, 192);
                let m = MappedF32::new(&map, 192, bytes.len() / 4, 64).unwrap();
                let c = QuantizedMatrix::from_packed(isa, n, k, m, b.packed_extras()).unwrap();
                let what = format!("{isa:?} {n}x{k} {:?}", b.input_offset());
                assert_eq!(c.packed_bytes(), bytes, "{what}");
                assert_eq!(c.packed_extras(), b.packed_extras(), "{what}");
                assert_eq!(c.unpack_weights(), b.unpack_weights(), "{what}");
                assert_eq!(c.offset_correction(), b.offset_correction(), "{what}");
                let rows = 11;
                let a = uni(&mut r, rows * k, 2.0);
                let run = |q: &QuantizedMatrix| {
                    let kp = padded_k(k);
                    let (mut aq, mut sc) = (vec![0u8; rows * kp], vec![0f32; rows]);
                    q.quantize_input(&a, rows, &mut aq, &mut sc).unwrap();
                    let mut out = vec![0f32; rows * n];
                    gemm_u8s8(&aq, &sc, rows, q, &mut out, Epilogue::None).unwrap();
                    (aq, out)
                };
                let (wa, want) = run(&b);
                let (ga, got) = run(&c);
                assert_eq!(ga, wa, "{what}: quantized input");
                common::assert_bitwise(&what, &got, &want);
                let short = MappedF32::new(&map, 192, bytes.len() / 4 - 1, 64).unwrap();
                assert!(QuantizedMatrix::from_packed(isa, n, k, short, b.packed_extras()).is_err());
                let m = MappedF32::new(&map, 192, bytes.len() / 4, 64).unwrap();
                let mut bad = b.packed_extras();
                bad.scales.pop();
                assert!(QuantizedMatrix::from_packed(isa, n, k, m.clone(), bad).is_err());
                let mut bad = b.packed_extras();
                bad.input_mul = Some(vec![0.0; k]);
                assert!(QuantizedMatrix::from_packed(isa, n, k, m, bad).is_err());
            }
        }
    }
}
