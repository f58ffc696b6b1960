//! GEMM: every ISA path vs the f64 reference over edge and model shapes, every
//! epilogue, row-chunked calls, and the error paths.

mod common;

use common::*;
use e5embed_kernels::{gemm_f32, gemm_f32_reference, Epilogue, Isa, KernelError, PackedMatrix};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Epi {
    None,
    Bias,
    BiasGelu,
    BiasResidual,
}
const EPIS: [Epi; 4] = [Epi::None, Epi::Bias, Epi::BiasGelu, Epi::BiasResidual];

impl GemmOperands {
    fn epilogue(&self, e: Epi) -> Epilogue<'_> {
        match e {
            Epi::None => Epilogue::None,
            Epi::Bias => Epilogue::Bias(&self.bias),
            Epi::BiasGelu => Epilogue::BiasGelu(&self.bias),
            Epi::BiasResidual => Epilogue::BiasResidual {
                bias: &self.bias,
                residual: &self.res,
            },
        }
    }

    /// Per-element tolerance from the named budgets.
    fn tolerance(&self, e: Epi, reference: &[f32]) -> Vec<f64> {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut tol = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let abs_sum: f64 = (0..k)
                    .map(|q| (self.a[i * k + q] as f64 * self.w[j * k + q] as f64).abs())
                    .sum();
                let gemm = GEMM_F32_REL * (k as f64).sqrt() * abs_sum;
                let r = reference[i * n + j] as f64;
                let b = self.bias[j] as f64;
                tol[i * n + j] = match e {
                    Epi::None => gemm + EPI_REL * r.abs(),
                    Epi::Bias => gemm + EPI_REL * (r.abs() + b.abs()),
                    Epi::BiasGelu => {
                        GELU_LIPSCHITZ * (gemm + EPI_REL * (r.abs() + b.abs()))
                            + GELU_ABS
                            + GELU_REL * r.abs()
                    }
                    Epi::BiasResidual => {
                        gemm + EPI_REL * (r.abs() + b.abs() + (self.res[i * n + j] as f64).abs())
                    }
                };
            }
        }
        tol
    }

    fn check(&self, e: Epi, isas: &[Isa]) {
        let (m, n, k) = (self.m, self.n, self.k);
        let mut want = vec![f32::NAN; m * n];
        gemm_f32_reference(&self.a, m, &self.w, n, k, &mut want, self.epilogue(e)).unwrap();
        let tol = self.tolerance(e, &want);
        for &isa in isas {
            let p = PackedMatrix::pack(isa, &self.w, n, k).unwrap();
            assert_eq!((p.n(), p.k(), p.isa()), (n, k, isa));
            // NaN-filled output: the kernel must write every element.
            let mut got = vec![f32::NAN; m * n];
            gemm_f32(&self.a, m, &p, &mut got, self.epilogue(e)).unwrap();
            let what = format!("{} m={m} n={n} k={k} {e:?}", p.kernel_name());
            assert_close(&what, &got, &want, |i| tol[i]);
        }
    }
}

const MS: [usize; 14] = [0, 1, 2, 7, 13, 15, 16, 17, 31, 32, 33, 128, 383, 385];

#[test]
fn small_shapes_all_m_all_epilogues_all_isas() {
    let isas = Isa::available();
    for (si, &(n, k)) in [(1, 1), (7, 5), (17, 33), (33, 17), (100, 450)]
        .iter()
        .enumerate()
    {
        for (mi, &m) in MS.iter().enumerate() {
            let case = GemmOperands::new(m, n, k, (si * 100 + mi) as u64);
            for e in EPIS {
                case.check(e, &isas);
            }
        }
    }
}

/// The model's (N, K). M trimmed to keep the f64 reference fast in debug: tile
/// edges for every ISA (MR = 4/6/12), MC edges (383/385 > MC), every epilogue at
/// least once per shape (rotating).
#[test]
fn model_shapes_all_isas() {
    let isas = Isa::available();
    let shapes = [(384, 384), (1152, 384), (1536, 384), (384, 1536)];
    for (si, &(n, k)) in shapes.iter().enumerate() {
        let ms: &[usize] = if n * k <= 384 * 384 {
            &[0, 1, 2, 7, 13, 17, 33, 128, 383, 385]
        } else {
            &[1, 7, 13, 16, 25, 33]
        };
        for (mi, &m) in ms.iter().enumerate() {
            let case = GemmOperands::new(m, n, k, 1000 + (si * 100 + mi) as u64);
            case.check(EPIS[(si + mi) % 4], &isas);
        }
    }
}

