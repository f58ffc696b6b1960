//! Bitwise invariance of the GEMM (the engine relies on it): for a given ISA, one
//! row's result is identical whatever `m`, the row's position, row chunking, column
//! splits, thread count, or the driver (skinny / blocked).

mod common;

use common::*;
use e5embed_kernels::gemm::{self, SKINNY_MAX_M};
use e5embed_kernels::{
    gemm_f32, gemm_f32_cols, gemm_f32_par, gemm_f32_path, Epilogue, GemmPath, Isa, KernelError,
    PackedMatrix,
};

impl GemmOperands {
    /// Epilogue `e` (0..4) over rows `r0..r0+rows` of the residual.
    fn epi(&self, e: usize, r0: usize, rows: usize) -> Epilogue<'_> {
        match e % 4 {
            0 => Epilogue::None,
            1 => Epilogue::Bias(&self.bias),
            2 => Epilogue::BiasGelu(&self.bias),
            _ => Epilogue::BiasResidual {
                bias: &self.bias,
                residual: &self.res[r0 * self.n..(r0 + rows) * self.n],
            },
        }
    }

    fn full(&self, p: &PackedMatrix, e: usize, path: GemmPath) -> Vec<f32> {
        let mut c = vec![f32::NAN; self.m * self.n];
        gemm_f32_path(&self.a, self.m, p, &mut c, self.epi(e, 0, self.m), path).unwrap();
        c
    }

    /// Rows `r0..r0+rows` alone (a fresh A holding only them).
    fn rows(&self, p: &PackedMatrix, e: usize, r0: usize, rows: usize, path: GemmPath) -> Vec<f32> {
        let a = &self.a[r0 * self.k..(r0 + rows) * self.k];
        let mut c = vec![f32::NAN; rows * self.n];
        gemm_f32_path(a, rows, p, &mut c, self.epi(e, r0, rows), path).unwrap();
        c
    }
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if bits(got) != bits(want) {
        let i = (0..got.len())
            .find(|&i| got[i].to_bits() != want[i].to_bits())
            .unwrap();
        panic!("{what}: element {i}: {} vs {}", got[i], want[i]);
    }
}

const PATHS: [GemmPath; 3] = [GemmPath::Auto, GemmPath::Blocked, GemmPath::Skinny];

/// Every path, every row alone and in blocks at several positions, on the model's
/// shapes and odd ones, every epilogue (rotating), every ISA.
#[test]
fn rows_alone_equal_rows_in_batch_on_every_path() {
    let shapes = [
        (384, 384),
        (1152, 384),
        (1536, 384),
        (384, 1536),
        (100, 450),
        (33, 17),
        (7, 1),
    ];
    for isa in Isa::available() {
        for (si, &(n, k)) in shapes.iter().enumerate() {
            let m = 2 * SKINNY_MAX_M + 5; // both paths under Auto across sub-calls
            let d = GemmOperands::new(m, n, k, 7000 + si as u64);
            let p = PackedMatrix::pack(isa, &d.w, n, k).unwrap();
            for e in 0..4 {
                let e = e + si;
                let want = d.full(&p, e, GemmPath::Blocked);
                let what = |s: String| format!("{} n={n} k={k} epi={} {s}", p.kernel_name(), e % 4);
                for path in PATHS {
                    assert_bitwise(
                        &what(format!("{path:?} whole")),
                        &d.full(&p, e, path),
                        &want,
                    );
                }
                // Single rows at the start, middle, end; blocks straddling tiles; 13-16 rows
                // (AVX-512's one-pass tall tile).
                for (r0, rows) in [
                    (0, 1),
                    (m / 2, 1),
                    (m - 1, 1),
                    (3, 14),
                    (2, 13),
                    (30, 15),
                    (5, 16),
                    (1, 40),
                    (20, 49),
                ] {
                    for path in PATHS {
                        let got = d.rows(&p, e, r0, rows, path);
                        assert_bitwise(
                            &what(format!("{path:?} rows {r0}..{}", r0 + rows)),
                            &got,
                            &want[r0 * n..(r0 + rows) * n],
                        );
                    }
                }
            }
        }
    }
}

/// Larger M (several MC blocks on the blocked path; on a 2 MB L2 also several row
/// blocks of the skinny path: 372 rows at K = 700, 672 at K = 384) vs the skinny path,
/// and single rows (one row block) against the whole call.
#[test]
fn large_m_blocked_equals_skinny() {
    for isa in Isa::available() {
        for (m, n, k, e) in [(700, 96, 700, 3), (1500, 40, 384, 2)] {
            let d = GemmOperands::new(m, n, k, 11);
            let p = PackedMatrix::pack(isa, &d.w, d.n, d.k).unwrap();
            let want = d.full(&p, e, GemmPath::Skinny);
            assert_bitwise(
                &format!("{isa} {m}x{n}x{k}"),
                &d.full(&p, e, GemmPath::Blocked),
                &want,
            );
            for r in [517, m - 1] {
                let row = d.rows(&p, e, r, 1, GemmPath::Auto);
                assert_bitwise(&format!("{isa} row {r}"), &row, &want[r * n..(r + 1) * n]);
            }
        }
    }
}

