//! Speed-of-light probes: the single-thread f32 FMA peak of an ISA and the streaming
//! read bandwidth of this core. Benchmarks report kernel speed as a fraction of these
//! *measured* numbers (not of datasheet figures), and the skinny GEMM (batch-1 query)
//! is held to the time it takes to stream its weights at [`memory_bandwidth_gbs`].
//!
//! Both probes run on the calling thread only and return the best of several timed
//! repetitions (the max is the estimate of what the hardware can do; noise from a
//! shared machine only ever makes a repetition slower).

use crate::isa::{Isa, IsaKind};
use std::hint::black_box;
use std::time::Instant;

/// Independent accumulator chains per probe: FMA latency (4 cycles) x 2 FMA ports = 8
/// chains are the minimum to saturate both ports; 24 leaves slack for a 5-cycle
/// latency or a 3rd port, and still fits 32 zmm (AVX2: 12 of 16 ymm).
#[cfg(target_arch = "x86_64")]
const CHAINS_512: usize = 24;
#[cfg(target_arch = "x86_64")]
const CHAINS_256: usize = 12;
const CHAINS_SCALAR: usize = 8;
/// Dependent FMAs per chain per inner call.
const STEPS: usize = 1 << 14;

/// `chains x STEPS` FMAs `acc = acc * m + a`, written in `asm!` so the compiler can
/// neither spill, merge nor drop a chain (with intrinsics LLVM rotated the 24
/// accumulators through the stack and measured 71 instead of ~170 GFLOP/s). `m`
/// slightly below 1 and `a` small keep every value normal and bounded (no denormal
/// slow path, no overflow); the chains are summed into the returned lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn probe_avx512(seed: f32) -> f32 {
    let mut x = seed;
    let m = 0.999_999f32;
    let a = 1e-6f32;
    // SAFETY: register-only arithmetic (the token proves the ISA); every register
    // written is declared as an output or clobber.
    std::arch::asm!(
            "vbroadcastss zmm24, dword ptr [{m}]",
            "vbroadcastss zmm25, dword ptr [{a}]",
            "vbroadcastss zmm0, xmm0",
            "vbroadcastss zmm1, xmm0",
            "vbroadcastss zmm2, xmm0",
            "vbroadcastss zmm3, xmm0",
            "vbroadcastss zmm4, xmm0",
            "vbroadcastss zmm5, xmm0",
            "vbroadcastss zmm6, xmm0",
            "vbroadcastss zmm7, xmm0",
            "vbroadcastss zmm8, xmm0",
            "vbroadcastss zmm9, xmm0",
            "vbroadcastss zmm10, xmm0",
            "vbroadcastss zmm11, xmm0",
            "vbroadcastss zmm12, xmm0",
            "vbroadcastss zmm13, xmm0",
            "vbroadcastss zmm14, xmm0",
            "vbroadcastss zmm15, xmm0",
            "vbroadcastss zmm16, xmm0",
            "vbroadcastss zmm17, xmm0",
            "vbroadcastss zmm18, xmm0",
            "vbroadcastss zmm19, xmm0",
            "vbroadcastss zmm20, xmm0",
            "vbroadcastss zmm21, xmm0",
            "vbroadcastss zmm22, xmm0",
            "vbroadcastss zmm23, xmm0",
            "2:",
            "vfmadd213ps zmm0, zmm24, zmm25",
            "vfmadd213ps zmm1, zmm24, zmm25",
            "vfmadd213ps zmm2, zmm24, zmm25",
            "vfmadd213ps zmm3, zmm24, zmm25",
            "vfmadd213ps zmm4, zmm24, zmm25",
            "vfmadd213ps zmm5, zmm24, zmm25",
            "vfmadd213ps zmm6, zmm24, zmm25",
            "vfmadd213ps zmm7, zmm24, zmm25",
            "vfmadd213ps zmm8, zmm24, zmm25",
            "vfmadd213ps zmm9, zmm24, zmm25",
            "vfmadd213ps zmm10, zmm24, zmm25",
            "vfmadd213ps zmm11, zmm24, zmm25",
            "vfmadd213ps zmm12, zmm24, zmm25",
            "vfmadd213ps zmm13, zmm24, zmm25",
            "vfmadd213ps zmm14, zmm24, zmm25",
            "vfmadd213ps zmm15, zmm24, zmm25",
            "vfmadd213ps zmm16, zmm24, zmm25",
            "vfmadd213ps zmm17, zmm24, zmm25",
            "vfmadd213ps zmm18, zmm24, zmm25",
            "vfmadd213ps zmm19, zmm24, zmm25",
            "vfmadd213ps zmm20, zmm24, zmm25",
            "vfmadd213ps zmm21, zmm24, zmm25",
            "vfmadd213ps zmm22, zmm24, zmm25",
            "vfmadd213ps zmm23, zmm24, zmm25",
            "dec {steps}",
            "jnz 2b",
            "vaddps zmm0, zmm0, zmm1",
            "vaddps zmm0, zmm0, zmm2",
            "vaddps zmm0, zmm0, zmm3",
            "vaddps zmm0, zmm0, zmm4",
            "vaddps zmm0, zmm0, zmm5",
            "vaddps zmm0, zmm0, zmm6",
            "vaddps zmm0, zmm0, zmm7",
            "vaddps zmm0, zmm0, zmm8",
            "vaddps zmm0, zmm0, zmm9",
            "vaddps zmm0, zmm0, zmm10",
            "vaddps zmm0, zmm0, zmm11",
            "vaddps zmm0, zmm0, zmm12",
            "vaddps zmm0, zmm0, zmm13",
            "vaddps zmm0, zmm0, zmm14",
            "vaddps zmm0, zmm0, zmm15",
            "vaddps zmm0, zmm0, zmm16",
            "vaddps zmm0, zmm0, zmm17",
            "vaddps zmm0, zmm0, zmm18",
            "vaddps zmm0, zmm0, zmm19",
            "vaddps zmm0, zmm0, zmm20",
            "vaddps zmm0, zmm0, zmm21",
            "vaddps zmm0, zmm0, zmm22",
            "vaddps zmm0, zmm0, zmm23",
            steps = inout(reg) STEPS => _,
            m = in(reg) &m,
            a = in(reg) &a,
            inout("xmm0") x,
            out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _, out("zmm25") _,
            options(nostack, readonly),
    );
    x
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn probe_avx2(seed: f32) -> f32 {
    let mut x = seed;
    let m = 0.999_999f32;
    let a = 1e-6f32;
    // SAFETY: register-only arithmetic (the token proves the ISA); every register
    // written is declared as an output or clobber.
    std::arch::asm!(
            "vbroadcastss ymm12, dword ptr [{m}]",
            "vbroadcastss ymm13, dword ptr [{a}]",
            "vbroadcastss ymm0, xmm0",
            "vbroadcastss ymm1, xmm0",
            "vbroadcastss ymm2, xmm0",
            "vbroadcastss ymm3, xmm0",
            "vbroadcastss ymm4, xmm0",
            "vbroadcastss ymm5, xmm0",
            "vbroadcastss ymm6, xmm0",
            "vbroadcastss ymm7, xmm0",
            "vbroadcastss ymm8, xmm0",
            "vbroadcastss ymm9, xmm0",
            "vbroadcastss ymm10, xmm0",
            "vbroadcastss ymm11, xmm0",
            "2:",
            "vfmadd213ps ymm0, ymm12, ymm13",
            "vfmadd213ps ymm1, ymm12, ymm13",
            "vfmadd213ps ymm2, ymm12, ymm13",
            "vfmadd213ps ymm3, ymm12, ymm13",
            "vfmadd213ps ymm4, ymm12, ymm13",
            "vfmadd213ps ymm5, ymm12, ymm13",
            "vfmadd213ps ymm6, ymm12, ymm13",
            "vfmadd213ps ymm7, ymm12, ymm13",
            "vfmadd213ps ymm8, ymm12, ymm13",
            "vfmadd213ps ymm9, ymm12, ymm13",
            "vfmadd213ps ymm10, ymm12, ymm13",
            "vfmadd213ps ymm11, ymm12, ymm13",
            "dec {steps}",
            "jnz 2b",
            "vaddps ymm0, ymm0, ymm1",
            "vaddps ymm0, ymm0, ymm2",
            "vaddps ymm0, ymm0, ymm3",
            "vaddps ymm0, ymm0, ymm4",
            "vaddps ymm0, ymm0, ymm5",
            "vaddps ymm0, ymm0, ymm6",
            "vaddps ymm0, ymm0, ymm7",
            "vaddps ymm0, ymm0, ymm8",
            "vaddps ymm0, ymm0, ymm9",
            "vaddps ymm0, ymm0, ymm10",
            "vaddps ymm0, ymm0, ymm11",
            steps = inout(reg) STEPS => _,
            m = in(reg) &m,
            a = in(reg) &a,
            inout("xmm0") x,
            out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _,
            options(nostack, readonly),
    );
    x
}

