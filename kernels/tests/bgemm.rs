//! bf16 GEMM (`e5embed_kernels::bgemm`): the conversion bit for bit (vs an
//! independent bit-level model and vs `vcvtne2ps2bf16`), the `vdpbf16ps` semantics
//! the reference models (probed on the hardware), the kernels **bitwise** vs the
//! scalar reference (GELU within the GELU budget), vs the f32 GEMM within the bf16
//! rounding bound, row invariance, column ranges, and the error paths.
//!
//! Every test loops over the paths the CPU has (`BIsa::available()`), so under qemu-aarch64
//! `-cpu max` the `bfmmla` (NeonBf16) and widening (NeonWiden) paths run, and under
//! `-cpu cortex-a76` the widening one (tools/test-aarch64).
//!
//! Budgets:
//! - kernel vs `gemm_bf16_reference`: **bitwise** (both accumulate in f32 in the
//!   hardware's order and rounding), except BiasGelu: `GELU_ABS + GELU_REL·|ref|`.
//! - NeonBf16 (`bfmmla`: round to odd, each pair's products summed first): **bitwise** vs
//!   the scalar model of its own arithmetic (`gemm_bf16_bfmmla_order_reference`; GELU
//!   within its budget), and vs `gemm_bf16_reference` within
//!   `(2·kp + 2)·2^-24·1.01·Σ|ã·w̃| + kp·2^-126` (both round the same bf16 inputs; each of
//!   the `kp` roundings of the reference errs by at most half an f32 ulp of the partial
//!   sum, each of `bfmmla`'s `kp/2` pair sums and `kp/2` additions by at most one; flushed
//!   products by at most 2^-126 each) plus both epilogues' roundings ([`mmla_bound`]).
//!   The model itself is held to hand-computed values on every CPU.
//! - NeonWiden / Avx512Widen: **bitwise** the f32 GEMM (NEON / AVX-512) on the weights
//!   rounded to bf16, every epilogue.
//! - vs the f32 GEMM: inputs rounded to 8 significant bits (unit roundoff
//!   `U = 2^-8`): `|ã·w̃ − a·w| <= (2U + U²)·|a·w|`; plus the f32 accumulation of
//!   both (`kp·2^-24` and `GEMM_F32_REL·sqrt(k)`, times `Σ|a·w|`) and the epilogue
//!   roundings: see [`bf16_bound`].

mod common;

use common::{assert_close, rng, uniform, EPI_REL, GELU_ABS, GELU_LIPSCHITZ, GELU_REL};
use e5embed_kernels::bgemm::testing::{dot_bfmmla_bits, gemm_bf16_bfmmla_order_reference};
use e5embed_kernels::bgemm::{
    bf16_to_f32, convert_rows, f32_to_bf16, gemm_bf16, gemm_bf16_cols, gemm_bf16_reference,
    gemm_bf16_reference_bits, padded_k, BIsa, BIsaKind, Bf16Matrix,
};
use e5embed_kernels::gemm::{gemm_f32, PackedMatrix};
use e5embed_kernels::{Epilogue, Isa, KernelError};
use rand::Rng;

/// Unit roundoff of bf16 (8 significant bits, round to nearest).
const U_BF16: f64 = 1.0 / 256.0;
/// f32 GEMM relative budget per sqrt(k) (as in tests/gemm.rs).
const GEMM_F32_REL: f64 = common::GEMM_F32_REL;

/// Independent bit-level model of `vcvtne2ps2bf16` (written from the SDM text, not
/// from the library's integer trick): keep the top 16 bits, round the dropped 16
/// bits to nearest with ties to the even kept value; subnormals -> signed zero; NaN
/// -> quiet, truncated.
fn bf16_model(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = (b >> 16) as u16 & 0x8000;
    let exp = (b >> 23) & 0xff;
    let man = b & 0x7f_ffff;
    if exp == 0 {
        return sign;
    }
    if exp == 0xff {
        return if man != 0 {
            (b >> 16) as u16 | 0x0040
        } else {
            (b >> 16) as u16
        };
    }
    let hi = (b >> 16) as u16;
    let dropped = b & 0xffff;
    let up = dropped > 0x8000 || (dropped == 0x8000 && hi & 1 == 1);
    // A carry out of the mantissa bumps the exponent (0x7f7f + 1 = 0x7f80 = inf).
    if up {
        hi + 1
    } else {
        hi
    }
}

/// Bit patterns covering every sign/exponent/top-mantissa combination with the
/// low 16 bits at the rounding-relevant values (0, 1, just below/at/above the tie,
/// all ones), plus the special values and random patterns.
fn patterns() -> Vec<f32> {
    let mut v = Vec::new();
    for hi in 0..=0xffffu32 {
        for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
            v.push(f32::from_bits(hi << 16 | lo));
        }
    }
    let mut r = rng(7);
    for _ in 0..200_000 {
        v.push(f32::from_bits(r.gen()));
    }
    v.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::from_bits(0x8000_0001),
        1.0,
        -1.0,
    ]);
    v
}

