//! How much of the caller's working set a forward evicts (the cost a Python `encode` or an
//! HTTP handler pays after a query: kernels/PERF.md, "Where a query's time goes outside the
//! forward").
//!
//!     cargo run --release --example cache_probe -- MODEL_DIR [f32|bf16|int8] [KIB] [CALLS]
//!
//! Per call: embed one 8-token query, then walk a random cyclic pointer chain through a
//! `KIB` KiB buffer (default 1024: about what the interpreter or the HTTP stack touches per
//! request; a chain defeats the hardware prefetchers, as an interpreter's scattered objects
//! do). Prints the medians of the forward and of the walk right after it, and of the walk
//! when the buffer is hot (walked twice in a row, no forward between).
use std::time::Instant;

use e5embed::{Embedder, EmbedderOptions, Precision};

mod common;
use common::median;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: cache_probe MODEL_DIR [PRECISION] [KIB] [CALLS]")?;
    let precision: Precision = common::arg(&args, 2, Precision::F32)?;
    let kib: usize = common::arg(&args, 3, 1024)?;
    let calls: usize = common::arg(&args, 4, 300)?;
    let e = Embedder::load_with(dir, &EmbedderOptions::default().precision(precision))?;

    // One u64 per 64-byte line, linked in a random cycle (xorshift Fisher-Yates).
    let lines = kib * 1024 / 64;
    let mut order: Vec<usize> = (0..lines).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..lines).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        order.swap(i, (s % (i as u64 + 1)) as usize);
    }
    let mut buf = vec![0u64; lines * 8];
    for w in 0..lines {
        buf[order[w] * 8] = (order[(w + 1) % lines] * 8) as u64;
    }
    let walk = |buf: &[u64]| -> (f64, u64) {
        let t = Instant::now();
        let mut i = 0usize;
        for _ in 0..lines {
            i = buf[i] as usize;
        }
        (t.elapsed().as_secs_f64() * 1e6, i as u64)
    };

    let q = ["query: how much protein should a female eat"];
    let mut fwd = Vec::new();
    let mut after = Vec::new();
    let mut hot = Vec::new();
    let mut sink = 0u64;
    for _ in 0..calls {
        let t = Instant::now();
        let v = e.embed(&q)?;
        fwd.push(t.elapsed().as_secs_f64() * 1e6);
        sink ^= v.to_flat()[0].to_bits() as u64;
        let (us, x) = walk(&buf);
        after.push(us);
        sink ^= x;
        let (us, x) = walk(&buf);
        hot.push(us);
        sink ^= x;
    }
    println!(
        "precision {} ({}), {kib} KiB chain, {calls} calls: forward {:.0} us, walk after forward {:.1} us, hot {:.1} us (extra {:.1} us) [{sink:x}]",
        e.precision(),
        e.gemm_kernel_name(),
        median(fwd),
        median(after.clone()),
        median(hot.clone()),
        median(after) - median(hot)
    );
    Ok(())
}