/// `chains x STEPS` `vdpbf16ps zmm` (32 bf16 products = 64 FLOPs each) into
/// `chains` independent f32 accumulators, the bf16 operands fixed (`x = 2^-10`,
/// `y = -2^-10` in every element, so the products are tiny and exact and the sums stay
/// normal and bounded). With `CHAINS_512` chains this is the throughput; with one chain
/// ([`probe_bf16_dot_latency`]) each instruction waits for the previous: the latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn probe_bf16_dot(seed: f32) -> f32 {
    let mut x = seed;
    // Pairs of bf16 2^-10 (0x3a80) and -2^-10 (0xba80).
    let pa = 0x3a80_3a80u32;
    let pb = 0xba80_3a80u32;
    // SAFETY: register-only arithmetic (the caller holds an Avx512Bf16 token); every
    // register written is declared as an output or clobber.
    std::arch::asm!(
            "vpbroadcastd zmm24, dword ptr [{pa}]",
            "vpbroadcastd zmm25, dword ptr [{pb}]",
            "vbroadcastss zmm0, xmm0",
            "vmovaps zmm1, zmm0",
            "vmovaps zmm2, zmm0",
            "vmovaps zmm3, zmm0",
            "vmovaps zmm4, zmm0",
            "vmovaps zmm5, zmm0",
            "vmovaps zmm6, zmm0",
            "vmovaps zmm7, zmm0",
            "vmovaps zmm8, zmm0",
            "vmovaps zmm9, zmm0",
            "vmovaps zmm10, zmm0",
            "vmovaps zmm11, zmm0",
            "vmovaps zmm12, zmm0",
            "vmovaps zmm13, zmm0",
            "vmovaps zmm14, zmm0",
            "vmovaps zmm15, zmm0",
            "vmovaps zmm16, zmm0",
            "vmovaps zmm17, zmm0",
            "vmovaps zmm18, zmm0",
            "vmovaps zmm19, zmm0",
            "vmovaps zmm20, zmm0",
            "vmovaps zmm21, zmm0",
            "vmovaps zmm22, zmm0",
            "vmovaps zmm23, zmm0",
            "2:",
            "vdpbf16ps zmm0, zmm24, zmm25",
            "vdpbf16ps zmm1, zmm24, zmm25",
            "vdpbf16ps zmm2, zmm24, zmm25",
            "vdpbf16ps zmm3, zmm24, zmm25",
            "vdpbf16ps zmm4, zmm24, zmm25",
            "vdpbf16ps zmm5, zmm24, zmm25",
            "vdpbf16ps zmm6, zmm24, zmm25",
            "vdpbf16ps zmm7, zmm24, zmm25",
            "vdpbf16ps zmm8, zmm24, zmm25",
            "vdpbf16ps zmm9, zmm24, zmm25",
            "vdpbf16ps zmm10, zmm24, zmm25",
            "vdpbf16ps zmm11, zmm24, zmm25",
            "vdpbf16ps zmm12, zmm24, zmm25",
            "vdpbf16ps zmm13, zmm24, zmm25",
            "vdpbf16ps zmm14, zmm24, zmm25",
            "vdpbf16ps zmm15, zmm24, zmm25",
            "vdpbf16ps zmm16, zmm24, zmm25",
            "vdpbf16ps zmm17, zmm24, zmm25",
            "vdpbf16ps zmm18, zmm24, zmm25",
            "vdpbf16ps zmm19, zmm24, zmm25",
            "vdpbf16ps zmm20, zmm24, zmm25",
            "vdpbf16ps zmm21, zmm24, zmm25",
            "vdpbf16ps zmm22, zmm24, zmm25",
            "vdpbf16ps zmm23, zmm24, zmm25",
            "dec {steps}",
            "jnz 2b",
            "vaddps zmm0, zmm0, zmm1",
            "vaddps zmm0, zmm0, zmm2",
            "vaddps zmm0, zmm0, zmm3",
            "vaddps zmm0, zmm0, zmm4",
            "vaddps zmm0, zmm0, zmm5",
            "vaddps zmm0, zmm0, zmm6",
            "vaddps zmm0, zmm0, zmm7",
            "vaddps zmm0, zmm0, zmm8",
            "vaddps zmm0, zmm0, zmm9",
            "vaddps zmm0, zmm0, zmm10",
            "vaddps zmm0, zmm0, zmm11",
            "vaddps zmm0, zmm0, zmm12",
            "vaddps zmm0, zmm0, zmm13",
            "vaddps zmm0, zmm0, zmm14",
            "vaddps zmm0, zmm0, zmm15",
            "vaddps zmm0, zmm0, zmm16",
            "vaddps zmm0, zmm0, zmm17",
            "vaddps zmm0, zmm0, zmm18",
            "vaddps zmm0, zmm0, zmm19",
            "vaddps zmm0, zmm0, zmm20",
            "vaddps zmm0, zmm0, zmm21",
            "vaddps zmm0, zmm0, zmm22",
            "vaddps zmm0, zmm0, zmm23",
            steps = inout(reg) STEPS => _,
            pa = in(reg) &pa,
            pb = in(reg) &pb,
            inout("xmm0") x,
            out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _, out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _, out("zmm24") _, out("zmm25") _,
            options(nostack, readonly),
    );
    x
}