#[test]
fn f32_to_bf16_matches_bit_model() {
    for x in patterns() {
        assert_eq!(
            f32_to_bf16(x),
            bf16_model(x),
            "x = {x:e} ({:#010x})",
            x.to_bits()
        );
    }
    // Named cases: ties to even, overflow to inf, subnormals, NaN quieting.
    let cases: [(u32, u16); 12] = [
        (0x3f80_8000, 0x3f80), // tie, even kept
        (0x3f81_8000, 0x3f82), // tie, odd -> up
        (0x3f80_8001, 0x3f81), // above the tie
        (0x3f80_7fff, 0x3f80), // below the tie
        (0x7f7f_ffff, 0x7f80), // f32::MAX rounds to +inf
        (0xff7f_ffff, 0xff80), // f32::MIN to -inf
        (0x7f80_0000, 0x7f80), // +inf
        (0x0040_0000, 0x0000), // subnormal -> +0
        (0x8040_0000, 0x8000), // -subnormal -> -0
        (0x007f_ffff, 0x0000), // largest subnormal -> 0 (not min normal)
        (0x7f80_0001, 0x7fc0), // signalling NaN -> quiet
        (0xffc1_2345, 0xffc1), // NaN truncated, sign kept
    ];
    for (x, want) in cases {
        assert_eq!(f32_to_bf16(f32::from_bits(x)), want, "{x:#010x}");
    }
    // bf16 -> f32 -> bf16 is the identity on non-NaN, non-subnormal patterns.
    for h in 0..=0xffffu16 {
        let f = bf16_to_f32(h);
        if !f.is_nan() && !f.is_subnormal() {
            assert_eq!(f32_to_bf16(f), h);
        }
    }
}

#[test]
fn convert_rows_bit_exact_on_every_bisa() {
    let xs = patterns();
    for isa in BIsa::available() {
        // Row lengths hitting the 32-wide body, the masked tail and odd k.
        for k in [1usize, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 384] {
            let m = 7;
            let a: Vec<f32> = xs
                .iter()
                .cycle()
                .skip(k * 13)
                .take(m * k)
                .copied()
                .collect();
            let kp = padded_k(k);
            let mut out = vec![0xdead; m * kp];
            convert_rows(isa, &a, m, k, &mut out).unwrap();
            for i in 0..m {
                for q in 0..kp {
                    let want = if q < k { f32_to_bf16(a[i * k + q]) } else { 0 };
                    assert_eq!(out[i * kp + q], want, "{isa} k={k} row {i} col {q}");
                }
            }
        }
        // Every pattern once, as one long row.
        let k = xs.len();
        let mut out = vec![0u16; padded_k(k)];
        convert_rows(isa, &xs, 1, k, &mut out).unwrap();
        for (q, &x) in xs.iter().enumerate() {
            assert_eq!(
                out[q],
                f32_to_bf16(x),
                "{isa} {x:e} ({:#010x})",
                x.to_bits()
            );
        }
    }
}

/// `bf16(a)·w` for 1 x 1 x k through every BIsa, with weights given as bits.
fn dot_all(a: &[f32], w: &[u16]) -> Vec<(BIsa, f32)> {
    let k = a.len();
    let mut want = [0f32];
    gemm_bf16_reference_bits(a, 1, w, 1, k, &mut want, Epilogue::None).unwrap();
    let mut out = vec![(BIsa::scalar(), want[0])];
    for isa in dp_isas() {
        let b = Bf16Matrix::from_bf16_bits(isa, w, 1, k).unwrap();
        let mut c = [f32::NAN];
        gemm_bf16(a, 1, &b, &mut c, Epilogue::None).unwrap();
        out.push((isa, c[0]));
    }
    out
}

/// The paths with `vdpbf16ps` semantics (A rounded to bf16, bitwise the reference):
/// Scalar, Avx512Bf16; not the widening paths (f32 A), nor `bfmmla` (its own rounding,
/// tested against its model below), nor AMX (`tdpbf16ps` accumulates each K step in two
/// chains: bitwise its own order model and the tile emulator, kernels/tests/amx_tiles.rs;
/// within the bf16 bound of f32 here).
fn dp_isas() -> Vec<BIsa> {
    BIsa::available()
        .into_iter()
        .filter(|b| {
            !matches!(
                b.kind(),
                BIsaKind::Avx512Widen | BIsaKind::NeonWiden | BIsaKind::NeonBf16 | BIsaKind::Amx
            )
        })
        .collect()
}

fn bf(x: f32) -> u16 {
    f32_to_bf16(x)
}

/// The accumulation semantics of `vdpbf16ps` the reference models, probed on the
/// hardware: per pair the odd element is added first, each add rounded (RNE)
/// separately. `a = [e, o]` (exactly representable in bf16), `w = [1, 1]`-like.
#[test]
fn dot_semantics_order_and_rounding() {
    let t = 2f32.powi(-24);
    // 1 + x, then two tiny products: 1·1 + 1.5·2^-24 (even) + 2^-24 (odd).
    // Odd first: 1 + 2^-24 = 1 (tie, even), + 1.5·2^-24 -> 1 + 2^-23.
    // (Even first would give 1 + 2^-22; a fused sum 1 + 2^-23 + 2^-25 -> 1 + 2^-23
    // too, so the next case separates the two.)
    let k1 = [1.0f32, 0.0, 1.5 * t, t];
    let w1 = [bf(1.0), bf(1.0), bf(1.0), bf(1.0)];
    // a = [1, 0 | 2^-24, 1.5·2^-24]: odd first: 1 + 1.5·2^-24 -> 1 + 2^-23, then
    // + 2^-24 = tie -> 1 + 2^-22 (even). Fused: 1 + 2.5·2^-24 -> 1 + 2^-23.
    let k2 = [1.0f32, 0.0, t, 1.5 * t];
    // Two separate roundings: 1 + 2^-24 + 2^-24 = 1 (fused would be 1 + 2^-23).
    let k3 = [1.0f32, 0.0, t, t];
    for (a, want) in [
        (&k1, 1.0 + 2f32.powi(-23)),
        (&k2, 1.0 + 2f32.powi(-22)),
        (&k3, 1.0),
    ] {
        for (isa, got) in dot_all(a, &w1) {
            assert_eq!(got, want, "{isa} a={a:?}");
        }
    }
}

