//! Quick attention timing (12 heads of 32) without criterion: median of repetitions.
//! `cargo run --release -p e5embed-kernels --example attn_probe -- [isa | bf16] [SEQ,SEQ,..]`
//! (`bf16`: the `vdpbf16ps` kernel of bf16 models, against the `vdpbf16ps` peak; default
//! lengths 8,16,40,48,128,512; one length alone is what `perf record` wants).

use e5embed_kernels::bgemm::{BIsa, BIsaKind};
use e5embed_kernels::{attention, attention_f32, peak, Isa};
use std::time::Instant;

fn main() {
    let arg = std::env::args().nth(1);
    let bf16 = arg.as_deref() == Some("bf16");
    let isa = match &arg {
        Some(s) if !bf16 => Isa::from_name(s).unwrap(),
        _ => Isa::best(),
    };
    let bisa = BIsa::available()
        .into_iter()
        .find(|b| b.kind() == BIsaKind::Avx512Bf16);
    let (name, pk) = if bf16 {
        let Some(_) = bisa else {
            eprintln!("attn_probe bf16: this CPU has no AVX512-BF16");
            std::process::exit(2);
        };
        (
            attention::BF16_KERNEL_NAME,
            peak::bf16_dot_peak(0.3).map_or(f64::NAN, |p| p.gflops),
        )
    } else {
        (attention::kernel_name(isa), peak::fma_peak_gflops(isa, 0.3))
    };
    println!("{name} peak {pk:.1}");
    let (heads, d) = (12, 32);
    let h = heads * d;
    let seqs: Vec<usize> = match std::env::args().nth(2) {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("attn_probe: lengths are integers, e.g. 128,512")
            })
            .collect(),
        None => vec![8, 16, 40, 48, 128, 512],
    };
    for seq in seqs {
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
                match (bf16, bisa) {
                    (true, Some(b)) => {
                        attention::attention_bf16(b, &qkv, seq, heads, d, &mut out).unwrap()
                    }
                    _ => attention_f32(isa, &qkv, seq, heads, d, &mut out).unwrap(),
                }
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
