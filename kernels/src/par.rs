//! Splitting one call's output across the tasks of the current rayon pool: the one
//! parallel-split helper of `gemm_f32_par`, `qgemm::gemm_u8s8_par`,
//! `bgemm::gemm_bf16_par` ([`split_output`]) and `attention_f32_par` ([`run_parts`] with
//! its own head ranges).

use std::ops::Range;

/// A `(rows, columns)` rectangle of a `[m, n]` output.
pub(crate) type Part = (Range<usize>, Range<usize>);

/// Row tasks per thread, at most, when an op's rows are split across a pool.
pub(crate) const ROW_TASKS_PER_THREAD: usize = 4;
/// Rows a task keeps at least when the split gives a thread more than one task (each task
/// streams the weights once per block of its rows, so tasks stay big enough for that to
/// stay small next to their FMAs).
pub(crate) const MIN_ROWS_PER_TASK: usize = 128;

/// How many tasks an op over `m` rows splits into on `threads` threads: a multiple of
/// `threads`, up to [`ROW_TASKS_PER_THREAD`] per thread while each task keeps at least
/// [`MIN_ROWS_PER_TASK`] rows, else one per thread. More tasks than threads let rayon's
/// work stealing move rows from a thread the host slows down (a shared physical core,
/// steal time on a VM) to the others, where one even share per thread made every op wait
/// for the slowest (kernels/PERF.md, "Row tasks"). Which rows a task gets never changes a
/// result bit: every row is computed the same way wherever it runs.
pub(crate) fn row_tasks(m: usize, threads: usize) -> usize {
    let t = threads.max(1);
    if t == 1 {
        return 1;
    }
    t * (m / (t * MIN_ROWS_PER_TASK)).clamp(1, ROW_TASKS_PER_THREAD)
}

/// Rows per task when an op over `m` rows is split across `threads` threads: an even share
/// of the tasks above (one task per thread for a query's rows, up to four per thread on
/// long batches), at least 1. The kernels' row splits and the engine's use this one share.
/// Not rounded up to whole MR-row tiles: that left a query's threads unbalanced (128 rows
/// went 72 + 56 on MR = 12; even shares took int8 batch 1 x 128 from 8.45 to 7.92 ms).
pub fn row_share(m: usize, threads: usize) -> usize {
    m.div_ceil(row_tasks(m, threads)).max(1)
}

/// Disjoint rectangles covering `[m, n]`, one per task: ranges of whole `nr`-column weight
/// panels when `m <= column_split_max_m` (a query: each thread streams its share of the
/// weights), else [`row_share`] rows each (not whole MR tiles: 128 rows on MR = 12
/// went 72 + 56). One part for `threads <= 1` or an empty output.
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
        let per = row_share(m, threads);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_tasks_are_whole_rounds_of_big_enough_tasks() {
        for threads in 1..=9 {
            for m in (0..5000).step_by(7) {
                let n = row_tasks(m, threads);
                if threads == 1 {
                    assert_eq!(n, 1);
                    continue;
                }
                assert_eq!(n % threads, 0, "m {m} threads {threads}: {n} tasks");
                assert!(n <= threads * ROW_TASKS_PER_THREAD);
                if n > threads {
                    assert!(m / n >= MIN_ROWS_PER_TASK, "m {m}: {n} tasks of {}", m / n);
                }
            }
        }
        assert_eq!(row_tasks(128, 2), 2); // a 128-token query: one share per thread
        assert_eq!(row_tasks(512, 2), 4);
        assert_eq!(row_tasks(2048, 2), 8);
        assert_eq!(row_tasks(1 << 20, 2), 8);
    }

    #[test]
    fn row_parts_cover_the_rows_once() {
        for threads in 2..=4 {
            for m in [97, 128, 300, 513, 1024, 2048, 4095] {
                let p = parts(m, 64, 32, threads, 16);
                assert_eq!(p.len(), row_tasks(m, threads).min(m));
                let mut next = 0;
                for (rows, cols) in &p {
                    assert_eq!(rows.start, next);
                    assert!(!rows.is_empty());
                    assert_eq!(cols, &(0..64));
                    next = rows.end;
                }
                assert_eq!(next, m);
            }
        }
    }
}
