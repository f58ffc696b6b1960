//! bf16 attention (`attention::attention_bf16`, AVX512-BF16 `vdpbf16ps`) against an f64
//! model of its arithmetic: `Q·log2(e)/sqrt(d)`, `K`, `V` rounded to bf16 (round to nearest
//! even, as `vcvtne2ps2bf16`), exact scores, the softmax in base 2 from the row max with the
//! sum of the unrounded `P`, `P` rounded to bf16 for `P·V`, divided by the sum. The kernel's
//! scores and sums are f32 (`vdpbf16ps` accumulation, the polynomial `exp2`), so a `P` near a
//! bf16 rounding boundary can round one ulp (2^-8) the other way: the output may differ from
//! the model by at most `2^-8 · max|V|` (the output is a convex combination of `V` rows)
//! plus f32 accumulation, hence the tolerance `(2^-8 + 1e-4) · max|V|`. Also held to the
//! f32 reference within the bf16 rounding of its operands (`0.03 · max|V|`), and the head
//! split across threads bitwise to one call. Awkward shapes: sequence lengths around the
//! 32-key tiles, the 8-query blocks and odd key pairs; head sizes 2..64 around the 16-column
//! vectors and 32-column tiles. Where the CPU lacks AVX512-BF16 the tests say so loudly and
//! run nothing (there is no emulator of `vdpbf16ps` here; tools/compare and the engine's
//! bf16 tests run where it exists).

mod common;

use common::*;
use e5embed_kernels::attention::{attention_bf16, attention_bf16_par, bf16_supported};
use e5embed_kernels::bgemm::{bf16_to_f32, f32_to_bf16, BIsa, BIsaKind};
use e5embed_kernels::{attention_reference, KernelError};

fn bisa() -> Option<BIsa> {
    let b = BIsa::available()
        .into_iter()
        .find(|b| b.kind() == BIsaKind::Avx512Bf16);
    if b.is_none() {
        eprintln!(
            "*** attention_bf16 tests NOT RUN here: this CPU has no AVX512-BF16 (vdpbf16ps); \
             they run on CPUs that have it (Zen 4/5, Sapphire Rapids and later)"
        );
    }
    b
}

fn rb(x: f64) -> f64 {
    bf16_to_f32(f32_to_bf16(x as f32)) as f64
}

