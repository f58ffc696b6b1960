//! What the probes in examples/ share, as tests/common does for the tests (cargo builds only
//! `examples/*.rs` and `examples/*/main.rs` as examples, so this is not one).
#![allow(dead_code)]

use std::error::Error;
use std::str::FromStr;

/// The element at `len / 2` of `v` sorted (the upper median); `v` is not empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Positional argument `i` of `args` parsed as `T`, or `default` when it is absent.
pub fn arg<T: FromStr>(args: &[String], i: usize, default: T) -> Result<T, Box<dyn Error>>
where
    T::Err: Into<Box<dyn Error>>,
{
    match args.get(i) {
        Some(s) => s.parse().map_err(Into::into),
        None => Ok(default),
    }
}
