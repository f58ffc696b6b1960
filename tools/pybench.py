"""tools/pybench: the Python package's speed targets (issue 16), measured in one run.

1. `Embedder.encode` of the tools/compare corpus vs `e5embed embed --input` on the same texts,
   same precision (f32) and threads: texts/s (the CLI's own "embedded ... texts/s" line, which
   excludes its model load; encode is timed around the call). Target: within 3%.
2. One 8-token query: the Python-side overhead = the median over calls of `encode(query)`'s wall
   time minus the engine's own time in that same call, timed inside Rust without the GIL
   (`Embedder._last_engine_seconds()`: tokenize + forward + pool + normalize). Target: <= 30 us.
3. e5embed vs fastembed (pointed at a local ONNX export of the same model: tools/compare's
   graph, tools/onnx_bert.py) vs onnxruntime + tokenizers as the model card's ONNX usage
   (tokenize with padding, session.run, attention-masked mean pooling, L2 normalize), on the
   corpus (texts/s) and on single queries (median latency). Target: e5embed ahead on every row.

The corpus rows pair the CLI and encode round by round (--pair-rounds rounds, the target is the
median of the per-round ratios); the other timings are medians of --reps runs. Run it on a quiet machine
(`flock -x /tmp/e5embed-bench.lock tools/pybench`): it takes no lock itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_corpus  # noqa: E402
from common import REPO_DIR, cache_dir, models_dir  # noqa: E402


def log(msg: str) -> None:
    print(f"[pybench] {msg}", file=sys.stderr, flush=True)


def median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cli_corpus_seconds(cli: Path, model: Path, corpus_file: Path, threads: int, reps: int) -> float:
    secs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            r = subprocess.run([str(cli), "embed", "--model", str(model), "--threads", str(threads), "--precision", "f32",
                                "--input", str(corpus_file), "--output", f"{tmp}/out.npy", "--no-progress"],
                               capture_output=True, text=True, check=True)
            m = re.search(r"embedded (\d+) texts .* in ([0-9.]+) s", r.stderr)
            if not m:
                raise SystemExit(f"cannot read the CLI's timing line from: {r.stderr[-500:]}")
            secs.append(float(m.group(2)))
    return statistics.median(secs)


def fastembed_dir(model: Path, onnx: Path) -> Path:
    """A directory fastembed loads offline: the ONNX graph plus the model's tokenizer files."""
    d = cache_dir() / "pybench" / f"fastembed-{model.name}-{onnx.parent.name}"
    if not (d / "model.onnx").exists():
        tmp = Path(tempfile.mkdtemp(dir=cache_dir()))
        for f in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            if (model / f).exists():
                shutil.copy(model / f, tmp / f)
        os.symlink(onnx, tmp / "model.onnx")
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)
    return d