/// One dependent chain of `4 x STEPS` `vdpbf16ps zmm`: the instruction's latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16,avx2,fma")]
unsafe fn probe_bf16_dot_latency(seed: f32) -> f32 {
    let mut x = seed;
    let pa = 0x3a80_3a80u32;
    let pb = 0xba80_3a80u32;
    // SAFETY: as probe_bf16_dot.
    std::arch::asm!(
            "vpbroadcastd zmm24, dword ptr [{pa}]",
            "vpbroadcastd zmm25, dword ptr [{pb}]",
            "vbroadcastss zmm0, xmm0",
            "2:",
            "vdpbf16ps zmm0, zmm24, zmm25",
            "vdpbf16ps zmm0, zmm24, zmm25",
            "vdpbf16ps zmm0, zmm24, zmm25",
            "vdpbf16ps zmm0, zmm24, zmm25",
            "dec {steps}",
            "jnz 2b",
            steps = inout(reg) STEPS => _,
            pa = in(reg) &pa,
            pb = in(reg) &pb,
            inout("xmm0") x,
            out("zmm24") _, out("zmm25") _,
            options(nostack, readonly),
    );
    x
}

/// One dependent chain of `4 x STEPS` `vfmadd213ps zmm`: the f32 FMA latency (the
/// yardstick the bf16 latency is quoted against).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn probe_fma_latency(seed: f32) -> f32 {
    let mut x = seed;
    let m = 0.999_999f32;
    let a = 1e-6f32;
    // SAFETY: register-only arithmetic (the caller holds an Avx512 token).
    std::arch::asm!(
            "vbroadcastss zmm24, dword ptr [{m}]",
            "vbroadcastss zmm25, dword ptr [{a}]",
            "vbroadcastss zmm0, xmm0",
            "2:",
            "vfmadd213ps zmm0, zmm24, zmm25",
            "vfmadd213ps zmm0, zmm24, zmm25",
            "vfmadd213ps zmm0, zmm24, zmm25",
            "vfmadd213ps zmm0, zmm24, zmm25",
            "dec {steps}",
            "jnz 2b",
            steps = inout(reg) STEPS => _,
            m = in(reg) &m,
            a = in(reg) &a,
            inout("xmm0") x,
            out("zmm24") _, out("zmm25") _,
            options(nostack, readonly),
    );
    x
}

