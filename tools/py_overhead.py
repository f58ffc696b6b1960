"""Where the Python-side overhead of one `encode(query)` goes (issue 16's 30 us aim).

    $(tools/python-venv.sh) tools/py_overhead.py [--calls 300] [--threads 1]

(after `tools/test-python` or `pip install ./python` into that venv; run it on a quiet machine:
`flock -x /tmp/e5embed-bench.lock ...`). Prints, one run:

1. the binding's own cost on a hot path: `encode([])` (array creation, argument parsing, no
   engine), a failing `encode` (argument parsing, prompt lookup, exception), `tokenize(query)`
   (GIL release and re-acquisition around a short engine call), a property read;
2. the overhead of `encode(query)` (median per call of wall minus `_last_engine_seconds()`, as
   tools/pybench) per model and precision, i.e. per weight footprint: the forward streams the
   weights through the caches, and the interpreter's own working set (thread state, frames,
   the result array, numpy) has to come back from DRAM when the call returns;
3. that cost directly: `numpy.zeros(384)` hot, and right after streaming 160 MB;
4. the same overhead and engine time for the two ways a model's packed weights are held: mapped
   from the packed-weights cache (the default) and packed at load (`weight_cache=False`; in one
   buffer on 2 MiB pages since the change of kernels/PERF.md "Packed weights on huge pages",
   one heap buffer per matrix on 4 KiB pages before), interleaved in rounds, e5-small-v2-shape
   f32 and int8.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import models_dir  # noqa: E402

QUERY = "query: how much protein is"


def med_us(fn, n: int) -> float:
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs) * 1e6


def timed_queries(e, calls: int) -> tuple[list[float], list[float]]:
    """20 warm-up queries, then per call of `calls`: the overhead (wall minus the engine time
    Rust measured in that call) and the engine time, in seconds."""
    for _ in range(20):
        e.encode(QUERY)
    over, eng = [], []
    for _ in range(calls):
        t = time.perf_counter()
        e.encode(QUERY)
        w = time.perf_counter() - t
        g = e._last_engine_seconds()
        over.append(w - g)
        eng.append(g)
    return over, eng


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--page-rounds", type=int, default=5, help="interleaved rounds of part 4")
    ap.add_argument("--only-pages", action="store_true", help="run part 4 only")
    a = ap.parse_args()
    if a.only_pages:
        return pages(a)
    from e5embed import Embedder

    small = Embedder(models_dir() / "paraphrase-MiniLM-L3-v2", precision="int8", threads=a.threads)

    def failing():
        try:
            small.encode(QUERY, batch_size=0)
        except ValueError:
            pass

    print("| hot path (no forward) | median us |")
    print("|---|---:|")
    print(f"| `encode([])` | {med_us(lambda: small.encode([]), 2000):.2f} |")
    print(f"| `encode(q, batch_size=0)` (ValueError) | {med_us(failing, 2000):.2f} |")
    print(f"| `tokenize(q)` | {med_us(lambda: small.tokenize(QUERY), 2000):.2f} |")
    print(f"| `.dim` | {med_us(lambda: small.dim, 2000):.2f} |")
    del small

    print()
    print(f"| model, precision ({a.threads} thread(s)) | weights MB (approx.) | engine median us | overhead median us |")
    print("|---|---:|---:|---:|")
    for name, prec in [("paraphrase-MiniLM-L3-v2", "int8"), ("paraphrase-MiniLM-L3-v2", "f32"),
                       ("e5-small-v2-shape", "int8"), ("e5-small-v2-shape", "f32")]:
        e = Embedder(models_dir() / name, precision=prec, threads=a.threads)
        over, eng = timed_queries(e, a.calls)
        mb = (models_dir() / name / "model.safetensors").stat().st_size / 1e6 / (4 if prec == "int8" else 1)
        print(f"| {name}, {prec} | {mb:.0f} | {statistics.median(eng) * 1e6:.0f} | {statistics.median(over) * 1e6:.1f} |")
        del e

    big = np.ones(40_000_000, dtype=np.float32)
    hot, cold = [], []
    for _ in range(200):
        t = time.perf_counter()
        np.zeros(384, dtype=np.float32)
        hot.append(time.perf_counter() - t)
        big.sum()
        t = time.perf_counter()
        np.zeros(384, dtype=np.float32)
        cold.append(time.perf_counter() - t)
    print()
    print(f"`numpy.zeros(384)`: hot {statistics.median(hot) * 1e6:.2f} us, right after streaming 160 MB "
          f"{statistics.median(cold) * 1e6:.2f} us")
    return pages(a)


def pages(a) -> int:
    """Part 4: weights mapped from the cache against weights packed at load."""
    from e5embed import Embedder

    print()
    print(f"| model, precision ({a.threads} thread(s)), weights | engine median us | overhead median us "
          f"| per-round overhead medians us |")
    print("|---|---:|---:|---|")
    for name, prec in [("e5-small-v2-shape", "f32"), ("e5-small-v2-shape", "int8")]:
        d = models_dir() / name
        # The first cached load writes the packed-weights file when it is missing.
        Embedder(d, precision=prec, threads=a.threads, weight_cache=True)
        arms = {
            "mapped from the cache": Embedder(d, precision=prec, threads=a.threads, weight_cache=True),
            "packed at load": Embedder(d, precision=prec, threads=a.threads, weight_cache=False),
        }
        res = {k: ([], [], []) for k in arms}
        for _ in range(a.page_rounds):
            for k, e in arms.items():
                over, eng = timed_queries(e, a.calls)
                res[k][0].extend(over)
                res[k][1].extend(eng)
                res[k][2].append(statistics.median(over) * 1e6)
        for k, (over, eng, rounds) in res.items():
            print(f"| {name}, {prec}, {k} | {statistics.median(eng) * 1e6:.0f} | "
                  f"{statistics.median(over) * 1e6:.1f} | {', '.join(f'{r:.1f}' for r in rounds)} |")
        del arms
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
