//! What tokenizing one short query costs: the engine's tokenizer (the exact ASCII shortcut,
//! `src/tokenize.rs`) against the `tokenizers` crate's pipeline it replaces for ASCII text,
//! each hot (right after the same call) and right after a forward (the cost a server or a
//! Python caller pays per query: the forward has evicted the tokenizer's working set).
//!
//!     cargo run --release --example tok_probe -- MODEL_DIR [CALLS]
use std::time::Instant;

use e5embed::{Embedder, EmbedderOptions};

mod common;
use common::median;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).ok_or("usage: tok_probe MODEL_DIR [CALLS]")?;
    let calls: usize = common::arg(&args, 2, 400)?;
    let e = Embedder::load_with(dir, &EmbedderOptions::default().threads(2))?;
    let tok = e.tokenizer();
    println!("ASCII shortcut in use: {}", tok.ascii_fast());
    let qs: Vec<String> = (0..calls)
        .map(|i| format!("query: ships night costs {i} water second"))
        .collect();
    // [shortcut, crate] x [after a forward, hot]
    let mut t = [[vec![], vec![]], [vec![], vec![]]];
    for (i, q) in qs.iter().enumerate() {
        let toks = tok.encode(q)?;
        e.embed_tokens(std::slice::from_ref(&toks))?;
        // Alternate which path comes first after the forward.
        for k in [i % 2, 1 - i % 2] {
            for times in t[k].iter_mut() {
                let s = Instant::now();
                let r = if k == 0 {
                    tok.encode(q)?
                } else {
                    tok.encode_with_crate(q)?
                };
                times.push(s.elapsed().as_secs_f64() * 1e6);
                assert_eq!(r, toks);
            }
            if k == i % 2 {
                e.embed_tokens(std::slice::from_ref(&toks))?;
            }
        }
    }
    let [[a, b], [c, d]] = t;
    println!(
        "median us per query ({calls} calls): shortcut {:.1} after a forward, {:.1} hot; \
         tokenizers crate {:.1} after a forward, {:.1} hot",
        median(a),
        median(b),
        median(c),
        median(d)
    );
    Ok(())
}
