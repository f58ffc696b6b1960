use e5embed_kernels::*;

#[test]
fn smoke_all_paths() {
    for isa in Isa::available() {
        let (m, n, k) = (5, 7, 9);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let p = PackedMatrix::pack(isa, &w, n, k).unwrap();
        let mut c = vec![0.0; m * n];
        let mut r = vec![0.0; m * n];
        gemm_f32(&a, m, &p, &mut c, Epilogue::None).unwrap();
        gemm_f32_reference(&a, m, &w, n, k, &mut r, Epilogue::None).unwrap();
        assert_eq!(c, r, "{}", p.kernel_name());
    }
}