/// N beyond NC (3072) exercises the outer column-block loop.
#[test]
fn wide_n_beyond_nc() {
    let case = GemmOperands::new(5, 3100, 9, 7);
    for e in EPIS {
        case.check(e, &Isa::available());
    }
    let case = GemmOperands::new(14, 3100, 3, 8);
    case.check(Epi::BiasResidual, &Isa::available());
}

/// The engine splits M across threads: row sub-slices (with the matching residual
/// rows) must give exactly the same result as one call, and run concurrently.
#[test]
fn row_chunks_match_whole_and_threads() {
    let (m, n, k) = (97, 384, 384);
    let case = GemmOperands::new(m, n, k, 42);
    for isa in Isa::available() {
        let p = PackedMatrix::pack(isa, &case.w, n, k).unwrap();
        let mut whole = vec![0.0; m * n];
        gemm_f32(&case.a, m, &p, &mut whole, case.epilogue(Epi::BiasResidual)).unwrap();
        let mut chunked = vec![0.0; m * n];
        std::thread::scope(|s| {
            let mut rest: &mut [f32] = &mut chunked;
            let mut row = 0;
            for rows in [1, 30, 13, 53] {
                let (c, tail) = rest.split_at_mut(rows * n);
                rest = tail;
                let (a, res, bias, p) = (&case.a, &case.res, &case.bias, &p);
                s.spawn(move || {
                    let epi = Epilogue::BiasResidual {
                        bias,
                        residual: &res[row * n..(row + rows) * n],
                    };
                    gemm_f32(&a[row * k..(row + rows) * k], rows, p, c, epi).unwrap();
                });
                row += rows;
            }
            assert_eq!(row, m);
        });
        assert_eq!(whole, chunked, "{}", p.kernel_name());
    }
}

/// k = 0: C = epilogue(0); n = 0 and m = 0 are no-ops.
#[test]
fn degenerate_dims() {
    for isa in Isa::available() {
        let bias = [0.5f32, -1.0, 2.0];
        let res = [1.0f32, 1.0, 1.0, 2.0, 2.0, 2.0];
        let p = PackedMatrix::pack(isa, &[], 3, 0).unwrap();
        let mut c = vec![f32::NAN; 6];
        let epi = Epilogue::BiasResidual {
            bias: &bias,
            residual: &res,
        };
        gemm_f32(&[], 2, &p, &mut c, epi).unwrap();
        assert_eq!(c, [1.5, 0.0, 3.0, 2.5, 1.0, 4.0]);
        gemm_f32(&[], 2, &p, &mut c, Epilogue::None).unwrap();
        assert_eq!(c, [0.0; 6]);
        let p = PackedMatrix::pack(isa, &[], 0, 4).unwrap();
        gemm_f32(&[1.0; 8], 2, &p, &mut [], Epilogue::None).unwrap();
        let p = PackedMatrix::pack(isa, &[1.0; 12], 3, 4).unwrap();
        gemm_f32(&[], 0, &p, &mut [], Epilogue::Bias(&bias)).unwrap();
    }
}

/// The reference itself on a hand-computed case (so a broken reference fails too).
#[test]
fn reference_hand_computed() {
    // A = [[1, 2], [3, 4]], W = [[1, 0], [1, -1], [2, 1]] -> A·Wᵀ = [[1, -1, 4], [3, -1, 10]]
    let a = [1.0, 2.0, 3.0, 4.0];
    let w = [1.0, 0.0, 1.0, -1.0, 2.0, 1.0];
    let mut c = [0.0f32; 6];
    gemm_f32_reference(&a, 2, &w, 3, 2, &mut c, Epilogue::None).unwrap();
    assert_eq!(c, [1.0, -1.0, 4.0, 3.0, -1.0, 10.0]);
    let bias = [1.0, 1.0, -4.0];
    gemm_f32_reference(&a, 2, &w, 3, 2, &mut c, Epilogue::BiasGelu(&bias)).unwrap();
    // gelu(2) = 1.9544997, gelu(0) = 0, gelu(4) = 3.9998732, gelu(6) = 5.999999...
    let want = [1.9544997f32, 0.0, 0.0, 3.9998732, 0.0, 5.9999995];
    for (g, w) in c.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{c:?}");
    }
}

