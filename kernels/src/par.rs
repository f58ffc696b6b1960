//! Splitting one GEMM call's output across the tasks of the current rayon pool: the
//! shared part of `gemm_f32_par`, `qgemm::gemm_u8s8_par` and `bgemm::gemm_bf16_par`.

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
pub(crate) fn run_parts(mut parts: Vec<Part>, run: impl Fn(Part) + Sync) {
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

/// An output pointer shared by tasks that each write a disjoint part of it.
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used for disjoint writes, joined before the borrow of the output ends.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
