//! Small, odd shapes through every kernel's safe wrapper, cheap enough for Miri:
//! `tools/sanitize` runs this file under `cargo +nightly miri test`, where std's feature
//! detection reports no AVX, so only the scalar paths run (the generic `Simd` kernels
//! instantiated with `Scalar`: the GEMM microkernel and drivers, fused attention, the row
//! kernels, plus the scalar int8 / bf16 GEMMs). Miri then fails the test on any pointer
//! arithmetic that leaves its allocation (even if never dereferenced), any out-of-bounds
//! or uninitialised read, any data race of the `*_par` splits. Natively, the same shapes
//! run on every ISA path this CPU has and are checked against the references, so the file
//! also guards the edge tiles of the SIMD paths (ASan: `tools/sanitize`).
//!
//! The shapes are chosen for the edges: odd query counts (a padded query lane in the last
//! block: `attention/fused.rs` once computed `qkv + (q0 + i)·ld + q_off` for those lanes,
//! past the end of `qkv` for every head but the first), head widths that are not a multiple
//! of the vector pair (the P·V tiles' column groups), sequences that are a multiple of the
//! key tile (no zero rows of slack after the score block), GEMM row counts around the tiles.

mod common;

use common::*;
use e5embed_kernels::bgemm::{gemm_bf16, gemm_bf16_reference, BIsa, Bf16Matrix};
use e5embed_kernels::qgemm::{
    gemm_u8s8, gemm_u8s8_reference, padded_k, quantize_rows, QIsa, QuantizedMatrix,
};
use e5embed_kernels::{
    attention_f32, attention_f32_heads, attention_f32_par, attention_reference, gelu_erf,
    gelu_erf_reference, gemm_f32_par, gemm_f32_path, gemm_f32_reference, layernorm,
    layernorm_reference, softmax, softmax_reference, Epilogue, GemmPath, Isa, PackedMatrix,
};

fn isas() -> Vec<Isa> {
    let v = Isa::available();
    if cfg!(miri) {
        assert_eq!(
            v,
            vec![Isa::scalar()],
            "Miri should only see the scalar path"
        );
    }
    v
}

/// (seq, heads, head_dim): odd seq (a padded query lane in the last block of two on the
/// scalar path), several heads (the padded lane's address passed the end from head 1 on),
/// head_dim not a multiple of 2 / 16 / 32, seq a multiple of every key tile (4, 6, 12).
const ATTN_SHAPES: [(usize, usize, usize); 7] = [
    (1, 2, 4),
    (3, 2, 5),
    (5, 3, 8),
    (12, 2, 3),
    (13, 2, 17),
    (2, 1, 33),
    (24, 2, 2),
];

#[test]
fn attention_small_shapes() {
    for (i, &(seq, heads, d)) in ATTN_SHAPES.iter().enumerate() {
        let h_all = heads * d;
        let qkv = uniform(&mut rng(100 + i as u64), seq * 3 * h_all, -2.0, 2.0);
        let mut want = vec![0.0; seq * h_all];
        attention_reference(&qkv, seq, heads, d, &mut want).unwrap();
        for isa in isas() {
            let what = format!("attention {isa} seq={seq} heads={heads} d={d}");
            let mut got = vec![f32::NAN; seq * h_all];
            attention_f32(isa, &qkv, seq, heads, d, &mut got).unwrap();
            assert_close(&what, &got, &want, |_| ATTN_TOL * 2.0);
            // The last head alone, into a block of its columns.
            let mut block = vec![f32::NAN; seq * d];
            attention_f32_heads(isa, &qkv, seq, heads, d, heads - 1..heads, &mut block).unwrap();
            let last: Vec<f32> = want
                .chunks_exact(h_all)
                .flat_map(|row| row[(heads - 1) * d..].iter().copied())
                .collect();
            assert_close(&format!("{what} last head"), &block, &last, |_| {
                ATTN_TOL * 2.0
            });
        }
    }
}

#[test]
fn attention_par_small() {
    let (seq, heads, d) = (5, 3, 5);
    let h_all = heads * d;
    let qkv = uniform(&mut rng(7), seq * 3 * h_all, -2.0, 2.0);
    let mut want = vec![0.0; seq * h_all];
    attention_reference(&qkv, seq, heads, d, &mut want).unwrap();
    let pool = pool(2);
    for isa in isas() {
        let mut got = vec![f32::NAN; seq * h_all];
        pool.install(|| attention_f32_par(isa, &qkv, seq, heads, d, &mut got, 2))
            .unwrap();
        assert_close(&format!("attention_par {isa}"), &got, &want, |_| {
            ATTN_TOL * 2.0
        });
    }
}

/// (m, n, k): one row; rows around the scalar/AVX2/AVX-512 tiles (and 13: the AVX-512
/// one-pass tall tile); n a panel plus a few columns; k = 1 and odd k (unroll remainder).
const GEMM_SHAPES: [(usize, usize, usize); 6] = [
    (1, 5, 3),
    (3, 17, 1),
    (6, 9, 7),
    (13, 33, 5),
    (17, 40, 9),
    (4, 70, 6),
];

fn epilogues<'a>(bias: &'a [f32], res: &'a [f32]) -> [(&'static str, Epilogue<'a>); 4] {
    [
        ("none", Epilogue::None),
        ("bias", Epilogue::Bias(bias)),
        ("bias+gelu", Epilogue::BiasGelu(bias)),
        (
            "bias+residual",
            Epilogue::BiasResidual {
                bias,
                residual: res,
            },
        ),
    ]
}

