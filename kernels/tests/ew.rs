//! LayerNorm, softmax and GELU: every ISA vs the f64 references, and error paths.

mod common;

use common::*;
use e5embed_kernels::ew::softmax_scaled;
use e5embed_kernels::{
    gelu_erf, gelu_erf_reference, layernorm, layernorm_reference, softmax, softmax_reference, Isa,
    KernelError,
};

const COLS: [usize; 8] = [1, 7, 16, 17, 383, 384, 385, 1536];

#[test]
fn layernorm_all_isas() {
    for (ci, &cols) in COLS.iter().enumerate() {
        let rows = 3;
        let mut r = rng(ci as u64);
        // Rows with a large offset relative to their spread (as residual streams
        // have), which a one-pass E[x²] - E[x]² formula would get wrong.
        let mut x = uniform(&mut r, rows * cols, -2.0, 2.0);
        for (i, v) in x.iter_mut().enumerate() {
            *v += [0.0, 8.0, -30.0][i / cols];
        }
        let gamma = uniform(&mut r, cols, 0.5, 1.5);
        let beta = uniform(&mut r, cols, -0.5, 0.5);
        let mut want = x.clone();
        layernorm_reference(&mut want, cols, &gamma, &beta, 1e-12).unwrap();
        for isa in Isa::available() {
            let mut got = x.clone();
            layernorm(isa, &mut got, cols, &gamma, &beta, 1e-12).unwrap();
            assert_close(&format!("layernorm {isa} cols={cols}"), &got, &want, |i| {
                let j = i % cols;
                LN_TOL * (gamma[j].abs() + beta[j].abs() + want[i].abs()) as f64
            });
        }
    }
}

#[test]
fn layernorm_constant_row_gives_beta() {
    for isa in Isa::available() {
        let cols = 37;
        let gamma = vec![2.0; cols];
        let beta: Vec<f32> = (0..cols).map(|j| j as f32 * 0.25).collect();
        let mut x = vec![3.25f32; 2 * cols];
        layernorm(isa, &mut x, cols, &gamma, &beta, 1e-5).unwrap();
        assert_eq!(&x[..cols], &beta[..], "{isa}");
        assert_eq!(&x[cols..], &beta[..], "{isa}");
    }
}

#[test]
fn softmax_all_isas() {
    for (ci, &cols) in COLS.iter().enumerate() {
        let mut r = rng(100 + ci as u64);
        let rows = 4;
        let mut x = uniform(&mut r, rows * cols, -10.0, 10.0);
        // One row with a huge spread (underflow to ~0) and one row constant.
        for v in &mut x[cols..2 * cols] {
            *v *= 20.0;
        }
        for v in &mut x[2 * cols..3 * cols] {
            *v = 5.0;
        }
        let mut want = x.clone();
        softmax_reference(&mut want, cols).unwrap();
        for isa in Isa::available() {
            let mut got = x.clone();
            softmax(isa, &mut got, cols).unwrap();
            assert_close(&format!("softmax {isa} cols={cols}"), &got, &want, |i| {
                SOFTMAX_ABS + SOFTMAX_REL * want[i] as f64
            });
            for row in got.chunks(cols) {
                let s: f64 = row.iter().map(|&v| v as f64).sum();
                assert!((s - 1.0).abs() < 1e-5, "{isa} cols={cols}: sum {s}");
            }
        }
    }
}

#[test]
fn softmax_scaled_matches_prescaled() {
    let cols = 77;
    let mut r = rng(7);
    let x = uniform(&mut r, 2 * cols, -3.0, 3.0);
    let scale = 0.176_776_7;
    let mut want: Vec<f32> = x.iter().map(|v| v * scale).collect();
    softmax_reference(&mut want, cols).unwrap();
    for isa in Isa::available() {
        let mut got = x.clone();
        softmax_scaled(isa, &mut got, cols, scale).unwrap();
        assert_close(&format!("softmax_scaled {isa}"), &got, &want, |i| {
            SOFTMAX_ABS + SOFTMAX_REL * want[i] as f64
        });
    }
}

#[test]
fn gelu_all_isas() {
    let mut r = rng(3);
    // Dense grid over the interesting range, random values, and specials.
    let mut x: Vec<f32> = (0..=40_000).map(|i| -10.0 + i as f32 * 5e-4).collect();
    x.extend(uniform(&mut r, 10_000, -6.0, 6.0));
    x.extend_from_slice(&[
        0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 50.0, -50.0, 1e30, -1e30,
    ]);
    for len in [0usize, 1, 7, 17, 383, 384, 385, 1536, x.len()] {
        let xs = &x[x.len() - len..];
        let mut want = xs.to_vec();
        gelu_erf_reference(&mut want);
        for isa in Isa::available() {
            let mut got = xs.to_vec();
            gelu_erf(isa, &mut got);
            assert_close(&format!("gelu {isa} len={len}"), &got, &want, |i| {
                GELU_ABS + GELU_REL * (want[i] as f64).abs()
            });
        }
    }
    // Small |x|: the abs error is far below the budget (the brief's ~1e-6).
    for isa in Isa::available() {
        let xs: Vec<f32> = (0..=4000).map(|i| -2.0 + i as f32 * 1e-3).collect();
        let mut got = xs.clone();
        let mut want = xs.clone();
        gelu_erf(isa, &mut got);
        gelu_erf_reference(&mut want);
        assert_close(&format!("gelu {isa} |x|<=2"), &got, &want, |_| 5e-7);
    }
}

fn is_shape_err(r: Result<(), KernelError>) -> bool {
    matches!(r, Err(KernelError::Shape(_)))
}

#[test]
fn error_paths() {
    let g = [1.0f32; 4];
    let b = [0.0f32; 4];
    for isa in Isa::available() {
        let mut x = [1.0f32; 8];
        assert!(layernorm(isa, &mut x, 4, &g, &b, 1e-5).is_ok());
        assert!(is_shape_err(layernorm(isa, &mut x, 0, &g, &b, 1e-5)));
        assert!(is_shape_err(layernorm(
            isa,
            &mut x,
            3,
            &g[..3],
            &b[..3],
            1e-5
        )));
        assert!(is_shape_err(layernorm(isa, &mut x, 4, &g[..3], &b, 1e-5)));
        assert!(is_shape_err(layernorm(isa, &mut x, 4, &g, &b[..2], 1e-5)));
        assert!(is_shape_err(softmax(isa, &mut x, 0)));
        assert!(is_shape_err(softmax(isa, &mut x, 3)));
        assert!(softmax(isa, &mut x, 8).is_ok());
        assert!(softmax(isa, &mut [], 5).is_ok()); // zero rows
        assert!(layernorm(isa, &mut [], 4, &g, &b, 1e-5).is_ok());
        gelu_erf(isa, &mut []);
    }
    let mut x = [1.0f32; 8];
    assert!(is_shape_err(layernorm_reference(&mut x, 3, &g, &b, 1e-5)));
    assert!(is_shape_err(layernorm_reference(
        &mut x,
        4,
        &g[..1],
        &b,
        1e-5
    )));
    assert!(is_shape_err(softmax_reference(&mut x, 0)));
    assert!(is_shape_err(softmax_reference(&mut x, 5)));
}