#[test]
fn kernel_names_carry_isa_type_tile() {
    for isa in Isa::available() {
        let p = PackedMatrix::pack(isa, &[0.0; 6], 2, 3).unwrap();
        let name = p.kernel_name();
        assert!(
            name.starts_with(&format!("gemm_f32_{}_", isa.name())),
            "{name}"
        );
        assert_eq!(name.split('_').count(), 4, "{name}");
        assert!(p.panel_width() >= 8);
    }
}

fn is_shape_err<T: std::fmt::Debug>(r: Result<T, KernelError>) -> bool {
    matches!(r, Err(KernelError::Shape(_)))
}

#[test]
fn error_paths() {
    for isa in Isa::available() {
        assert!(is_shape_err(PackedMatrix::pack(isa, &[0.0; 5], 2, 3)));
        assert!(is_shape_err(PackedMatrix::pack(isa, &[0.0; 7], 2, 3)));
        assert!(is_shape_err(PackedMatrix::pack(isa, &[], usize::MAX, 2)));
        let p = PackedMatrix::pack(isa, &[0.0; 6], 2, 3).unwrap(); // n = 2, k = 3
        let a = [0.0f32; 12]; // m = 4
        let mut c = [0.0f32; 8];
        let bias = [0.0f32; 2];
        let res = [0.0f32; 8];
        let ok = Epilogue::Bias(&bias);
        assert!(gemm_f32(&a, 4, &p, &mut c, ok).is_ok());
        assert!(is_shape_err(gemm_f32(&a[..11], 4, &p, &mut c, ok)));
        assert!(is_shape_err(gemm_f32(&a, 3, &p, &mut c, ok)));
        assert!(is_shape_err(gemm_f32(&a, 4, &p, &mut c[..7], ok)));
        assert!(is_shape_err(gemm_f32(&a, 4, &p, &mut [0.0; 9], ok)));
        assert!(is_shape_err(gemm_f32(
            &a,
            4,
            &p,
            &mut c,
            Epilogue::Bias(&[0.0; 3])
        )));
        assert!(is_shape_err(gemm_f32(
            &a,
            4,
            &p,
            &mut c,
            Epilogue::BiasGelu(&[0.0])
        )));
        let bad_res = Epilogue::BiasResidual {
            bias: &bias,
            residual: &res[..6],
        };
        assert!(is_shape_err(gemm_f32(&a, 4, &p, &mut c, bad_res)));
        let bad_bias = Epilogue::BiasResidual {
            bias: &[],
            residual: &res,
        };
        assert!(is_shape_err(gemm_f32(&a, 4, &p, &mut c, bad_bias)));
        // Reference validates too.
        let w = [0.0f32; 6];
        assert!(gemm_f32_reference(&a, 4, &w, 2, 3, &mut c, ok).is_ok());
        assert!(is_shape_err(gemm_f32_reference(
            &a,
            4,
            &w[..5],
            2,
            3,
            &mut c,
            ok
        )));
        assert!(is_shape_err(gemm_f32_reference(
            &a,
            4,
            &w,
            2,
            3,
            &mut c[..7],
            ok
        )));
        assert!(is_shape_err(gemm_f32_reference(
            &a[..10],
            4,
            &w,
            2,
            3,
            &mut c,
            ok
        )));
        let e = gemm_f32(&a, 4, &p, &mut c[..7], ok).unwrap_err();
        assert!(e.to_string().contains("c has 7 floats"), "{e}");
    }
}