/// Column ranges (`gemm_f32_cols`) and `gemm_f32_par` with 1-3 threads equal the
/// whole call, for skinny and large m.
#[test]
fn column_splits_and_par_equal_whole() {
    for isa in Isa::available() {
        let (_, nr) = gemm::tile(isa);
        for (m, n, k) in [
            (1, 1152, 384),
            (9, 384, 1536),
            (32, 200, 37),
            (77, 384, 384),
            // Both sides of gemm_f32_par's column/row split (COLUMN_SPLIT_MAX_M = 96).
            (gemm::COLUMN_SPLIT_MAX_M, 384, 1536),
            (gemm::COLUMN_SPLIT_MAX_M + 1, 96, 384),
        ] {
            let d = GemmOperands::new(m, n, k, (m * n + k) as u64);
            let p = PackedMatrix::pack(isa, &d.w, n, k).unwrap();
            for e in 0..4 {
                let want = d.full(&p, e, GemmPath::Auto);
                // Split at every multiple of NR in turn (two ranges), plus 3 ranges.
                let mut splits: Vec<Vec<usize>> =
                    (nr..n).step_by(nr).map(|s| vec![0, s, n]).collect();
                splits.push(vec![0, nr, (n / nr / 2) * nr + nr, n]);
                for cuts in splits {
                    let mut got = vec![f32::NAN; m * n];
                    for w in cuts.windows(2) {
                        let (c0, c1) = (w[0], w[1].max(w[0]).min(n));
                        let mut block = vec![f32::NAN; m * (c1 - c0)];
                        gemm_f32_cols(&d.a, m, &p, c0..c1, &mut block, d.epi(e, 0, m)).unwrap();
                        for i in 0..m {
                            got[i * n + c0..i * n + c1]
                                .copy_from_slice(&block[i * (c1 - c0)..(i + 1) * (c1 - c0)]);
                        }
                    }
                    assert_bitwise(&format!("{isa} {m}x{n}x{k} cols {cuts:?}"), &got, &want);
                }
                for threads in 1..=3 {
                    let mut got = vec![f32::NAN; m * n];
                    gemm_f32_par(&d.a, m, &p, &mut got, d.epi(e, 0, m), threads).unwrap();
                    assert_bitwise(&format!("{isa} {m}x{n}x{k} par {threads}"), &got, &want);
                }
            }
        }
    }
}

/// Same for a real 2-thread rayon pool (the engine's setting).
#[test]
fn par_in_a_two_thread_pool() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for isa in Isa::available() {
        for m in [1, 16, 100] {
            let d = GemmOperands::new(m, 1536, 384, 99 + m as u64);
            let p = PackedMatrix::pack(isa, &d.w, d.n, d.k).unwrap();
            let mut want = vec![0.0; m * d.n];
            gemm_f32(&d.a, m, &p, &mut want, d.epi(2, 0, m)).unwrap();
            let mut got = vec![f32::NAN; m * d.n];
            pool.install(|| gemm_f32_par(&d.a, m, &p, &mut got, d.epi(2, 0, m), 2))
                .unwrap();
            assert_bitwise(&format!("{isa} m={m} pool"), &got, &want);
        }
    }
}

#[test]
fn cols_error_paths() {
    for isa in Isa::available() {
        let (_, nr) = gemm::tile(isa);
        let n = 2 * nr + 3;
        let d = GemmOperands::new(2, n, 5, 1);
        let p = PackedMatrix::pack(isa, &d.w, n, 5).unwrap();
        let err = |cols: std::ops::Range<usize>, len: usize| {
            matches!(
                gemm_f32_cols(&d.a, 2, &p, cols, &mut vec![0.0; len], Epilogue::None),
                Err(KernelError::Shape(_))
            )
        };
        assert!(err(1..nr, 2 * (nr - 1)), "start not a multiple of NR");
        assert!(
            err(0..nr + 1, 2 * (nr + 1)),
            "end not a multiple of NR nor n"
        );
        assert!(err(0..n + 1, 2 * (n + 1)), "past n");
        assert!(err(0..nr, 2 * nr + 1), "block length");
        assert!(!err(nr..n, 2 * (n - nr)));
        assert!(!err(nr..nr, 0), "empty range is fine");
        // Full operands required for the epilogue even for a column range.
        let r = gemm_f32_cols(
            &d.a,
            2,
            &p,
            0..nr,
            &mut vec![0.0; 2 * nr],
            Epilogue::Bias(&d.bias[..nr]),
        );
        assert!(matches!(r, Err(KernelError::Shape(_))));
    }
}
