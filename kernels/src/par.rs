//! Splitting one call's output across the tasks of the current rayon pool: the one
//! parallel-split helper of `gemm_f32_par`, `qgemm::gemm_u8s8_par`,
//! `bgemm::gemm_bf16_par` ([`split_output`]) and `attention_f32_par` ([`run_parts`] with
//! its own head ranges).

use std::ops::Range;

/// A `(rows, columns)` rectangle of a `[m, n]` output.
pub(crate) type Part = (Range<usize>, Range<usize>);

/// Disjoint rectangles covering `[m, n]`, one per task: ranges of whole `nr`-column weight
/// panels when `m <= column_split_max_m` (a query: each thread streams its share of the
/// weights), else even row shares (not whole MR tiles: 128 rows on MR = 12 went 72 + 56).
/// One part for `threads <= 1` or an empty output.
pub(crate) fn parts(
    m: usize,
    n: usize,
    nr: usize,
    threads: usize,
    column_split_max_m: usize,
) -> Vec<Part> {
    let mut parts = Vec::new();
    if threads <= 1 || m == 0 || n == 0 {
        parts.push((0..m, 0..n));
    } else if m <= column_split_max_m {
        let panels = n.div_ceil(nr);
        let per = panels.div_ceil(threads);
        let mut p = 0;
        while p < panels {
            let end = (p + per).min(panels);
            parts.push((0..m, p * nr..(end * nr).min(n)));
            p = end;
        }
    } else {
        let per = m.div_ceil(threads);
        let mut r = 0;
        while r < m {
            let end = (r + per).min(m);
            parts.push((r..end, 0..n));
            r = end;
        }
    }
    parts
}

/// Runs `run` on every part, the first on this thread and the others as tasks of the
/// current rayon pool, and returns when all are done.
pub(crate) fn run_parts<P: Send>(mut parts: Vec<P>, run: impl Fn(P) + Sync) {
    if parts.len() <= 1 {
        if let Some(p) = parts.pop() {
            run(p);
        }
        return;
    }
    let run = &run;
    rayon::scope(|s| {
        let mut it = parts.into_iter();
        let mine = it.next().expect("at least two parts");
        for part in it {
            s.spawn(move |_| run(part));
        }
        run(mine);
    });
}

/// Splits a `[m, n]` row-major output `c` into [`parts`] and runs `run(part, at)` on
/// each ([`run_parts`]), `at` pointing at the part's first element (row `rows.start`,
/// column `cols.start`; row stride `n`). The parts are disjoint rectangles of `c`, so
/// `run` may write its part through `at` while the others write theirs; `c` stays
/// borrowed until all are done.
pub(crate) fn split_output(
    c: &mut [f32],
    (m, n): (usize, usize),
    nr: usize,
    threads: usize,
    column_split_max_m: usize,
    run: impl Fn(Part, *mut f32) + Sync,
) {
    debug_assert!(c.len() >= m * n);
    let c = SendPtr(c.as_mut_ptr());
    let parts = parts(m, n, nr, threads, column_split_max_m);
    run_parts(parts, |(rows, cols): Part| {
        let c = &c;
        // In bounds (or one past the end for an empty part): rows.start <= m and
        // cols.start <= n, and wrapping_add needs no unsafe for the address itself.
        let at = c.0.wrapping_add(rows.start * n + cols.start);
        run((rows, cols), at)
    });
}

/// A pointer shared by tasks that each write a disjoint part of what it points to.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
// SAFETY: only used for disjoint writes, joined before the borrow of the output ends.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