/// DAZ/FTZ and the unbounded product exponent, probed on the hardware.
#[test]
fn dot_semantics_denormals_and_range() {
    let mn = f32::MIN_POSITIVE; // 2^-126
    let one = bf(1.0);
    // Intermediate flush: acc = 1.5·mn (from pair 0), odd product −mn -> 0.5·mn
    // (subnormal) -> 0, then + mn = mn.
    let a = [1.5 * mn, 0.0, mn, -mn];
    let w = [one, 0, one, one];
    for (isa, got) in dot_all(&a, &w) {
        assert_eq!(got, mn, "{isa} intermediate FTZ");
    }
    // A product below the f32 normal range is not flushed before the add:
    // mn + 2^-70·2^-70 = mn + 2^-140 exactly.
    let s = 2f32.powi(-70);
    let a = [mn, 0.0, s, 0.0];
    let w = [one, 0, bf(s), 0];
    for (isa, got) in dot_all(&a, &w) {
        assert_eq!(got, mn + 2f32.powi(-140), "{isa} tiny product");
    }
    // ... and a product beyond f32::MAX does not overflow before the add:
    // −big + 2^64·2^64 = 2^128 − (2 − 2^-7)·2^127 = 2^120 (big = the largest bf16).
    let g = 2f32.powi(64);
    let big = bf16_to_f32(0x7f7f);
    let a = [-big, 0.0, g, 0.0];
    let w = [one, 0, bf(g), 0];
    for (isa, got) in dot_all(&a, &w) {
        assert_eq!(got, 2f32.powi(120), "{isa} wide product exponent");
    }
    // bf16 subnormal weights count as zero (DAZ).
    let a = [1.0f32, 0.0];
    let w = [0x0001u16, 0];
    for (isa, got) in dot_all(&a, &w) {
        assert_eq!(got, 0.0, "{isa} DAZ");
    }
    // inf·0 = NaN.
    let a = [f32::INFINITY, 0.0];
    let w = [0u16, 0];
    for (isa, got) in dot_all(&a, &w) {
        assert!(got.is_nan(), "{isa} inf*0");
    }
}

fn epilogues<'a>(bias: &'a [f32], res: &'a [f32]) -> [(&'static str, Epilogue<'a>); 4] {
    [
        ("none", Epilogue::None),
        ("bias", Epilogue::Bias(bias)),
        ("gelu", Epilogue::BiasGelu(bias)),
        (
            "residual",
            Epilogue::BiasResidual {
                bias,
                residual: res,
            },
        ),
    ]
}

/// Kernel output vs the reference: bitwise, GELU within its budget.
fn check_vs_reference(what: &str, got: &[f32], want: &[f32], gelu: bool) {
    if gelu {
        assert_close(what, got, want, |i| {
            GELU_ABS + GELU_REL * want[i].abs() as f64
        });
    } else {
        for i in 0..got.len() {
            assert!(
                got[i].to_bits() == want[i].to_bits() || (got[i].is_nan() && want[i].is_nan()),
                "{what}: element {i}: got {} want {} (not bitwise)",
                got[i],
                want[i]
            );
        }
    }
}

fn run_vs_reference(isa: BIsa, m: usize, n: usize, k: usize, which: &[&str], seed: u64) {
    let mut r = rng(seed);
    let a = uniform(&mut r, m * k, -1.0, 1.0);
    let w = uniform(&mut r, n * k, -1.0, 1.0);
    let bias = uniform(&mut r, n, -1.0, 1.0);
    let res = uniform(&mut r, m * n, -1.0, 1.0);
    let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
    for (name, epi) in epilogues(&bias, &res) {
        if !which.contains(&name) {
            continue;
        }
        let mut want = vec![0f32; m * n];
        gemm_bf16_reference(&a, m, &w, n, k, &mut want, epi).unwrap();
        let mut got = vec![f32::NAN; m * n];
        gemm_bf16(&a, m, &b, &mut got, epi).unwrap();
        check_vs_reference(
            &format!("{isa} m={m} n={n} k={k} {name}"),
            &got,
            &want,
            name == "gelu",
        );
    }
}

const ALL_EPI: [&str; 4] = ["none", "bias", "gelu", "residual"];

#[test]
fn gemm_vs_reference_small_shapes() {
    for isa in dp_isas() {
        for &(n, k) in &[
            (1usize, 1usize),
            (7, 5),
            (17, 33),
            (33, 17),
            (64, 2),
            (100, 3),
        ] {
            for &m in &[0usize, 1, 2, 7, 12, 13, 17, 33, 49, 128] {
                run_vs_reference(isa, m, n, k, &ALL_EPI, (m * 1000 + n * 10 + k) as u64);
            }
        }
    }
}

