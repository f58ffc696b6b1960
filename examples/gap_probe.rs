//! What a lone query's forward pays after an idle gap, split into its causes (issue #15's c=1
//! target: a server forwards one query per round trip, `bench` back to back).
//!
//!     cargo run --release --example gap_probe -- MODEL_DIR [f32|bf16|int8] [GAP_US] [ROUNDS]
//!
//! Modes, interleaved round by round (40 forwards of one 8-token query per mode and round):
//! - `b2b`: back to back from the main thread, as `e5embed bench`;
//! - `sleep`: the main thread sleeps GAP_US before each forward (the pool's threads and their
//!   vCPUs go idle, as in a server between requests);
//! - `spin`: the main thread spins GAP_US (the pool's threads still go idle: rayon parks them
//!   after a few microseconds);
//! - `pool-sleep` / `pool-spin`: the same, but the caller is one of the pool's threads
//!   (`Embedder::run_on_pool`), as the server's scheduler;
//! - `pool-spin-all`: every pool thread spins through the gap (a broadcast), so no thread and
//!   no vCPU sleeps: what remains over `b2b` is the gap's cache cost alone.
//!
//! Prints the median forward time per mode, and each mode's median minus `b2b`'s.
use std::time::{Duration, Instant};

use e5embed::{Embedder, EmbedderOptions, Precision};

mod common;
use common::median;

fn spin(us: u64) {
    let t = Instant::now();
    let d = Duration::from_micros(us);
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: gap_probe MODEL_DIR [PRECISION] [GAP_US] [ROUNDS]")?;
    let precision: Precision = common::arg(&args, 2, Precision::F32)?;
    let gap: u64 = common::arg(&args, 3, 150)?;
    let rounds: usize = common::arg(&args, 4, 10)?;
    let e = Embedder::load_with(dir, &EmbedderOptions::default().precision(precision))?;
    let tokens = e.tokenize(&["query: how much protein should a female eat"])?;
    let threads = e.threads();
    println!(
        "{} tokens, {} threads, precision {}, gap {gap} us, {rounds} rounds x 40 forwards per mode",
        tokens[0].ids.len(),
        threads,
        e.precision().name()
    );
    for _ in 0..20 {
        e.embed_tokens(&tokens)?;
    }
    let modes = [
        "b2b",
        "sleep",
        "spin",
        "pool-sleep",
        "pool-spin",
        "pool-spin-all",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for _ in 0..rounds {
        for (m, name) in modes.iter().enumerate() {
            let run = |t: &mut Vec<f64>| -> e5embed::Result<()> {
                for _ in 0..40 {
                    match *name {
                        "b2b" => {}
                        "sleep" | "pool-sleep" => std::thread::sleep(Duration::from_micros(gap)),
                        "spin" | "pool-spin" => spin(gap),
                        _ => {
                            // Every pool thread, this one included, spins through the gap.
                            rayon::broadcast(|_| spin(gap));
                        }
                    }
                    let s = Instant::now();
                    e.embed_tokens(&tokens)?;
                    t.push(s.elapsed().as_secs_f64() * 1e3);
                }
                Ok(())
            };
            if name.starts_with("pool") {
                e.run_on_pool(|| run(&mut times[m]))?;
            } else {
                run(&mut times[m])?;
            }
        }
    }
    let base = median(times[0].clone());
    for (m, name) in modes.iter().enumerate() {
        let med = median(times[m].clone());
        println!(
            "{name:>14}  median {med:.3} ms  ({:+.3} ms vs b2b)",
            med - base
        );
    }
    Ok(())
}
