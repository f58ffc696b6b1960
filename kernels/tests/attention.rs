//! Attention: every ISA vs the f64 reference, model config over sequence lengths
//! 1..512 and small odd configs; error paths.

mod common;

use common::*;
use e5embed_kernels::{attention_f32, attention_reference, Isa, KernelError};

fn check(seq: usize, heads: usize, head_dim: usize, seed: u64) {
    let h_all = heads * head_dim;
    let mut r = rng(seed);
    let qkv = uniform(&mut r, seq * 3 * h_all, -2.0, 2.0);
    let mut want = vec![f32::NAN; seq * h_all];
    attention_reference(&qkv, seq, heads, head_dim, &mut want).unwrap();
    for isa in Isa::available() {
        let mut got = vec![f32::NAN; seq * h_all];
        attention_f32(isa, &qkv, seq, heads, head_dim, &mut got).unwrap();
        let what = format!("attention {isa} seq={seq} heads={heads} head_dim={head_dim}");
        // |v| <= 2 and the output is a convex combination of v rows.
        assert_close(&what, &got, &want, |_| ATTN_TOL * 2.0);
    }
}

#[test]
fn model_config_all_lengths() {
    for (i, seq) in [
        // 16, 40, 48: query blocks of at most one vector of queries (AVX-512: a whole
        // short text, a tail of 8, a tail of exactly 16) take the half-width QKᵀ tile.
        0usize, 1, 2, 7, 12, 13, 16, 17, 31, 32, 33, 40, 48, 64, 128, 383, 385, 512,
    ]
    .into_iter()
    .enumerate()
    {
        check(seq, 12, 32, i as u64);
    }
}

#[test]
fn odd_configs() {
    check(1, 1, 1, 10);
    check(13, 3, 5, 11);
    check(50, 2, 48, 12);
    check(97, 1, 17, 13);
    check(33, 5, 64, 14);
    // Head widths around the vector tiles (2 x 8 / 2 x 16 columns): padded V columns,
    // 1-3 column groups; query counts around the 2/16/32-query blocks and the
    // 4/6/12-key tiles.
    check(31, 2, 16, 15);
    check(33, 2, 33, 16);
    check(65, 1, 96, 17);
    check(49, 3, 31, 18);
}

/// Large logits: one key dominates; the softmax must not overflow.
#[test]
fn peaked_scores() {
    let (seq, heads, d) = (40, 2, 32);
    let h_all = heads * d;
    let mut r = rng(5);
    let mut qkv = uniform(&mut r, seq * 3 * h_all, -1.0, 1.0);
    for v in qkv.iter_mut().take(seq * 3 * h_all) {
        *v *= 30.0;
    }
    let mut want = vec![0.0; seq * h_all];
    attention_reference(&qkv, seq, heads, d, &mut want).unwrap();
    for isa in Isa::available() {
        let mut got = vec![0.0; seq * h_all];
        attention_f32(isa, &qkv, seq, heads, d, &mut got).unwrap();
        // Logits up to ~5000: exp's argument carries their f32 rounding (~3e-4 abs),
        // so the probabilities move by that relative amount; |v| <= 30.
        assert_close(&format!("peaked {isa}"), &got, &want, |_| 30.0 * 1e-5);
    }
}

/// Threads run attention concurrently with their own scratch.
#[test]
fn concurrent_calls() {
    let (seq, heads, d) = (70, 12, 32);
    let h_all = heads * d;
    let qkv = uniform(&mut rng(9), seq * 3 * h_all, -2.0, 2.0);
    let mut want = vec![0.0; seq * h_all];
    attention_reference(&qkv, seq, heads, d, &mut want).unwrap();
    let isa = Isa::best();
    std::thread::scope(|s| {
        for t in 0..3 {
            let (qkv, want) = (&qkv, &want);
            s.spawn(move || {
                // Different lengths first so the scratch is resized in between.
                let mut small = vec![0.0; 5 * h_all];
                let q5: Vec<f32> = qkv[..5 * 3 * h_all].to_vec();
                attention_f32(isa, &q5, 5, heads, d, &mut small).unwrap();
                let mut got = vec![0.0; seq * h_all];
                attention_f32(isa, qkv, seq, heads, d, &mut got).unwrap();
                assert_close(&format!("thread {t}"), &got, want, |_| ATTN_TOL * 2.0);
            });
        }
    });
}

fn is_shape_err(r: Result<(), KernelError>) -> bool {
    matches!(r, Err(KernelError::Shape(_)))
}

#[test]
fn error_paths() {
    let qkv = vec![0.0f32; 4 * 3 * 8];
    let mut out = vec![0.0f32; 4 * 8];
    for isa in Isa::available() {
        assert!(attention_f32(isa, &qkv, 4, 2, 4, &mut out).is_ok());
        assert!(is_shape_err(attention_f32(
            isa,
            &qkv,
            4,
            2,
            4,
            &mut out[..31]
        )));
        assert!(is_shape_err(attention_f32(
            isa,
            &qkv[..95],
            4,
            2,
            4,
            &mut out
        )));
        assert!(is_shape_err(attention_f32(isa, &qkv, 3, 2, 4, &mut out)));
        assert!(is_shape_err(attention_f32(isa, &qkv, 4, 0, 4, &mut out)));
        assert!(is_shape_err(attention_f32(isa, &qkv, 4, 2, 0, &mut out)));
        assert!(attention_f32(isa, &[], 0, 2, 4, &mut []).is_ok());
    }
    assert!(is_shape_err(attention_reference(
        &qkv,
        4,
        2,
        4,
        &mut out[..1]
    )));
    assert!(is_shape_err(attention_reference(&qkv, 4, 8, 4, &mut out)));
}