/// The `bfmmla` path's output vs the scalar model of its arithmetic (bitwise, GELU within
/// its budget) and vs the `vdpbf16ps` reference within [`mmla_bound`].
fn run_mmla_vs_models(isa: BIsa, m: usize, n: usize, k: usize, which: &[&str], seed: u64) {
    let mut r = rng(seed);
    let a = uniform(&mut r, m * k, -1.0, 1.0);
    let w = uniform(&mut r, n * k, -1.0, 1.0);
    let bias = uniform(&mut r, n, -1.0, 1.0);
    let res = uniform(&mut r, m * n, -1.0, 1.0);
    let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
    let rd = |x: f32| bf16_to_f32(f32_to_bf16(x)) as f64;
    let mut sabs = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            sabs[i * n + j] = (0..k)
                .map(|q| (rd(a[i * k + q]) * rd(w[j * k + q])).abs())
                .sum();
        }
    }
    for (name, epi) in epilogues(&bias, &res) {
        if !which.contains(&name) {
            continue;
        }
        let what = format!("{isa} m={m} n={n} k={k} {name}");
        let mut got = vec![f32::NAN; m * n];
        gemm_bf16(&a, m, &b, &mut got, epi).unwrap();
        let mut model = vec![0f32; m * n];
        gemm_bf16_bfmmla_order_reference(&a, m, &w, n, k, &mut model, epi).unwrap();
        check_vs_reference(
            &format!("{what} vs bfmmla model"),
            &got,
            &model,
            name == "gelu",
        );
        let mut want = vec![0f32; m * n];
        gemm_bf16_reference(&a, m, &w, n, k, &mut want, epi).unwrap();
        assert_close(&format!("{what} vs reference"), &got, &want, |i| {
            let (row, j) = (i / n, i % n);
            let scale = match name {
                "none" => 0.0,
                "residual" => bias[j].abs() as f64 + res[row * n + j].abs() as f64,
                _ => bias[j].abs() as f64,
            } + want[i].abs() as f64;
            mmla_bound(sabs[i], k, scale, name == "gelu")
        });
    }
}

/// `|bfmmla result − reference|` per element (see the file docs).
fn mmla_bound(sum_abs: f64, k: usize, epi_scale: f64, gelu: bool) -> f64 {
    let kp = padded_k(k) as f64;
    let pre = (2.0 * kp + 2.0) * 2f64.powi(-24) * 1.01 * sum_abs
        + kp * 2f64.powi(-126)
        + 2.0 * EPI_REL * epi_scale;
    if gelu {
        GELU_LIPSCHITZ * pre + 2.0 * (GELU_ABS + GELU_REL * epi_scale)
    } else {
        pre
    }
}

fn mmla_isa() -> Option<BIsa> {
    BIsa::new(BIsaKind::NeonBf16)
}

#[test]
fn bfmmla_vs_its_model_and_the_reference_small_shapes() {
    let Some(isa) = mmla_isa() else {
        eprintln!("bfmmla_vs_its_model_and_the_reference_small_shapes: no NeonBf16 path here");
        return;
    };
    for &(n, k) in &[
        (1usize, 1usize),
        (7, 5),
        (17, 33),
        (33, 17),
        (64, 2),
        (100, 3),
        (25, 4),
        (24, 6),
    ] {
        for &m in &[0usize, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 17, 33, 49, 128] {
            run_mmla_vs_models(isa, m, n, k, &ALL_EPI, (m * 1000 + n * 10 + k) as u64);
        }
    }
}

#[test]
fn bfmmla_vs_its_model_and_the_reference_model_shapes() {
    let Some(isa) = mmla_isa() else {
        eprintln!("bfmmla_vs_its_model_and_the_reference_model_shapes: no NeonBf16 path here");
        return;
    };
    for &(n, k, epi) in &[
        (1152usize, 384usize, "bias"),
        (384, 384, "residual"),
        (1536, 384, "gelu"),
        (384, 1536, "residual"),
    ] {
        // One row, an odd count (a half-used row pair) and two tiles + 1 (the blocking
        // edges are in the small shapes above): the scalar model is slow under emulation.
        for &m in &[1usize, 7, 17] {
            run_mmla_vs_models(isa, m, n, k, &[epi], (m + n + k) as u64);
        }
    }
}