/// What [`bf16_dot_peak`] measured on one thread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bf16DotPeak {
    /// `vdpbf16ps zmm` throughput in GFLOP/s (1 bf16 product + add = 2 FLOPs, 64 per
    /// instruction), `CHAINS_512` independent accumulators.
    pub gflops: f64,
    /// The f32 FMA zmm throughput measured alongside (GFLOP/s), for the ratio.
    pub fma_gflops: f64,
    /// Nanoseconds per dependent `vdpbf16ps zmm`.
    pub dot_latency_ns: f64,
    /// Nanoseconds per dependent `vfmadd213ps zmm`.
    pub fma_latency_ns: f64,
}

impl Bf16DotPeak {
    /// `vdpbf16ps` latency in units of the f32 FMA latency (x 4 = cycles on a core
    /// whose FMA latency is 4 cycles: Zen 4/5, Ice Lake and later).
    pub fn latency_ratio(&self) -> f64 {
        self.dot_latency_ns / self.fma_latency_ns
    }

    /// Independent accumulators needed to keep the dot-product units busy: latency x
    /// instructions per ns (Little's law).
    pub fn chains_needed(&self) -> f64 {
        self.dot_latency_ns * self.gflops / 64.0
    }
}

/// Measures the AVX512-BF16 dot-product peak (throughput, latency) against the f32
/// FMA on one thread, about `seconds` in total; `None` without AVX512-BF16.
pub fn bf16_dot_peak(seconds: f64) -> Option<Bf16DotPeak> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::bgemm::{BIsa, BIsaKind};
        // The token proves AVX512-BF16 + AVX-512 F.
        BIsa::new(BIsaKind::Avx512Bf16)?;
        let s = (seconds / 4.0).max(1e-3);
        let mut seed = 0.0f32;
        let mut run = |units: f64, f: unsafe fn(f32) -> f32| {
            best_rate(s, 5, units, || {
                seed += 1.0;
                // SAFETY: AVX512-BF16 + AVX-512 F checked above.
                unsafe { f(black_box(seed)) }
            })
        };
        let gflops = run((64 * CHAINS_512 * STEPS) as f64, probe_bf16_dot) / 1e9;
        let fma_gflops = run((32 * CHAINS_512 * STEPS) as f64, probe_avx512) / 1e9;
        let dot_latency_ns = 1e9 / run((4 * STEPS) as f64, probe_bf16_dot_latency);
        let fma_latency_ns = 1e9 / run((4 * STEPS) as f64, probe_fma_latency);
        Some(Bf16DotPeak {
            gflops,
            fma_gflops,
            dot_latency_ns,
            fma_latency_ns,
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = seconds;
        None
    }
}

