//! Prints the measured speed of light of this core: `cargo run --release -p
//! e5embed-kernels --example peak` (wrap in the bench lock when others benchmark).

use e5embed_kernels::{peak, Isa};

fn main() {
    for isa in Isa::available() {
        println!(
            "fma peak {:>6}: {:7.1} GFLOP/s (1 thread)",
            isa.name(),
            peak::fma_peak_gflops(isa, 1.0)
        );
    }
    for (what, bytes) in [("L2 (1 MiB)", 1usize << 20), ("L3 (64 MiB)", 64 << 20)] {
        println!(
            "read bandwidth {what}: {:.1} GB/s",
            peak::read_bandwidth_gbs(Isa::best(), bytes, 0.5)
        );
    }
    println!(
        "read bandwidth DRAM (1 GiB): {:.1} GB/s",
        peak::memory_bandwidth_gbs(2.0)
    );
}