/// Hand-computed `bfmmla` results (Arm ARM, BFMMLA without FEAT_EBF16: each pair's two
/// products summed, then added to the accumulator, both rounded to odd; denormal inputs
/// and results flushed; overflow to ±inf). The scalar model must give them on every CPU,
/// and the NeonBf16 kernel where the CPU has it (under qemu `-cpu max`).
#[test]
fn bfmmla_semantics_round_to_odd_pairs_flush() {
    let t = |e: i32| 2f32.powi(e);
    let one = bf(1.0);
    let mn = f32::MIN_POSITIVE;
    let big = bf16_to_f32(0x7f7f); // the largest finite bf16
    /// (name, a as f32 (exact in bf16 unless noted), w as bf16 bits, the result's bits or NaN)
    type Case = (&'static str, Vec<f32>, Vec<u16>, Option<u32>);
    let cases: Vec<Case> = vec![
        // 1 + 2^-24 is a tie: RNE would give 1; round to odd sets bit 0.
        (
            "pair sum rounded to odd",
            vec![1.0, t(-24), 0.0, 0.0],
            vec![one, one, 0, 0],
            Some(0x3f80_0001),
        ),
        // 1 − 2^-30 truncates to the f32 below 1 (already odd), RNE would give 1.
        (
            "truncation below",
            vec![1.0, -t(-30), 0.0, 0.0],
            vec![one, one, 0, 0],
            Some(0x3f7f_ffff),
        ),
        // The second pair's products are summed first (2^-23), then added exactly; a chain
        // of single products (vdpbf16ps) would round 1 + 2^-24 twice back to 1.
        (
            "pair summed before the accumulator",
            vec![1.0, 0.0, t(-24), t(-24)],
            vec![one, one, one, one],
            Some(0x3f80_0001),
        ),
        // The accumulator add is rounded to odd too.
        (
            "accumulator add rounded to odd",
            vec![1.0, 0.0, t(-25), 0.0],
            vec![one, one, one, one],
            Some(0x3f80_0001),
        ),
        // A product below 2^-126 is flushed before the sum (vdpbf16ps keeps it).
        (
            "tiny product flushed",
            vec![mn, t(-70), 0.0, 0.0],
            vec![one, bf(t(-70)), 0, 0],
            Some(mn.to_bits()),
        ),
        // A product of 2^128 overflows to +inf before the sum (vdpbf16ps gives 2^120).
        (
            "product overflow",
            vec![-big, t(64), 0.0, 0.0],
            vec![one, bf(t(64)), 0, 0],
            Some(f32::INFINITY.to_bits()),
        ),
        // Half an ulp above the largest bf16 (an f32): round to odd keeps the odd f32
        // just above it (RNE: the even one, `big` itself).
        (
            "round to odd near the top",
            vec![big, t(103), 0.0, 0.0],
            vec![one, one, 0, 0],
            Some(0x7f7f_0001),
        ),
        // 2·big >= 2^128: +inf.
        (
            "sum overflow",
            vec![big, big, 0.0, 0.0],
            vec![one, one, 0, 0],
            Some(f32::INFINITY.to_bits()),
        ),
        // A bf16 denormal weight counts as zero.
        ("denormal weight", vec![1.0, 0.0], vec![0x0001, 0], Some(0)),
        // An f32 denormal activation is zero in bf16 (f32_to_bf16), even the largest
        // (which a plain `bfcvtn` would round up to 2^-126 under FPCR.FZ = 0).
        (
            "denormal activation",
            vec![f32::from_bits(0x007f_ffff), f32::from_bits(0x807f_ffff)],
            vec![bf(t(100)), bf(t(100))],
            Some(0),
        ),
        // inf · 0 = NaN.
        ("inf times zero", vec![f32::INFINITY, 0.0], vec![0, 0], None),
        // K = 6: the second k-group is (2^-24, 0 | pad): 1 + 2^-24 rounded to odd.
        (
            "two k-groups, K padded",
            vec![1.0, 0.0, 0.0, 0.0, t(-24), 0.0],
            vec![one; 6],
            Some(0x3f80_0001),
        ),
    ];
    let isa = mmla_isa();
    for (what, a, w, want) in &cases {
        let ab: Vec<u16> = a.iter().map(|&x| f32_to_bf16(x)).collect();
        let mut got = vec![("model", dot_bfmmla_bits(&ab, w))];
        if let Some(isa) = isa {
            let k = a.len();
            let b = Bf16Matrix::from_bf16_bits(isa, w, 1, k).unwrap();
            // The row alone, and as row 1 of an 8-row call (the other rows random).
            let mut c = [f32::NAN];
            gemm_bf16(a, 1, &b, &mut c, Epilogue::None).unwrap();
            got.push(("bfmmla m=1", c[0]));
            let mut r = rng(9);
            let mut a8 = uniform(&mut r, 8 * k, -1.0, 1.0);
            a8[k..2 * k].copy_from_slice(a);
            let mut c8 = [f32::NAN; 8];
            gemm_bf16(&a8, 8, &b, &mut c8, Epilogue::None).unwrap();
            got.push(("bfmmla m=8 row 1", c8[1]));
        }
        for (who, x) in got {
            match want {
                Some(bits) => assert_eq!(
                    x.to_bits(),
                    *bits,
                    "{what} ({who}): got {x:e} ({:#010x}), want {:e} ({bits:#010x})",
                    x.to_bits(),
                    f32::from_bits(*bits)
                ),
                None => assert!(x.is_nan(), "{what} ({who}): got {x:e}, want NaN"),
            }
        }
    }
}

#[test]
fn gemm_vs_reference_model_shapes() {
    // Trimmed: every model (n, k), m across the tile/block edges; Scalar only on
    // the smallest m (it is the reference's own arithmetic).
    for isa in dp_isas() {
        let ms: &[usize] = if isa.kind() == BIsaKind::Scalar {
            &[1]
        } else {
            &[1, 2, 7, 17, 33, 128, 385]
        };
        for &(n, k, epi) in &[
            (1152usize, 384usize, "bias"),
            (384, 384, "residual"),
            (1536, 384, "gelu"),
            (384, 1536, "residual"),
        ] {
            for &m in ms {
                // Big m on the two cheaper shapes only (the scalar reference is slow).
                if m > 128 && n * k > 384 * 384 {
                    continue;
                }
                run_vs_reference(isa, m, n, k, &[epi, "none"], (m + n + k) as u64);
            }
        }
        if isa.kind() != BIsaKind::Scalar {
            run_vs_reference(isa, 383, 384, 1536, &["bias"], 11);
        }
    }
}

/// Rigorous bound for `|bf16 result − f32 GEMM|` per element (see the file docs):
/// `(2U + U² + (kp + 2)·2^-24 + GEMM_F32_REL·sqrt(k))·Σ|a·w|`, plus the epilogue
/// roundings of both (`EPI_REL·(|bias| + |residual| + |c|)`), through GELU's
/// Lipschitz constant, plus the GELU budget of both.
fn bf16_bound(sum_abs: f64, k: usize, epi_scale: f64, gelu: bool) -> f64 {
    let kp = padded_k(k) as f64;
    let dot = (2.0 * U_BF16 + U_BF16 * U_BF16 + (kp + 2.0) * 2f64.powi(-24))
        + GEMM_F32_REL * (k as f64).sqrt();
    let pre = dot * sum_abs * 1.01 + 2.0 * EPI_REL * epi_scale;
    if gelu {
        GELU_LIPSCHITZ * pre + 2.0 * (GELU_ABS + GELU_REL * epi_scale)
    } else {
        pre
    }
}

#[test]
fn gemm_vs_f32_gemm_within_bf16_bound() {
    let fisa = Isa::best();
    for isa in BIsa::available() {
        for &(m, n, k) in &[
            (17usize, 33usize, 17usize),
            (33, 384, 384),
            (12, 1152, 384),
            (7, 384, 1536),
            (5, 1536, 384),
        ] {
            let mut r = rng((m * n + k) as u64);
            let a = uniform(&mut r, m * k, -1.0, 1.0);
            let w = uniform(&mut r, n * k, -1.0, 1.0);
            let bias = uniform(&mut r, n, -1.0, 1.0);
            let res = uniform(&mut r, m * n, -1.0, 1.0);
            let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
            let pf = PackedMatrix::pack(fisa, &w, n, k).unwrap();
            // Σ_q |a·w| per element.
            let mut sabs = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    sabs[i * n + j] = (0..k)
                        .map(|q| (a[i * k + q] as f64 * w[j * k + q] as f64).abs())
                        .sum();
                }
            }
            for (name, epi) in epilogues(&bias, &res) {
                let mut want = vec![0f32; m * n];
                gemm_f32(&a, m, &pf, &mut want, epi).unwrap();
                let mut got = vec![0f32; m * n];
                gemm_bf16(&a, m, &b, &mut got, epi).unwrap();
                assert_close(
                    &format!("{isa} vs f32 m={m} n={n} k={k} {name}"),
                    &got,
                    &want,
                    |i| {
                        let (row, j) = (i / n, i % n);
                        let scale = match name {
                            "none" => 0.0,
                            "residual" => bias[j].abs() as f64 + res[row * n + j].abs() as f64,
                            _ => bias[j].abs() as f64,
                        } + want[i].abs() as f64;
                        bf16_bound(sabs[i], k, scale, name == "gelu")
                    },
                );
            }
        }
    }
}