#[test]
fn overflowing_dims_are_errors_not_panics() {
    let isa = Isa::best();
    assert!(is_shape_err(PackedMatrix::pack(isa, &[], usize::MAX, 2)));
    assert!(is_shape_err(PackedMatrix::pack(
        isa,
        &[],
        usize::MAX / 2,
        2
    )));
    let p = PackedMatrix::pack(isa, &[0.0; 6], 2, 3).unwrap();
    assert!(is_shape_err(gemm_f32(
        &[],
        usize::MAX,
        &p,
        &mut [],
        Epilogue::None
    )));
    assert!(is_shape_err(gemm_f32_reference(
        &[],
        usize::MAX,
        &[0.0; 6],
        2,
        3,
        &mut [],
        Epilogue::None
    )));
    let r = e5embed_kernels::attention_f32(isa, &[], usize::MAX, 12, 32, &mut []);
    assert!(is_shape_err(r));
}

#[test]
fn kernel_name_and_tile_per_isa() {
    for isa in Isa::available() {
        let p = PackedMatrix::pack(isa, &[0.0; 6], 2, 3).unwrap();
        assert_eq!(e5embed_kernels::gemm::kernel_name(isa), p.kernel_name());
        let (mr, nr) = e5embed_kernels::gemm::tile(isa);
        assert_eq!(nr, p.panel_width());
        assert!(p.kernel_name().ends_with(&format!("_{mr}x{nr}")));
    }
}

/// Packed panels saved (`packed_bytes`) and mapped back (`from_packed`, the engine's
/// packed-weights cache) are the same matrix: the same bytes and bitwise the same GEMM, on
/// every path; a range of the wrong length or not 64-byte aligned is a shape error.
#[test]
fn from_packed_mapped_bytes_is_bitwise_the_packed_matrix() {
    use e5embed_kernels::mapped::MappedF32;
    let mut r = rng(71);
    for isa in Isa::available() {
        for (n, k) in [(70, 37), (384, 384)] {
            let w = uniform(&mut r, n * k, -1.0, 1.0);
            let b = PackedMatrix::pack(isa, &w, n, k).unwrap();
            let bytes = b.packed_bytes();
            let map = mapped(bytes, 128);
            let floats = bytes.len() / 4;
            let m = MappedF32::new(&map, 128, floats, 64).unwrap();
            let c = PackedMatrix::from_packed(isa, n, k, m).unwrap();
            assert_eq!(c.packed_bytes(), bytes, "{isa:?} {n}x{k}");
            let rows = 19;
            let a = uniform(&mut r, rows * k, -1.0, 1.0);
            let bias = uniform(&mut r, n, -1.0, 1.0);
            let (mut want, mut got) = (vec![0f32; rows * n], vec![0f32; rows * n]);
            gemm_f32(&a, rows, &b, &mut want, Epilogue::Bias(&bias)).unwrap();
            gemm_f32(&a, rows, &c, &mut got, Epilogue::Bias(&bias)).unwrap();
            assert_bitwise(&format!("{isa:?} {n}x{k}"), &got, &want);
            // One float short, or a range that is 4- but not 64-byte aligned: refused.
            let short = MappedF32::new(&map, 128, floats - 1, 64).unwrap();
            assert!(matches!(
                PackedMatrix::from_packed(isa, n, k, short),
                Err(KernelError::Shape(_))
            ));
            let map = mapped(bytes, 4);
            let skewed = MappedF32::new(&map, 4, floats, 4).unwrap();
            assert!(matches!(
                PackedMatrix::from_packed(isa, n, k, skewed),
                Err(KernelError::Shape(_))
            ));
        }
    }
    // The range itself: in bounds and aligned as asked, or a shape error.
    let map = mapped(&[0u8; 256], 0);
    assert!(MappedF32::new(&map, 0, 64, 64).is_ok());
    assert!(MappedF32::new(&map, 4, 64, 4).is_err(), "past the end");
    assert!(MappedF32::new(&map, 4, 8, 64).is_err(), "misaligned");
    assert!(
        MappedF32::new(&map, 0, usize::MAX / 2, 4).is_err(),
        "overflow"
    );
    assert!(MappedF32::new(&map, 0, 8, 3).is_err(), "not a power of two");
}