/// The f64 model of the kernel's arithmetic (see the module docs).
fn model(qkv: &[f32], seq: usize, heads: usize, d: usize) -> Vec<f32> {
    let h_all = heads * d;
    let scale = (std::f32::consts::LOG2_E / (d as f32).sqrt()) as f64;
    let mut out = vec![0f32; seq * h_all];
    for h in 0..heads {
        let at = |i: usize, part: usize, c: usize| qkv[i * 3 * h_all + part * h_all + h * d + c];
        for i in 0..seq {
            let s: Vec<f64> = (0..seq)
                .map(|j| {
                    (0..d)
                        .map(|c| rb(at(i, 0, c) as f64 * scale) * rb(at(j, 1, c) as f64))
                        .sum()
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = s.iter().map(|&x| (x - mx).exp2()).collect();
            let sum: f64 = p.iter().sum();
            for c in 0..d {
                let o: f64 = (0..seq).map(|j| rb(p[j]) * rb(at(j, 2, c) as f64)).sum();
                out[i * h_all + h * d + c] = (o / sum) as f32;
            }
        }
    }
    out
}

fn check(b: BIsa, seq: usize, heads: usize, d: usize, seed: u64) {
    let h_all = heads * d;
    let mut r = rng(seed);
    let qkv = uniform(&mut r, seq * 3 * h_all, -2.0, 2.0);
    let vmax = 2.0;
    let what = format!("attention_bf16 seq={seq} heads={heads} head_dim={d}");
    let mut got = vec![f32::NAN; seq * h_all];
    attention_bf16(b, &qkv, seq, heads, d, &mut got).unwrap();
    let want = model(&qkv, seq, heads, d);
    assert_close(&format!("{what} vs its f64 model"), &got, &want, |_| {
        (1.0 / 256.0 + 1e-4) * vmax
    });
    let mut f32_ref = vec![f32::NAN; seq * h_all];
    attention_reference(&qkv, seq, heads, d, &mut f32_ref).unwrap();
    assert_close(
        &format!("{what} vs the f32 reference"),
        &got,
        &f32_ref,
        |_| 0.03 * vmax,
    );
    for threads in [2, 3] {
        let mut par = vec![f32::NAN; seq * h_all];
        pool(threads)
            .install(|| attention_bf16_par(b, &qkv, seq, heads, d, &mut par, threads).unwrap());
        assert_bitwise(&format!("{what} on {threads} threads"), &par, &got);
    }
}

#[test]
fn model_config_lengths() {
    let Some(b) = bisa() else { return };
    for (i, seq) in [
        1usize, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 128, 129, 255, 512,
    ]
    .into_iter()
    .enumerate()
    {
        check(b, seq, 12, 32, i as u64);
    }
}

#[test]
fn odd_head_sizes() {
    let Some(b) = bisa() else { return };
    for (i, (seq, heads, d)) in [
        (5, 1, 2),
        (33, 2, 8),
        (17, 3, 14),
        (40, 2, 16),
        (31, 1, 18),
        (9, 2, 30),
        (70, 2, 34),
        (33, 1, 48),
        (65, 2, 62),
        (100, 1, 64),
    ]
    .into_iter()
    .enumerate()
    {
        check(b, seq, heads, d, 100 + i as u64);
    }
}

/// One key dominates (scores of ±522 in base 2): no overflow, the output is that key's
/// bf16-rounded V row.
#[test]
fn peaked_scores() {
    let Some(b) = bisa() else { return };
    let (seq, heads, d) = (37, 2, 32);
    let h_all = heads * d;
    let mut r = rng(7);
    let mut qkv = uniform(&mut r, seq * 3 * h_all, -1.0, 1.0);
    for i in 0..seq {
        for c in 0..h_all {
            qkv[i * 3 * h_all + c] = 8.0; // Q
            qkv[i * 3 * h_all + h_all + c] = if i == 20 { 8.0 } else { -8.0 }; // K
        }
    }
    let mut got = vec![f32::NAN; seq * h_all];
    attention_bf16(b, &qkv, seq, heads, d, &mut got).unwrap();
    for i in 0..seq {
        for c in 0..h_all {
            let v = qkv[20 * 3 * h_all + 2 * h_all + c];
            let want = bf16_to_f32(f32_to_bf16(v));
            // P = 1 (rounds to bf16 1.0 exactly), its f32 sum within the exp2 polynomial's
            // 2^-23 of 1.
            let err = (got[i * h_all + c] - want).abs();
            assert!(
                err <= 2e-7 * want.abs(),
                "row {i} col {c}: {} vs {want}",
                got[i * h_all + c]
            );
        }
    }
}

#[test]
fn unsupported_shapes_and_paths_are_errors() {
    let is_err = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Shape(_)));
    for b in BIsa::available() {
        for d in [1usize, 3, 33, 66, 128] {
            assert!(!bf16_supported(b, d), "{b:?} head_dim {d}");
            let qkv = vec![0.0; 4 * 3 * d];
            let mut out = vec![0.0; 4 * d];
            assert!(
                is_err(attention_bf16(b, &qkv, 4, 1, d, &mut out)),
                "{b:?} d={d}"
            );
        }
        if b.kind() != BIsaKind::Avx512Bf16 {
            assert!(!bf16_supported(b, 32));
            let qkv = vec![0.0; 4 * 3 * 32];
            let mut out = vec![0.0; 4 * 32];
            assert!(is_err(attention_bf16(b, &qkv, 4, 1, 32, &mut out)), "{b:?}");
        }
    }
    if let Some(b) = bisa() {
        assert!(bf16_supported(b, 32));
        // Lengths are checked before anything runs.
        let mut out = vec![0.0; 3 * 32];
        assert!(is_err(attention_bf16(b, &[0.0; 10], 3, 1, 32, &mut out)));
    }
}