#[test]
fn from_f32_equals_from_bits_and_roundtrips() {
    let mut r = rng(3);
    let (n, k) = (45, 37);
    let w = uniform(&mut r, n * k, -3.0, 3.0);
    let bits: Vec<u16> = w.iter().map(|&x| f32_to_bf16(x)).collect();
    for isa in BIsa::available() {
        let b1 = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
        let b2 = Bf16Matrix::from_bf16_bits(isa, &bits, n, k).unwrap();
        assert_eq!(b1.to_bf16_bits(), bits);
        assert_eq!(b2.to_bf16_bits(), bits);
        assert_eq!((b1.n(), b1.k(), b1.k_padded()), (n, k, 38));
        assert_eq!(b1.kernel_name(), isa.kernel_name());
        assert_eq!(b1.panel_width(), isa.tile().1);
    }
}

/// A row's result does not depend on m, its position or the chunking; column
/// ranges equal the full call; the Scalar path equals AVX-512 (but GELU).
#[test]
fn bitwise_row_invariance_and_columns() {
    let mut r = rng(5);
    for &(n, k) in &[(384usize, 384usize), (100, 1536), (70, 33)] {
        let m = 61;
        let a = uniform(&mut r, m * k, -1.0, 1.0);
        let w = uniform(&mut r, n * k, -1.0, 1.0);
        let bias = uniform(&mut r, n, -1.0, 1.0);
        let res = uniform(&mut r, m * n, -1.0, 1.0);
        for isa in BIsa::available() {
            let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
            for (name, epi) in epilogues(&bias, &res) {
                let mut full = vec![0f32; m * n];
                gemm_bf16(&a, m, &b, &mut full, epi).unwrap();
                for chunk in [1usize, 5, 12, 13, 24, 50] {
                    let mut got = vec![0f32; m * n];
                    let mut lo = 0;
                    while lo < m {
                        let hi = (lo + chunk).min(m);
                        let e = match epi {
                            Epilogue::BiasResidual { bias, residual } => Epilogue::BiasResidual {
                                bias,
                                residual: &residual[lo * n..hi * n],
                            },
                            e => e,
                        };
                        gemm_bf16(&a[lo * k..hi * k], hi - lo, &b, &mut got[lo * n..hi * n], e)
                            .unwrap();
                        lo = hi;
                    }
                    assert!(
                        got.iter()
                            .zip(&full)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{isa} n={n} k={k} {name} chunk={chunk}"
                    );
                }
                // Column ranges on panel boundaries.
                let nr = b.panel_width();
                let mid = (n / 2).div_ceil(nr) * nr;
                for cols in [0..mid.min(n), mid.min(n)..n, 0..n] {
                    let wdt = cols.len();
                    let mut blk = vec![0f32; m * wdt];
                    gemm_bf16_cols(&a, m, &b, cols.clone(), &mut blk, epi).unwrap();
                    for i in 0..m {
                        for (jj, j) in cols.clone().enumerate() {
                            assert_eq!(
                                blk[i * wdt + jj].to_bits(),
                                full[i * n + j].to_bits(),
                                "{isa} cols {cols:?} {name} ({i}, {j})"
                            );
                        }
                    }
                }
            }
        }
        // Scalar vs vdpbf16ps: bitwise (not GELU).
        if let Some(best) = BIsa::new(BIsaKind::Avx512Bf16) {
            let bs = Bf16Matrix::from_f32(BIsa::scalar(), &w, n, k).unwrap();
            let bb = Bf16Matrix::from_f32(best, &w, n, k).unwrap();
            let mut cs = vec![0f32; m * n];
            let mut cb = vec![0f32; m * n];
            let epi = Epilogue::BiasResidual {
                bias: &bias,
                residual: &res,
            };
            gemm_bf16(&a, m, &bs, &mut cs, epi).unwrap();
            gemm_bf16(&a, m, &bb, &mut cb, epi).unwrap();
            assert!(cs.iter().zip(&cb).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}

#[test]
fn k_zero_is_epilogue_of_zero() {
    for isa in BIsa::available() {
        let b = Bf16Matrix::from_f32(isa, &[], 3, 0).unwrap();
        let bias = [1.0f32, -2.0, 0.5];
        let res = [1.0f32; 6];
        let mut c = [f32::NAN; 6];
        gemm_bf16(
            &[],
            2,
            &b,
            &mut c,
            Epilogue::BiasResidual {
                bias: &bias,
                residual: &res,
            },
        )
        .unwrap();
        assert_eq!(c, [2.0, -1.0, 1.5, 2.0, -1.0, 1.5]);
    }
}

#[test]
fn error_paths() {
    let isa = BIsa::best();
    let shape = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Shape(_)));
    assert!(matches!(
        Bf16Matrix::from_f32(isa, &[0.0; 5], 2, 3),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        Bf16Matrix::from_bf16_bits(isa, &[0; 7], 2, 3),
        Err(KernelError::Shape(_))
    ));
    assert!(matches!(
        Bf16Matrix::from_f32(isa, &[], usize::MAX, 2),
        Err(KernelError::Shape(_))
    ));
    let b = Bf16Matrix::from_f32(isa, &[0.5; 6], 2, 3).unwrap();
    let a = [1.0f32; 6];
    let mut c = [0f32; 4];
    assert!(shape(gemm_bf16(&a[..5], 2, &b, &mut c, Epilogue::None)));
    assert!(shape(gemm_bf16(&a, 2, &b, &mut c[..3], Epilogue::None)));
    assert!(shape(gemm_bf16(&a, 2, &b, &mut c, Epilogue::Bias(&[0.0]))));
    assert!(shape(gemm_bf16(
        &a,
        2,
        &b,
        &mut c,
        Epilogue::BiasGelu(&[0.0; 3])
    )));
    assert!(shape(gemm_bf16(
        &a,
        2,
        &b,
        &mut c,
        Epilogue::BiasResidual {
            bias: &[0.0; 2],
            residual: &[0.0; 3]
        }
    )));
    assert!(shape(gemm_bf16(&a, usize::MAX, &b, &mut c, Epilogue::None)));
    gemm_bf16(&a, 2, &b, &mut c, Epilogue::None).unwrap();
    assert_eq!(c, [1.5; 4]);
    // Column ranges must start on a panel.
    if b.panel_width() > 1 {
        let mut blk = [0f32; 2];
        assert!(shape(gemm_bf16_cols(
            &a,
            2,
            &b,
            1..2,
            &mut blk,
            Epilogue::None
        )));
    }
    let mut blk = [0f32; 4];
    assert!(shape(gemm_bf16_cols(
        &a,
        2,
        &b,
        0..3,
        &mut blk,
        Epilogue::None
    )));
    // Converter and reference lengths.
    let mut out = [0u16; 3];
    assert!(shape(convert_rows(isa, &[1.0; 3], 1, 3, &mut out)));
    assert!(shape(gemm_bf16_reference(
        &a,
        2,
        &[0.0; 5],
        2,
        3,
        &mut c,
        Epilogue::None
    )));
    // ISA names.
    assert!(matches!(
        BIsa::from_name("avx9000"),
        Err(KernelError::UnknownIsa(_))
    ));
    assert_eq!(BIsa::from_name("scalar").unwrap(), BIsa::scalar());
    assert_eq!(BIsa::from_name("").unwrap(), BIsa::best());
    let has = BIsa::new(BIsaKind::Avx512Bf16).is_some();
    assert_eq!(BIsa::from_name("bf16").is_ok(), has);
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        has,
        std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    );
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!has);
}