/// Portable probe: separate multiply and add (what the scalar kernels issue).
fn probe_scalar(seed: f32) -> f32 {
    let m = black_box(0.999_999f32);
    let a = black_box(1e-6f32);
    let mut acc = [0.0f32; CHAINS_SCALAR];
    for (c, x) in acc.iter_mut().enumerate() {
        *x = seed + c as f32;
    }
    for _ in 0..STEPS {
        for x in acc.iter_mut() {
            *x = *x * m + a;
        }
    }
    acc.iter().sum()
}

/// (f32 FLOPs per probe call, the call) for `isa`. One FMA lane = 2 FLOPs.
fn probe_for(isa: Isa) -> (f64, Box<dyn Fn(f32) -> f32>) {
    match isa.kind() {
        IsaKind::Scalar => ((2 * CHAINS_SCALAR * STEPS) as f64, Box::new(probe_scalar)),
        // SAFETY: the token proves AVX2+FMA / AVX-512F.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => (
            (2 * 8 * CHAINS_256 * STEPS) as f64,
            Box::new(|s| unsafe { probe_avx2(s) }),
        ),
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => (
            (2 * 16 * CHAINS_512 * STEPS) as f64,
            Box::new(|s| unsafe { probe_avx512(s) }),
        ),
        #[allow(unreachable_patterns)]
        _ => ((2 * CHAINS_SCALAR * STEPS) as f64, Box::new(probe_scalar)),
    }
}

/// Best-of-`reps` rate of `f` (units per second), each repetition running `f` for
/// about `seconds / reps` (at least once).
fn best_rate(seconds: f64, reps: usize, units_per_call: f64, mut f: impl FnMut() -> f32) -> f64 {
    // Warm-up (frequency ramp, page faults, code in cache).
    black_box(f());
    let t = Instant::now();
    black_box(f());
    let per_call = t.elapsed().as_secs_f64().max(1e-9);
    let calls = ((seconds / reps as f64 / per_call) as usize).max(1);
    let mut best = 0.0f64;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..calls {
            black_box(f());
        }
        let dt = t.elapsed().as_secs_f64();
        best = best.max(units_per_call * calls as f64 / dt);
    }
    best
}

/// Measured single-thread f32 FMA throughput of `isa` in GFLOP/s (1 FMA lane = 2
/// FLOPs), best of several repetitions over about `seconds` in total. The scalar
/// probe issues separate mul + add (as the scalar kernels do), so it counts 2 FLOPs
/// per mul-add pair.
pub fn fma_peak_gflops(isa: Isa, seconds: f64) -> f64 {
    let (flops, probe) = probe_for(isa);
    let mut seed = 0.0f32;
    best_rate(seconds.max(1e-3), 5, flops, || {
        seed += 1.0;
        probe(black_box(seed))
    }) / 1e9
}