/// Loose: these tests are about addresses; the accuracy budgets live in gemm.rs.
fn gemm_tol(want: &[f32], k: usize) -> impl Fn(usize) -> f64 + '_ {
    move |i| 1e-5 * (k as f64 + 4.0) * (1.0 + want[i].abs() as f64)
}

#[test]
fn gemm_f32_small_shapes() {
    for (s, &(m, n, k)) in GEMM_SHAPES.iter().enumerate() {
        let op = GemmOperands::new(m, n, k, 200 + s as u64);
        for isa in isas() {
            let b = PackedMatrix::pack(isa, &op.w, n, k).unwrap();
            for (name, epi) in epilogues(&op.bias, &op.res) {
                let mut want = vec![0.0; m * n];
                gemm_f32_reference(&op.a, m, &op.w, n, k, &mut want, epi).unwrap();
                for path in [GemmPath::Blocked, GemmPath::Skinny] {
                    let what = format!("gemm {isa} {path:?} {name} {m}x{n}x{k}");
                    let mut got = vec![f32::NAN; m * n];
                    gemm_f32_path(&op.a, m, &b, &mut got, epi, path).unwrap();
                    assert_close(&what, &got, &want, gemm_tol(&want, k));
                }
            }
        }
    }
}

#[test]
fn gemm_f32_par_small() {
    let (m, n, k) = (3, 40, 5);
    let op = GemmOperands::new(m, n, k, 9);
    let pool = pool(2);
    for isa in isas() {
        let b = PackedMatrix::pack(isa, &op.w, n, k).unwrap();
        let epi = Epilogue::BiasResidual {
            bias: &op.bias,
            residual: &op.res,
        };
        let mut want = vec![0.0; m * n];
        gemm_f32_reference(&op.a, m, &op.w, n, k, &mut want, epi).unwrap();
        let mut got = vec![f32::NAN; m * n];
        pool.install(|| gemm_f32_par(&op.a, m, &b, &mut got, epi, 2))
            .unwrap();
        assert_close(&format!("gemm_par {isa}"), &got, &want, gemm_tol(&want, k));
    }
}

#[test]
fn row_kernels_small() {
    for cols in [1usize, 2, 3, 7, 8, 9, 15, 16, 17, 33] {
        let rows = 2;
        let mut r = rng(300 + cols as u64);
        let x = uniform(&mut r, rows * cols, -3.0, 3.0);
        let gamma = uniform(&mut r, cols, 0.5, 1.5);
        let beta = uniform(&mut r, cols, -0.5, 0.5);
        for isa in isas() {
            let what = format!("{isa} cols={cols}");
            let mut want = x.clone();
            layernorm_reference(&mut want, cols, &gamma, &beta, 1e-12).unwrap();
            let mut got = x.clone();
            layernorm(isa, &mut got, cols, &gamma, &beta, 1e-12).unwrap();
            assert_close(&format!("layernorm {what}"), &got, &want, |i| {
                LN_TOL * (1.0 + 2.0 * want[i].abs() as f64)
            });

            let mut want = x.clone();
            softmax_reference(&mut want, cols).unwrap();
            let mut got = x.clone();
            softmax(isa, &mut got, cols).unwrap();
            assert_close(&format!("softmax {what}"), &got, &want, |i| {
                SOFTMAX_ABS + SOFTMAX_REL * want[i] as f64
            });

            let mut want = x.clone();
            gelu_erf_reference(&mut want);
            let mut got = x.clone();
            gelu_erf(isa, &mut got);
            assert_close(&format!("gelu {what}"), &got, &want, |i| {
                GELU_ABS + GELU_REL * want[i].abs() as f64
            });
        }
    }
}

#[test]
fn int8_gemm_small_shapes() {
    for (s, &(m, n, k)) in GEMM_SHAPES.iter().enumerate() {
        let op = GemmOperands::new(m, n, k, 400 + s as u64);
        for qisa in QIsa::available() {
            let b = QuantizedMatrix::quantize(qisa, &op.w, n, k).unwrap();
            let mut aq = vec![0u8; m * padded_k(k)];
            let mut sa = vec![0f32; m];
            quantize_rows(qisa, &op.a, m, k, &mut aq, &mut sa).unwrap();
            for (name, epi) in epilogues(&op.bias, &op.res) {
                let mut want = vec![0.0; m * n];
                gemm_u8s8_reference(&aq, &sa, m, &b, &mut want, epi).unwrap();
                let mut got = vec![f32::NAN; m * n];
                gemm_u8s8(&aq, &sa, m, &b, &mut got, epi).unwrap();
                let what = format!("qgemm {} {name} {m}x{n}x{k}", qisa.name());
                assert_close(&what, &got, &want, gemm_tol(&want, k));
            }
        }
    }
}

#[test]
fn bf16_gemm_small_shapes() {
    for (s, &(m, n, k)) in GEMM_SHAPES.iter().enumerate() {
        let op = GemmOperands::new(m, n, k, 500 + s as u64);
        for bisa in BIsa::available() {
            let b = Bf16Matrix::from_f32(bisa, &op.w, n, k).unwrap();
            for (name, epi) in epilogues(&op.bias, &op.res) {
                let mut want = vec![0.0; m * n];
                gemm_bf16_reference(&op.a, m, &op.w, n, k, &mut want, epi).unwrap();
                let mut got = vec![f32::NAN; m * n];
                gemm_bf16(&op.a, m, &b, &mut got, epi).unwrap();
                // Inputs rounded to bf16 on some paths and not others: 2^-8 relative.
                let what = format!("bgemm {} {name} {m}x{n}x{k}", bisa.name());
                assert_close(&what, &got, &want, |i| {
                    1e-2 * (k as f64) * (1.0 + want[i].abs() as f64)
                });
            }
        }
    }
}