/// The widening paths are the f32 GEMM's FMA chain with the weights rounded to bf16:
/// Avx512Widen bitwise equal to `gemm_f32` on AVX-512, NeonWiden to `gemm_f32` on NEON,
/// on `bf16_to_f32(f32_to_bf16(w))`, every epilogue (the same vector GELU).
#[test]
fn widen_equals_f32_gemm_on_rounded_weights() {
    use e5embed_kernels::IsaKind;
    let pairs = [
        (BIsaKind::Avx512Widen, IsaKind::Avx512),
        (BIsaKind::NeonWiden, IsaKind::Neon),
    ];
    let mut ran = false;
    for (bkind, fkind) in pairs {
        let (Some(isa), Some(fisa)) = (BIsa::new(bkind), Isa::new(fkind)) else {
            continue;
        };
        ran = true;
        widen_vs_f32(isa, fisa);
    }
    if !ran {
        eprintln!("widen_equals_f32_gemm_on_rounded_weights: no widening path here");
    }
}

fn widen_vs_f32(isa: BIsa, fisa: Isa) {
    for &(n, k) in &[
        (1usize, 1usize),
        (7, 5),
        (33, 17),
        (17, 33),
        (384, 384),
        (1152, 384),
        (1536, 384),
        (384, 1536),
        (100, 1535),
    ] {
        for &m in &[0usize, 1, 2, 7, 9, 13, 17, 19, 33, 61, 128, 385] {
            if m * n * k > 128 * 1536 * 384 {
                continue;
            }
            // NeonWiden's row block is 24 rows (Avx512Widen's 60): 33 and 61 cross its
            // edges; the larger counts add only emulation time under qemu.
            if isa.kind() == BIsaKind::NeonWiden && m > 61 {
                continue;
            }
            let mut r = rng((m * 7 + n * 3 + k) as u64);
            let a = uniform(&mut r, m * k, -1.0, 1.0);
            let w = uniform(&mut r, n * k, -1.0, 1.0);
            let bias = uniform(&mut r, n, -1.0, 1.0);
            let res = uniform(&mut r, m * n, -1.0, 1.0);
            let wr: Vec<f32> = w.iter().map(|&x| bf16_to_f32(f32_to_bf16(x))).collect();
            let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
            let pf = PackedMatrix::pack(fisa, &wr, n, k).unwrap();
            for (name, epi) in epilogues(&bias, &res) {
                let mut want = vec![0f32; m * n];
                gemm_f32(&a, m, &pf, &mut want, epi).unwrap();
                let mut got = vec![f32::NAN; m * n];
                gemm_bf16(&a, m, &b, &mut got, epi).unwrap();
                check_vs_reference(
                    &format!("{isa} vs f32 {fisa} m={m} n={n} k={k} {name}"),
                    &got,
                    &want,
                    false,
                );
            }
        }
    }
}

