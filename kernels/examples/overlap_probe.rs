//! Can one core overlap a DRAM weight stream with FMA work? A synthetic skinny GEMM:
//! stream `bytes` (default 1.77 MB, QKV's packed weights), 128 bytes per step (two zmm
//! loads, like one K step of the 32-wide AVX-512 tile), and per step `R` rows x 2
//! FMAs. `dep`: the FMAs consume the loaded vectors (as in the GEMM); `indep`: the
//! FMAs run on registers only and the loads go to a separate sum (no data dependency,
//! so the out-of-order window never waits on a load for the FMAs). Each variant runs
//! hot (the same buffer every call) and cold (a different copy out of a 1 GiB pool
//! every call), with the GEMM's software prefetch (L1 4 KB, L2 8 KB ahead) or none.
//!
//! `cargo run --release -p e5embed-kernels --example overlap_probe -- [bytes]`
//! (x86-64 with AVX-512 only; one thread; take the bench lock).

#[cfg(target_arch = "x86_64")]
mod probe {
    use std::arch::x86_64::*;
    use std::hint::black_box;
    use std::time::Instant;

    /// One pass over `lines` 64-byte lines at `p` (an even count); returns a sum so
    /// that nothing is dead code (with R = 0 the loads go to the sum in both modes).
    ///
    /// # Safety
    /// AVX-512F is available; `p` is 64-byte aligned and valid for `lines * 16` floats.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn pass<const R: usize, const DEP: bool, const PF: bool>(
        p: *const f32,
        lines: usize,
        a: &[f32; 512],
    ) -> f32 {
        let mut acc = [[_mm512_setzero_ps(); 2]; 12];
        let mut sum = _mm512_setzero_ps();
        let mut i = 0;
        let k0 = _mm512_set1_ps(black_box(0.999));
        while i < lines {
            let q = p.add(i * 16);
            if PF {
                _mm_prefetch::<_MM_HINT_T0>(q.add(1024).cast());
                _mm_prefetch::<_MM_HINT_T0>(q.add(1024 + 16).cast());
                _mm_prefetch::<_MM_HINT_T1>(q.add(2048).cast());
                _mm_prefetch::<_MM_HINT_T1>(q.add(2048 + 16).cast());
            }
            let b0 = _mm512_load_ps(q);
            let b1 = _mm512_load_ps(q.add(16));
            let (c0, c1) = if DEP { (b0, b1) } else { (k0, k0) };
            if !DEP || R == 0 {
                sum = _mm512_add_ps(sum, _mm512_add_ps(b0, b1));
            }
            // Rows 0..12 into their own accumulators, rows 12.. reuse the first ones
            // (24 accumulators: two loops the compiler unrolls, no spills).
            for (r, x) in acc.iter_mut().enumerate().take(R.min(12)) {
                let ar = _mm512_set1_ps(*a.get_unchecked(r * 16 + ((i >> 1) & 15)));
                x[0] = _mm512_fmadd_ps(ar, c0, x[0]);
                x[1] = _mm512_fmadd_ps(ar, c1, x[1]);
            }
            for (r, x) in acc.iter_mut().enumerate().take(R.saturating_sub(12)) {
                let ar = _mm512_set1_ps(*a.get_unchecked((r + 12) * 16 + ((i >> 1) & 15)));
                x[0] = _mm512_fmadd_ps(ar, c0, x[0]);
                x[1] = _mm512_fmadd_ps(ar, c1, x[1]);
            }
            i += 2;
        }
        for x in acc.iter() {
            sum = _mm512_add_ps(sum, _mm512_add_ps(x[0], x[1]));
        }
        _mm512_reduce_add_ps(sum)
    }

    type PassFn = unsafe fn(*const f32, usize, &[f32; 512]) -> f32;

    fn pick(r: usize, dep: bool, pf: bool) -> PassFn {
        macro_rules! m {
            ($($n:literal),*) => {
                match (r, dep, pf) {
                    $(
                        ($n, true, true) => pass::<$n, true, true>,
                        ($n, true, false) => pass::<$n, true, false>,
                        ($n, false, true) => pass::<$n, false, true>,
                        ($n, false, false) => pass::<$n, false, false>,
                    )*
                    _ => unreachable!(),
                }
            };
        }
        m!(0, 4, 8, 12, 14, 16, 20)
    }

    fn median_us(mut f: impl FnMut()) -> f64 {
        let mut t = Vec::new();
        for _ in 0..15 {
            let t0 = Instant::now();
            for _ in 0..100 {
                f();
            }
            t.push(t0.elapsed().as_secs_f64() / 100.0 * 1e6);
        }
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        t[t.len() / 2]
    }

    pub fn main() {
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("overlap_probe needs AVX-512");
            return;
        }
        let bytes: usize = std::env::args()
            .nth(1)
            .map(|s| s.parse().unwrap())
            .unwrap_or(1152 * 384 * 4);
        let lines = bytes.div_ceil(128) * 2;
        let stride = lines * 16;
        let copies = (1usize << 30) / (lines * 64);
        // One pool, 64-byte aligned chunks (over-allocate and offset).
        let pool: Vec<f32> = (0..copies * stride + 16)
            .map(|i| (i % 251) as f32 * 1e-3)
            .collect();
        let base = pool.as_ptr().align_offset(64);
        let a = [0.5f32; 512];
        let floor_bw = e5embed_kernels::peak::memory_bandwidth_gbs(1.0);
        let floor = (lines * 64) as f64 / floor_bw / 1e3;
        println!(
            "{} lines ({:.2} MB) per call; DRAM floor {floor:.1} us at {floor_bw:.1} GB/s",
            lines,
            (lines * 64) as f64 / 1e6
        );
        for dep in [true, false] {
            for pf in [true, false] {
                for r in [0usize, 4, 8, 12, 14, 16, 20] {
                    let f = pick(r, dep, pf);
                    let hot = median_us(|| unsafe {
                        // SAFETY: chunk 0 holds `lines` whole lines; AVX-512 checked.
                        black_box(f(pool.as_ptr().add(base), lines, &a));
                    });
                    let mut ci = 0;
                    let cold = median_us(|| {
                        ci = (ci + 1) % copies;
                        // SAFETY: chunk `ci` lies inside the pool; AVX-512 checked.
                        unsafe {
                            black_box(f(pool.as_ptr().add(base + ci * stride), lines, &a));
                        }
                    });
                    println!(
                        "{} pf={} R={r:2}: hot {hot:6.1} us, cold {cold:6.1} us = {:.2}x floor; \
                         cold - max(hot, floor) = {:5.1} us",
                        if dep { "dep  " } else { "indep" },
                        pf as u8,
                        cold / floor,
                        cold - hot.max(floor)
                    );
                }
            }
        }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    probe::main();
}
