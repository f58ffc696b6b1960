"""Peak memory of `e5embed embed` over a large mixed-length corpus (issue #4's memory target).

Generates N texts (default 100,000) with tools/compare_corpus.py's log-normal lengths (median
40 tokens, 12% over 100, a few cut at max_seq_length) from its fixed seed and the model's own
tokenizer, caches the file under $E5EMBED_CACHE/memory/, then for each precision runs

    target/release/e5embed embed --model MODEL --input CORPUS --output TMP.npy \
        --precision P --threads T --no-progress

holding /tmp/e5embed-bench.lock exclusively (as every measurement on this machine does), and
prints the command's own summary line ("RSS after load X MB, peak while embedding Y MB") with
the ratio peak / after-load. Exits 1 when a ratio is above --max-ratio (default 1.2, the
target). "After load" is the process's RSS once the model is loaded and packed (weights,
tokenizer, thread pool) and, as `embed` does for a file before its first text
(`Embedder::prepare_for_bulk`), one scratch arena is grown to the token budget and the word-
embedding table, used where it lies in the mapped model file, is read in; the peak is VmHWM
reset at that point (/proc/self/clear_refs), so it is everything the embedding run adds on
top. (Since the packed-weights cache, a load maps the table and grows scratch to need: without
the preparation the ratio measured the table's pages and the arena being reached, 1.4-2.0x,
not growth with the work.)
"""

from __future__ import annotations

import argparse
import fcntl
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import compare_corpus
from common import REPO_DIR, cache_dir, models_dir

LOCK = "/tmp/e5embed-bench.lock"
SUMMARY = re.compile(
    r"embedded (\d+) texts \((\d+) tokens, (\d+) truncated\) in ([\d.]+) s: ([\d.]+) texts/s; "
    r"RSS after load ([\d.]+) MB, peak while embedding ([\d.]+) MB"
)


def corpus_file(model_dir: Path, n_texts: int, max_seq_length: int) -> Path:
    out = cache_dir() / "memory" / f"corpus-{model_dir.name}-{n_texts}-seed{compare_corpus.SEED}.txt"
    if out.is_file():
        print(f"[memory-check] corpus {out} (cached)", file=sys.stderr)
        return out
    t0 = time.time()
    c = compare_corpus.build(model_dir / "tokenizer.json", n_texts, max_seq_length)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    c.write(tmp)
    tmp.rename(out)
    s = c.summary()
    print(f"[memory-check] corpus {out}: {s['texts']} texts, {s['tokens']} tokens, median "
          f"{s['median_tokens']:.0f}, {100 * s['share_over_100']:.1f}% over 100, {s['truncated']} "
          f"cut, sha256 {s['sha256'][:16]}... ({time.time() - t0:.0f} s)", file=sys.stderr)
    return out


def max_seq_length(model_dir: Path) -> int:
    import json
    p = model_dir / "sentence_bert_config.json"
    if p.is_file():
        return int(json.loads(p.read_text())["max_seq_length"])
    return int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="e5-small-v2-shape", help="model directory or a name under $E5EMBED_MODELS")
    ap.add_argument("--texts", type=int, default=100_000)
    ap.add_argument("--precisions", default="f32,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-ratio", type=float, default=1.2)
    ap.add_argument("--binary", default=str(REPO_DIR / "target" / "release" / "e5embed"))
    ap.add_argument("--no-lock", action="store_true", help="do not take the bench lock")
    ap.add_argument("extra", nargs="*", help="more `e5embed embed` arguments (after --)")
    a = ap.parse_args(argv)

    model_dir = Path(a.model) if Path(a.model).is_dir() else models_dir() / a.model
    corpus = corpus_file(model_dir, a.texts, max_seq_length(model_dir))
    worst = 0.0
    for precision in a.precisions.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [a.binary, "embed", "--model", str(model_dir), "--input", str(corpus),
                   "--output", str(Path(tmp) / "vectors.npy"), "--precision", precision,
                   "--threads", str(a.threads), "--no-progress", *a.extra]
            shown = " ".join(["e5embed", *cmd[1:4], "--input", corpus.name, "--output", "x.npy", *cmd[8:]])
            print(f"$ {shown}", flush=True)
            with open(LOCK, "a") as lock:
                if not a.no_lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                p = subprocess.run(cmd, capture_output=True, text=True)
            lines = [l for l in p.stderr.splitlines() if not l.startswith("warning: text ")]
            if p.returncode != 0:
                print("\n".join(lines), file=sys.stderr)
                return p.returncode
            summary = next((l for l in lines if SUMMARY.search(l)), None)
            if summary is None:
                print("no summary line in:\n" + "\n".join(lines), file=sys.stderr)
                return 2
            m = SUMMARY.search(summary)
            ratio = float(m.group(7)) / float(m.group(6))
            worst = max(worst, ratio)
            print(summary)
            print(f"{precision}: peak / after load = {ratio:.3f} (target <= {a.max_ratio})", flush=True)
    return 0 if worst <= a.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