/// `gemm_bf16_par` (column ranges for skinny m, row shares otherwise, on a rayon pool,
/// written in place) is bitwise equal to `gemm_bf16` on every path, any thread count.
#[test]
fn parallel_call_equals_the_single_threaded_call() {
    use e5embed_kernels::bgemm::gemm_bf16_par;
    for isa in BIsa::available() {
        let scalar = isa.kind() == BIsaKind::Scalar;
        for &(m, n, k) in &common::PAR_SHAPES {
            if scalar && m * n * k > 7 * 384 * 64 {
                continue;
            }
            let mut r = rng((m * 5 + n + k) as u64);
            let a = uniform(&mut r, m * k, -1.0, 1.0);
            let w = uniform(&mut r, n * k, -1.0, 1.0);
            let bias = uniform(&mut r, n, -1.0, 1.0);
            let res = uniform(&mut r, m * n, -1.0, 1.0);
            let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
            for (name, epi) in epilogues(&bias, &res) {
                let mut want = vec![f32::NAN; m * n];
                gemm_bf16(&a, m, &b, &mut want, epi).unwrap();
                for threads in [1usize, 2, 3, 7] {
                    let mut got = vec![f32::NAN; m * n];
                    common::pool(threads)
                        .install(|| gemm_bf16_par(&a, m, &b, &mut got, epi, threads))
                        .unwrap();
                    let what = format!("{isa:?} m={m} n={n} k={k} threads={threads} {name}");
                    common::assert_bitwise(&what, &got, &want);
                }
            }
            let mut short = vec![0f32; m * n - 1];
            assert!(gemm_bf16_par(&a, m, &b, &mut short, Epilogue::None, 2).is_err());
        }
    }
}

/// The default bf16 path: AMX tiles where Linux grants AMX-BF16, else `vdpbf16ps` where
/// AVX512-BF16 is (2x the f32 FMA rate on Zen 5 with the `asm!` K loop, see `BIsa::best`),
/// else the widening one where AVX-512 F is; on aarch64 `bfmmla` where FEAT_BF16 is, else
/// the NEON widening path: never the scalar one on a CPU with SIMD.
#[test]
fn best_is_vdpbf16ps_then_the_widening_path() {
    if let Some(t) = BIsa::new(BIsaKind::Amx) {
        assert_eq!(BIsa::best(), t);
    } else if let Some(d) = BIsa::new(BIsaKind::Avx512Bf16) {
        assert_eq!(BIsa::best(), d);
    } else if let Some(w) = BIsa::new(BIsaKind::Avx512Widen) {
        assert_eq!(BIsa::best(), w);
    } else if let Some(b) = BIsa::new(BIsaKind::NeonBf16) {
        assert_eq!(BIsa::best(), b);
    } else if let Some(w) = BIsa::new(BIsaKind::NeonWiden) {
        assert_eq!(BIsa::best(), w);
    } else {
        assert_eq!(BIsa::best(), BIsa::scalar());
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(
            BIsa::new(BIsaKind::NeonBf16).is_some(),
            std::arch::is_aarch64_feature_detected!("bf16")
        );
        assert!(BIsa::new(BIsaKind::NeonWiden).is_some(), "NEON is baseline");
        assert_ne!(BIsa::best(), BIsa::scalar());
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        assert!(BIsa::new(BIsaKind::NeonWiden).is_none());
        assert!(BIsa::new(BIsaKind::NeonBf16).is_none());
    }
}

/// bf16 panels saved (`packed_bytes`) and mapped back (`from_packed`) are the same matrix:
/// the same bits and bitwise the same GEMM on every bf16 path; a short range is refused.
#[test]
fn from_packed_mapped_bytes_is_bitwise_the_packed_matrix() {
    use e5embed_kernels::mapped::MappedF32;
    let mut r = rng(72);
    for isa in BIsa::available() {
        for (n, k) in [(70, 37), (384, 384)] {
            let w = uniform(&mut r, n * k, -1.0, 1.0);
            let b = Bf16Matrix::from_f32(isa, &w, n, k).unwrap();
            let bytes = b.packed_bytes();
            let map = common::mapped(bytes, 64);
            let m = MappedF32::new(&map, 64, bytes.len() / 4, 64).unwrap();
            let c = Bf16Matrix::from_packed(isa, n, k, m).unwrap();
            assert_eq!(c.to_bf16_bits(), b.to_bf16_bits(), "{isa:?} {n}x{k}");
            let rows = 13;
            let a = uniform(&mut r, rows * k, -1.0, 1.0);
            let (mut want, mut got) = (vec![0f32; rows * n], vec![0f32; rows * n]);
            gemm_bf16(&a, rows, &b, &mut want, Epilogue::None).unwrap();
            gemm_bf16(&a, rows, &c, &mut got, Epilogue::None).unwrap();
            common::assert_bitwise(&format!("{isa:?} {n}x{k}"), &got, &want);
            let short = MappedF32::new(&map, 64, bytes.len() / 4 - 1, 64).unwrap();
            assert!(matches!(
                Bf16Matrix::from_packed(isa, n, k, short),
                Err(KernelError::Shape(_))
            ));
        }
    }
}