#[test]
fn kernel_name_matches_block_size() {
    for isa in Isa::available() {
        let qb = e5embed_kernels::attention::query_block(isa);
        let name = e5embed_kernels::attention::kernel_name(isa);
        assert_eq!(name, format!("attention_f32_{}_qb{qb}", isa.name()));
    }
}

/// Head ranges (`attention_f32_heads`) are bitwise equal to the same heads' columns
/// of the whole call, for any split, and run concurrently.
#[test]
fn head_ranges_bitwise_equal_whole() {
    use e5embed_kernels::attention_f32_heads;
    let (heads, d) = (12, 32);
    let h_all = heads * d;
    for (i, seq) in [1usize, 17, 130].into_iter().enumerate() {
        let qkv = uniform(&mut rng(40 + i as u64), seq * 3 * h_all, -2.0, 2.0);
        for isa in Isa::available() {
            let mut whole = vec![f32::NAN; seq * h_all];
            attention_f32(isa, &qkv, seq, heads, d, &mut whole).unwrap();
            for cuts in [
                vec![0, 6, 12],
                vec![0, 1, 5, 12],
                vec![0, 12],
                vec![0, 11, 12],
            ] {
                let mut blocks: Vec<Vec<f32>> = cuts
                    .windows(2)
                    .map(|w| vec![f32::NAN; seq * (w[1] - w[0]) * d])
                    .collect();
                std::thread::scope(|s| {
                    for (w, block) in cuts.windows(2).zip(blocks.iter_mut()) {
                        let qkv = &qkv;
                        let r = w[0]..w[1];
                        s.spawn(move || {
                            attention_f32_heads(isa, qkv, seq, heads, d, r, block).unwrap()
                        });
                    }
                });
                for (w, block) in cuts.windows(2).zip(&blocks) {
                    let bw = (w[1] - w[0]) * d;
                    for row in 0..seq {
                        let got = &block[row * bw..(row + 1) * bw];
                        let want = &whole[row * h_all + w[0] * d..row * h_all + w[1] * d];
                        assert!(
                            got.iter()
                                .zip(want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{isa} seq={seq} heads {w:?} row {row}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn head_range_error_paths() {
    use e5embed_kernels::attention_f32_heads;
    let isa = Isa::best();
    let qkv = vec![0.0f32; 4 * 3 * 64];
    let shape = |r: Result<(), KernelError>| matches!(r, Err(KernelError::Shape(_)));
    assert!(shape(attention_f32_heads(
        isa,
        &qkv,
        4,
        2,
        32,
        1..3,
        &mut [0.0; 256]
    )));
    assert!(shape(attention_f32_heads(
        isa,
        &qkv,
        4,
        2,
        32,
        0..1,
        &mut [0.0; 100]
    )));
    assert!(shape(attention_f32_heads(
        isa,
        &qkv[..10],
        4,
        2,
        32,
        0..1,
        &mut [0.0; 128]
    )));
    assert!(attention_f32_heads(isa, &qkv, 4, 2, 32, 1..2, &mut [0.0; 128]).is_ok());
    assert!(attention_f32_heads(isa, &qkv, 4, 2, 32, 1..1, &mut []).is_ok());
}

/// `attention_f32_par` (heads split across a rayon pool, written in place) is bitwise
/// equal to `attention_f32` for any thread count, on every ISA path, at awkward lengths.
#[test]
fn parallel_heads_bitwise_equal_whole() {
    use e5embed_kernels::attention_f32_par;
    let (heads, d) = (12, 32);
    let h_all = heads * d;
    for (i, seq) in [1usize, 7, 17, 130, 383].into_iter().enumerate() {
        let qkv = uniform(&mut rng(60 + i as u64), seq * 3 * h_all, -2.0, 2.0);
        for isa in Isa::available() {
            let mut whole = vec![f32::NAN; seq * h_all];
            attention_f32(isa, &qkv, seq, heads, d, &mut whole).unwrap();
            for threads in [1usize, 2, 3, 5, 12, 16] {
                let mut out = vec![f32::NAN; seq * h_all];
                pool(threads)
                    .install(|| attention_f32_par(isa, &qkv, seq, heads, d, &mut out, threads))
                    .unwrap();
                assert_bitwise(&format!("{isa} seq={seq} threads={threads}"), &out, &whole);
            }
            // Shape errors are reported, not panics.
            let mut short = vec![0.0; seq * h_all - 1];
            assert!(attention_f32_par(isa, &qkv, seq, heads, d, &mut short, 2).is_err());
        }
    }
}