class OrtCard:
    """onnxruntime + tokenizers the way the model card's ONNX usage runs it."""

    def __init__(self, model: Path, onnx: Path, threads: int, max_len: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(str(onnx), so, providers=["CPUExecutionProvider"])
        self.tok = Tokenizer.from_file(str(model / "tokenizer.json"))
        self.tok.enable_truncation(max_len)
        self.tok.enable_padding()
        self.inputs = {i.name for i in self.sess.get_inputs()}

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            enc = self.tok.encode_batch(texts[i:i + batch_size])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            hidden = self.sess.run(None, feed)[0]
            m = mask[..., None].astype(np.float32)
            v = (hidden * m).sum(1) / m.sum(1)
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        return np.concatenate(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="e5-small-v2-shape")
    ap.add_argument("--onnx", required=True, help="the model's ONNX graph (tools/pybench makes it)")
    ap.add_argument("--cli", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--corpus-texts", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5)
    # On a noisy 2-vCPU VM single rounds swing -25%..+19% (docs/python.md): five rounds were too
    # few to judge a 3% margin, so the paired target takes more (each round is two corpus runs).
    ap.add_argument("--pair-rounds", type=int, default=11)
    ap.add_argument("--query-reps", type=int, default=300)
    args = ap.parse_args()

    from e5embed import Embedder

    model = Path(args.model) if Path(args.model).is_dir() else models_dir() / args.model
    e5 = Embedder(model, precision="f32", threads=args.threads)
    corpus = compare_corpus.build(model / "tokenizer.json", args.corpus_texts, e5.max_seq_length)
    texts = corpus.texts
    query = "query: how much protein is"
    n_tok = len(e5.tokenize(query)["input_ids"][0])
    assert n_tok == 8, f"the query has {n_tok} tokens, not 8"

    rows = {}
    # Paired: each round runs the CLI on the corpus, then encode on the same texts, back to back;
    # the target takes the median over rounds of the ratio (the machine's speed drifts between
    # runs minutes apart by more than the 3% margin).
    e5.encode(texts[:50])
    cli_runs, py_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cf = Path(tmp) / "corpus.txt"
        corpus.write(cf)
        for i in range(args.pair_rounds):
            cli_runs.append(cli_corpus_seconds(Path(args.cli), model, cf, args.threads, 1))
            py_runs.append(median_time(lambda: e5.encode(texts), 1))
            log(f"round {i + 1}: CLI {len(texts) / cli_runs[-1]:.1f} texts/s, encode "
                f"{len(texts) / py_runs[-1]:.1f} texts/s ({cli_runs[-1] / py_runs[-1] - 1:+.1%})")
    cli_s, py_s = statistics.median(cli_runs), statistics.median(py_runs)
    ratio = statistics.median(c / p for c, p in zip(cli_runs, py_runs))

    log("single 8-token query: encode vs the engine's own time")
    for _ in range(50):
        e5.encode(query)
    # Paired per call: the wall time of one `encode` minus the engine time Rust measured inside
    # that same call (`_last_engine_seconds`), so the pool's idle/warm state and machine noise
    # cancel; the overhead is the median of those differences.
    enc_t, eng_t, over_t = [], [], []
    for _ in range(args.query_reps):
        t = time.perf_counter()
        e5.encode(query)
        wall = time.perf_counter() - t
        eng = e5._last_engine_seconds()
        enc_t.append(wall)
        eng_t.append(eng)
        over_t.append(wall - eng)
    enc_q, eng_q = statistics.median(enc_t), statistics.median(eng_t)
    over_q = statistics.median(over_t)
    rows["e5embed (Python)"] = (len(texts) / py_s, enc_q)

    log("e5embed Python encode on the corpus, 1 thread (a Ray worker's rate per core)")
    e5_1 = Embedder(model, precision="f32", threads=1)
    one_s = median_time(lambda: e5_1.encode(texts), args.reps)
    del e5_1

    log("fastembed")
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"local/{model.name}"
    TextEmbedding.add_custom_model(name, pooling=PoolingType.MEAN, normalization=True,
                                   sources=ModelSource(hf="local/none"), dim=e5.dim, model_file="model.onnx")
    fe = TextEmbedding(name, specific_model_path=str(fastembed_dir(model, Path(args.onnx))), threads=args.threads,
                       local_files_only=True)
    fe_vec = np.stack(list(fe.embed(texts[:20])))
    e5_vec = e5.encode(texts[:20])
    cos_fe = float(np.min(np.sum(fe_vec * e5_vec, 1)))
    fe_s = median_time(lambda: list(fe.embed(texts)), args.reps)
    list(fe.embed([query]))
    fe_q = statistics.median([median_time(lambda: list(fe.embed([query])), 1) for _ in range(args.query_reps // 3)])
    rows["fastembed (ONNX Runtime, batch 256)"] = (len(texts) / fe_s, fe_q)

    log("onnxruntime + tokenizers")
    ort_card = OrtCard(model, Path(args.onnx), args.threads, e5.max_seq_length)
    cos_ort = float(np.min(np.sum(ort_card.embed(texts[:20]) * e5_vec, 1)))
    ort_s = median_time(lambda: ort_card.embed(texts), args.reps)
    ort_card.embed([query])
    ort_q = statistics.median([median_time(lambda: ort_card.embed([query]), 1) for _ in range(args.query_reps // 3)])
    rows["onnxruntime + tokenizers (batch 32)"] = (len(texts) / ort_s, ort_q)

    import fastembed
    import onnxruntime

    commit = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    s = corpus.summary()
    print(f"Machine: {cpu}, {os.cpu_count()} CPUs; Python {platform.python_version()}; commit {commit}; "
          f"model {model.name}, f32, {args.threads} threads; e5embed {e5.isa}; fastembed {fastembed.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(f"Corpus: tools/compare_corpus.py, {s['texts']} texts, {s['tokens']} tokens (median {s['median_tokens']}); "
          f"query: {query!r} ({n_tok} tokens). Medians of {args.reps} corpus runs, {args.query_reps} query calls.")
    print()
    print("| target | measured | met |")
    print("|---|---|---|")
    print(f"| encode texts/s within 3% of `e5embed embed --input` (paired, {args.pair_rounds} rounds) | medians "
          f"{len(texts) / py_s:.1f} vs {len(texts) / cli_s:.1f} texts/s; median of per-round ratios "
          f"{(ratio - 1) * 100:+.1f}% (rounds: {', '.join(f'{c / p - 1:+.1%}' for c, p in zip(cli_runs, py_runs))}) | "
          f"{'yes' if ratio >= 0.97 else 'no'} |")
    over = over_q * 1e6
    print(f"| 8-token query: Python overhead <= 30 us | median per call of (encode wall - engine time of that "
          f"call) = {over:.1f} us (encode median {enc_q * 1e6:.1f} us, engine median {eng_q * 1e6:.1f} us) | "
          f"{'yes' if over <= 30 else 'no'} |")
    print()
    print("| engine | corpus texts/s | single query (median ms) |")
    print("|---|---|---|")
    print(f"| e5embed CLI (`embed --input`) | {len(texts) / cli_s:.1f} | |")
    for k, (tps, q) in rows.items():
        print(f"| {k} | {tps:.1f} | {q * 1e3:.2f} |")
    print(f"| e5embed (Python), 1 thread: per core | {len(texts) / one_s:.1f} | |")
    best_corpus = max(rows, key=lambda k: rows[k][0])
    best_query = min(rows, key=lambda k: rows[k][1])
    print()
    print(f"Fastest on the corpus: {best_corpus}; on single queries: {best_query}. "
          f"Agreement with e5embed on 20 texts: min cosine fastembed {cos_fe:.6f}, onnxruntime {cos_ort:.6f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