/// Buffer [`memory_bandwidth_gbs`] streams: 1 GiB, 4x the 260 MB L3 of the
/// development machine (and far beyond any L3 of a single socket today), so the
/// reads come from DRAM, not from cache.
pub const DRAM_PROBE_BYTES: usize = 1 << 30;

/// Single-thread streaming read bandwidth from DRAM in GB/s (10^9 bytes/s): best
/// full pass over a [`DRAM_PROBE_BYTES`] buffer (allocated and touched here, freed
/// on return), with the best ISA this CPU has. About `seconds` in total, at least
/// two passes after the first touch.
pub fn memory_bandwidth_gbs(seconds: f64) -> f64 {
    read_bandwidth_gbs(Isa::best(), DRAM_PROBE_BYTES, seconds)
}

/// Single-thread streaming read bandwidth in GB/s over a buffer of `bytes` (rounded
/// up to 64 bytes): a buffer beyond the last-level cache measures DRAM, one that fits
/// L2 / L3 measures that cache. Reads use `isa`'s widest vectors and sum into 8
/// independent accumulators (the sum goes through `black_box`).
pub fn read_bandwidth_gbs(isa: Isa, bytes: usize, seconds: f64) -> f64 {
    let floats = bytes.div_ceil(64).max(1) * 16;
    // Touch every page (written, so the kernel backs it with real, distinct pages).
    let buf: Vec<f32> = (0..floats).map(|i| (i & 1023) as f32).collect();
    let pass = || stream_sum(isa, &buf);
    let bytes = (floats * 4) as f64;
    let t = Instant::now();
    black_box(pass());
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let reps = ((seconds / one) as usize).clamp(2, 200);
    let mut best = 0.0f64;
    for _ in 0..reps {
        let t = Instant::now();
        black_box(pass());
        best = best.max(bytes / t.elapsed().as_secs_f64());
    }
    best / 1e9
}

/// Sum of `x` (length a multiple of 16) with `isa`'s vectors.
fn stream_sum(isa: Isa, x: &[f32]) -> f32 {
    match isa.kind() {
        // SAFETY: the token proves the ISA; lengths are multiples of 16.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx512 => unsafe { sum_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => unsafe { sum_avx2(x) },
        _ => {
            let mut acc = [0.0f32; 8];
            for ch in x.chunks_exact(8) {
                for (a, &v) in acc.iter_mut().zip(ch) {
                    *a += v;
                }
            }
            acc.iter().sum()
        }
    }
}

/// 4 cache lines per iteration into 4 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn sum_avx512(x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let p = x.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= x.len() {
        for u in 0..4 {
            acc[u] = _mm512_add_ps(acc[u], _mm512_loadu_ps(p.add(i + 16 * u)));
        }
        i += 64;
    }
    while i < x.len() {
        acc[0] = _mm512_add_ps(acc[0], _mm512_loadu_ps(p.add(i)));
        i += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// 2 cache lines per iteration into 4 accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_avx2(x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let p = x.as_ptr();
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= x.len() {
        for u in 0..4 {
            acc[u] = _mm256_add_ps(acc[u], _mm256_loadu_ps(p.add(i + 8 * u)));
        }
        i += 32;
    }
    while i < x.len() {
        acc[0] = _mm256_add_ps(acc[0], _mm256_loadu_ps(p.add(i)));
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut out = [0.0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_return_plausible_rates() {
        // Off x86-64 these tests run under qemu-user (tools/test-aarch64), whose rates
        // are the emulator's (0.07 GFLOP/s scalar): there only finite and positive.
        let floor = if cfg!(target_arch = "x86_64") {
            0.1
        } else {
            0.0
        };
        for isa in Isa::available() {
            let g = fma_peak_gflops(isa, 0.02);
            assert!(g.is_finite() && g > floor, "{isa}: {g}");
        }
        if let Some(p) = bf16_dot_peak(0.02) {
            assert!(p.gflops > 0.1 && p.fma_gflops > 0.1, "{p:?}");
            assert!(p.dot_latency_ns > 0.0 && p.fma_latency_ns > 0.0, "{p:?}");
        }
        let bw = read_bandwidth_gbs(Isa::best(), 1 << 20, 0.01);
        assert!(bw.is_finite() && bw > floor, "{bw}");
    }
}
