//! Quick attention timing (12 heads of 32) without criterion: median of repetitions.
//! `cargo run --release -p e5embed-kernels --example attn_probe -- [isa]`

use e5embed_kernels::{attention, attention_f32, peak, Isa};
use std::time::Instant;

fn main() {
    let isa = std::env::args()
        .nth(1)
        .map(|s| Isa::from_name(&s).unwrap())
        .unwrap_or(Isa::best());
    let pk = peak::fma_peak_gflops(isa, 0.3);
    println!("{} peak {pk:.1}", attention::kernel_name(isa));
    let (heads, d) = (12, 32);
    let h = heads * d;
    for seq in [8usize, 16, 40, 48, 128, 512] {
        let qkv: Vec<f32> = (0..seq * 3 * h)
            .map(|i| ((i * 37) % 101) as f32 * 0.02 - 1.0)
            .collect();
        let mut out = vec![0.0f32; seq * h];
        let flops = 4.0 * (seq * seq * h) as f64;
        let inner = ((5e7 / flops) as usize).max(1);
        let mut ts = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            for _ in 0..inner {
                attention_f32(isa, &qkv, seq, heads, d, &mut out).unwrap();
            }
            ts.push(t.elapsed().as_secs_f64() / inner as f64);
        }
        ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = ts[ts.len() / 2];
        println!(
            "seq {seq:4}: {:8.1} us {:6.1} GFLOP/s = {:5.1}% of peak",
            med * 1e6,
            flops / med / 1e9,
            100.0 * flops / med / 1e9 / pk
        );
    }
}
