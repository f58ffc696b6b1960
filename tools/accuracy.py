"""Accuracy of e5embed's precisions and of ONNX Runtime against e5embed f32 (issues #5 and #6).

Run through the wrapper `tools/accuracy` (it makes the venv, fetches the models, builds e5embed):

    tools/accuracy [--models all-MiniLM-L6-v2,paraphrase-MiniLM-L3-v2] [--quick] [--json FILE]

Texts: tools/accuracy_sentences.py builds a deterministic set of English sentences (3,000; 300
with --quick) and retrieval queries (300; 60 with --quick), written to
$E5EMBED_CACHE/accuracy/ and identified by sha256 in the report.

Engines, per model, all embedding the same texts:
  * e5embed at every precision `e5embed info --json` lists (its "precisions"), via
    `e5embed embed --precision P --input texts.txt --output X.npy`; at int8 also with
    --int8-gemms qkv,out,up,down ("all-int8": every GEMM in int8, not only the default set);
  * ONNX Runtime fp32 on the tools/onnx_bert.py graph of the same weights, and ONNX Runtime int8
    on its quantize_dynamic version: both graphs come from tools/compare.py's onnx_graphs() (same
    cache, same quantization settings), run by tools/compare_engines.OrtPeer (sentence-transformers
    tokenization and batching: the model's tokenizer.json without its own padding/truncation,
    truncation at max_seq_length, batches of 32 padded to their longest; masked mean pooling,
    L2 normalization iff modules.json has Normalize). Before any run the peer tokenization is
    checked id for id against tools/make_reference.py's (the e5embed tests' reference);
  * an extra ORT int8 row with per-channel weights (per_channel=True, all else as tools/compare),
    clearly labelled, to show what per-tensor weight scales cost (--no-ort-per-channel drops it).

Metrics, every engine against e5embed f32 (vectors L2-normalized before any cosine):
  * cosine per sentence: mean, min, 1st percentile;
  * retrieval (queries against all sentences as passages, cosine scores, exact search): top-1
    agreement (% of queries with the same top-1 passage), top-10 overlap (mean |top10 ∩ f32 top10|
    / 10), Spearman rank correlation between the engine's and f32's scores of f32's top-100
    passages (mean over queries), and, for orientation, how often the query's source sentence is
    the top-1 passage.

All of a model's heavy steps (e5embed and ORT runs) happen under one hold of an exclusive flock on
/tmp/e5embed-bench.lock, so other engineers' timings on this shared machine are never disturbed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# As in tools/compare.py: keep HF tokenizers' batch parallelism after the e5embed subprocesses fork.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import accuracy_sentences  # noqa: E402
from common import REPO_DIR, cache_dir, sha256_file  # noqa: E402
from compare import check_tokenization, machine_header, onnx_graphs, resolve_model  # noqa: E402
from compare_engines import ModelInfo, OrtPeer  # noqa: E402

DEFAULT_MODELS = "all-MiniLM-L6-v2,paraphrase-MiniLM-L3-v2"
ALL_INT8_GEMMS = "qkv,out,up,down"
TOP_K = (1, 10, 100)


def log(msg: str) -> None:
    print(f"[accuracy] {msg}", file=sys.stderr, flush=True)


@contextmanager
def bench_lock(path: str, what: str):
    """Exclusive flock on the shared bench lock (the same lock as `flock /tmp/e5embed-bench.lock`)."""
    with open(path, "a") as f:
        t0 = time.monotonic()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{what}: waiting for {path} (someone is benchmarking)")
            fcntl.flock(f, fcntl.LOCK_EX)
            log(f"{what}: got the lock after {time.monotonic() - t0:.0f} s")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------
# Texts


def write_lines(path: Path, lines: list[str]) -> str:
    """Write one text per line (UTF-8, '\\n'), return the file's sha256."""
    assert all("\n" not in l and "\r" not in l for l in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return sha256_file(path)


def build_texts(n_sentences: int, n_queries: int) -> dict:
    sentences, stats = accuracy_sentences.build(n_sentences)
    queries = accuracy_sentences.make_queries(sentences, n_queries)
    out = cache_dir() / "accuracy"
    s_file, q_file = out / f"sentences-{n_sentences}.txt", out / f"queries-{n_sentences}-{n_queries}.txt"
    # One input file per engine run: the sentences, then the queries.
    all_file = out / f"texts-{n_sentences}-{n_queries}.txt"
    s_sha = write_lines(s_file, sentences)
    q_sha = write_lines(q_file, [q for q, _ in queries])
    write_lines(all_file, sentences + [q for q, _ in queries])
    log(f"sentences: {len(sentences)} ({s_file}, sha256 {s_sha[:12]}), queries: {len(queries)}")
    return {"sentences": sentences, "queries": [q for q, _ in queries], "query_source": [i for _, i in queries],
            "sentences_file": str(s_file), "sentences_sha256": s_sha, "queries_file": str(q_file),
            "queries_sha256": q_sha, "all_file": all_file, "construction": stats}


# ------------------------------------------------------------------------------------------------
# Engines


def e5embed_info(binary: Path, model_dir: Path) -> dict:
    r = subprocess.run([str(binary), "info", "--model", str(model_dir), "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"e5embed info failed: {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout)


def e5embed_embed(binary: Path, model_dir: Path, precision: str, texts_file: Path, out: Path, threads: int,
                  gemms: str | None) -> dict:
    """Run `e5embed embed` over a file into .npy; gemms sets the hidden developer option
    --int8-gemms (None: the engine's default set).

    The caller holds the bench lock."""
    env = dict(os.environ)
    args = [str(binary), "embed", "--model", str(model_dir), "--precision", precision, "--threads", str(threads),
            "--input", str(texts_file), "--output", str(out), "--no-progress"]
    if gemms is not None:
        args += ["--int8-gemms", gemms]
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    summary = [l for l in r.stderr.strip().splitlines() if l.strip()]
    return {"command": shlex.join(args),
            "stderr_last_line": summary[-1] if summary else "", "wall_s": round(wall, 2)}


def per_channel_graph(fp32: Path, quant: dict) -> tuple[Path, dict]:
    """tools/compare's int8 settings with per_channel=True: an extra, clearly labelled ORT row.

    tools/compare quantizes weights per tensor (the HF repos' avx512_vnni files); e5embed quantizes
    them per output channel. This row shows how much of ORT int8's loss is that choice. Cached under
    $E5EMBED_CACHE/accuracy/graphs/, keyed like tools/compare's graphs (weights, builder, ORT version).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = cache_dir() / "accuracy" / "graphs" / fp32.parent.name / "model_qint8_per_channel.onnx"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp.onnx")
        log(f"quantizing {fp32.parent.name} per channel (extra ORT row)")
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=False)
        os.replace(tmp, out)
    return out, quant | {"per_channel": True}


def run_engines(args, model_dir: Path, texts: dict, work: Path) -> tuple[list[dict], dict]:
    """Embed sentences + queries with every engine; returns (engines with their vectors, e5embed info).

    All of a model's runs happen under one hold of the bench lock: one wait per model instead of
    one per engine on a machine where other engineers queue for the lock too.
    """
    with bench_lock(args.lock, f"{model_dir.name}: all engines"):
        return _run_engines(args, model_dir, texts, work)


def _run_engines(args, model_dir: Path, texts: dict, work: Path) -> tuple[list[dict], dict]:
    info = e5embed_info(Path(args.binary), model_dir)
    precisions = list(info.get("precisions", ["f32"]))
    if "f32" not in precisions:
        raise SystemExit(f"e5embed info lists no f32 precision ({precisions}); f32 is the reference")
    precisions = ["f32"] + [p for p in precisions if p != "f32"]
    all_texts = texts["sentences"] + texts["queries"]
    engines = []

    variants = []
    for p in precisions:
        variants.append((f"e5embed-{p}", f"e5embed {p}", p, None))
        if p == "int8":
            variants.append(("e5embed-int8-all", f"e5embed int8, all GEMMs int8 (--int8-gemms {ALL_INT8_GEMMS})",
                             p, ALL_INT8_GEMMS))
    for key, label, p, gemms in variants:
        out = work / f"{model_dir.name}-{key}.npy"
        log(f"{model_dir.name}: {label} on {len(all_texts)} texts")
        run = e5embed_embed(Path(args.binary), model_dir, p, texts["all_file"], out, args.threads, gemms)
        v = np.load(out).astype(np.float32)
        if v.shape[0] != len(all_texts):
            raise SystemExit(f"{label}: {v.shape[0]} vectors for {len(all_texts)} texts")
        engines.append({"key": key, "label": label, "vectors": v, "settings": run})

    st = ModelInfo.load(model_dir)
    check_tokenization(st, all_texts)  # exits if the peer's ids differ from make_reference's
    fp32, int8, quant = onnx_graphs(model_dir)  # tools/compare's graphs and quantization, cached
    peers = [("ort-fp32", "ORT fp32", fp32, "fp32 graph"), ("ort-int8", "ORT int8", int8, quant)]
    if args.ort_per_channel:
        pc, pc_quant = per_channel_graph(fp32, quant)
        peers.append(("ort-int8-pc", "ORT int8 per-channel weights (extra; not tools/compare's setting)", pc, pc_quant))
    for key, label, graph, note in peers:
        log(f"{model_dir.name}: {label} on {len(all_texts)} texts")
        t0 = time.perf_counter()
        peer = OrtPeer(st, graph, args.threads, key, label, note)
        v = peer.embed(all_texts)
        wall = time.perf_counter() - t0
        engines.append({"key": key, "label": label, "vectors": v,
                        "settings": peer.settings | {"wall_s": round(wall, 2)}})
    return engines, info


# ------------------------------------------------------------------------------------------------
# Metrics


def normalize(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> dict:
    """Row-wise cosine of two [n, d] matrices of normalized vectors: mean, min, 1st percentile."""
    c = (a * b).sum(axis=1)
    return {"mean": float(c.mean()), "min": float(c.min()), "p1": float(np.percentile(c, 1)),
            "argmin": int(c.argmin()), "n": int(c.size)}


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (ties: lower index first)."""
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    rows = np.arange(scores.shape[0])[:, None]
    order = np.lexsort((part, -scores[rows, part]), axis=1)
    return part[rows, order]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho of two 1-D arrays (ranks by argsort; float scores have no practical ties)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / np.sqrt((rx * rx).sum() * (ry * ry).sum()))


def retrieval(q: np.ndarray, p: np.ndarray, ref_q: np.ndarray, ref_p: np.ndarray, source: np.ndarray) -> dict:
    """Retrieval agreement of one engine (q, p) with the reference (ref_q, ref_p)."""
    s, s_ref = q @ p.T, ref_q @ ref_p.T
    kmax = min(max(TOP_K), p.shape[0])
    top, top_ref = top_k(s, kmax), top_k(s_ref, kmax)
    k10 = min(10, kmax)
    overlap = [len(set(a[:k10]) & set(b[:k10])) / k10 for a, b in zip(top, top_ref)]
    rows = np.arange(s.shape[0])
    rho = [spearman(s_ref[i, top_ref[i]], s[i, top_ref[i]]) for i in rows]
    return {"queries": int(q.shape[0]), "passages": int(p.shape[0]),
            "top1_agreement": float((top[:, 0] == top_ref[:, 0]).mean()),
            "top10_overlap": float(np.mean(overlap)), "top10_overlap_min": float(np.min(overlap)),
            "spearman_top100_mean": float(np.mean(rho)), "spearman_top100_min": float(np.min(rho)),
            "source_at_1": float((top[:, 0] == source).mean()),
            "top1_flips": [int(i) for i in np.nonzero(top[:, 0] != top_ref[:, 0])[0]]}


def evaluate(engines: list[dict], texts: dict) -> dict:
    n = len(texts["sentences"])
    source = np.array(texts["query_source"])
    ref = normalize(engines[0]["vectors"])
    ort_fp32 = next(normalize(e["vectors"]) for e in engines if e["key"] == "ort-fp32")
    ref_p, ref_q = ref[:n], ref[n:]
    words = np.array([len(t.split()) for t in texts["sentences"]])
    res = {}
    for e in engines:
        v = normalize(e["vectors"])
        r = {"cosine_vs_e5embed_f32": cosine_stats(v[:n], ref_p),
             "retrieval_vs_e5embed_f32": retrieval(v[n:], v[:n], ref_q, ref_p, source)}
        # By length: does the error grow with the text? (mean and min cosine per word bucket)
        c = (v[:n] * ref_p).sum(axis=1)
        r["cosine_by_words"] = {f"{lo}-{hi}": {"mean": float(c[m].mean()), "min": float(c[m].min()), "n": int(m.sum())}
                                for lo, hi, _ in accuracy_sentences.LENGTH_BUCKETS
                                if (m := (words >= lo) & (words <= hi)).any()}
        if e["key"].startswith("ort-int8"):  # ORT's own quantization loss, against ORT fp32
            r["cosine_vs_ort_fp32"] = cosine_stats(v[:n], ort_fp32[:n])
        res[e["key"]] = r
    # Variants that gave bitwise identical vectors (e.g. an env knob the binary does not honour,
    # or a default that already equals the variant): flagged in the report.
    for i, a in enumerate(engines):
        for b in engines[:i]:
            if a["vectors"].shape == b["vectors"].shape and np.array_equal(a["vectors"], b["vectors"]):
                res[a["key"]]["identical_to"] = b["key"]
    return res


# ------------------------------------------------------------------------------------------------
# Report


def markdown(rep: dict) -> str:
    h, t = rep["header"], rep["texts"]
    c = t["construction"]
    lines = [
        "# tools/accuracy: e5embed precisions and ONNX Runtime vs e5embed f32", "",
        f"{h['date']} · {h['cpu_model']} ({h['cpus']} CPUs) · commit {h['commit']}"
        f"{' + uncommitted engine changes' if h['engine_tree_dirty'] else ''} · `{rep['command']}` · "
        f"onnxruntime {rep['onnxruntime']} · threads {rep['threads']}", "",
        f"Sentences: {c['texts']:,} (sha256 `{t['sentences_sha256'][:16]}…`, {c['words_min']}-{c['words_max']} words, "
        f"median {c['words_median']}; per bucket " + ", ".join(f"{k}: {v}" for k, v in c["buckets"].items())
        + f"), built by tools/accuracy_sentences.py from Python {c['python']}'s pydoc topics and stdlib docstrings, "
        f"tests/fixtures/texts.json and {c['templates']} template sentences. "
        f"Queries: {len(t['queries'])} spans of 3-8 words cut from sentences (sha256 `{t['queries_sha256'][:16]}…`), "
        "searched against all sentences as passages, without prefixes (the E5 `query: `/`passage: ` prefixes do "
        "not apply to these MiniLM models).", "",
    ]
    for m in rep["models"]:
        lines += [f"## {m['name']}", "",
                  f"max_seq_length {m['max_seq_length']}, normalize {m['normalize']}; "
                  f"{m['truncated_sentences']} of {c['texts']:,} sentences truncated at max_seq_length; "
                  f"e5embed isa {m['e5embed_info'].get('isa', '?')}, int8 path {m['e5embed_info'].get('int8_path', '-')}.",
                  "",
                  "| engine / precision | cosine mean | cosine min | cosine p1 | top-1 agree | top-10 overlap "
                  "| Spearman top-100 (mean / min) | source @1 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for e in m["engines"]:
            r = m["results"][e["key"]]
            cs, rt = r["cosine_vs_e5embed_f32"], r["retrieval_vs_e5embed_f32"]
            label = e["label"] + (" (reference)" if e["key"] == "e5embed-f32" else "")
            if e["key"] == "ort-fp32":
                label += " (sanity: should be ~1)"
            lines.append(f"| {label} | {cs['mean']:.6f} | {cs['min']:.6f} | {cs['p1']:.6f} | "
                         f"{rt['top1_agreement']:.1%} | {rt['top10_overlap']:.4f} | "
                         f"{rt['spearman_top100_mean']:.4f} / {rt['spearman_top100_min']:.4f} | {rt['source_at_1']:.1%} |")
        labels = {e["key"]: e["label"] for e in m["engines"]}
        for e in m["engines"]:
            oi = m["results"][e["key"]].get("cosine_vs_ort_fp32")
            if oi:
                lines += ["", f"{e['label']} against ORT fp32 (ORT's own quantization loss): cosine mean "
                              f"{oi['mean']:.6f}, min {oi['min']:.6f}, p1 {oi['p1']:.6f}."]
        for k, r in m["results"].items():
            if "identical_to" in r:
                lines += ["", f"**Note**: {labels[k]} gave vectors bitwise identical to {labels[r['identical_to']]}."]
        # Mean cosine per length bucket: where the int8 error sits.
        buckets = list(next(iter(m["results"].values()))["cosine_by_words"])
        lines += ["", "Mean cosine to e5embed f32 by sentence length (words):", "",
                  "| engine / precision | " + " | ".join(buckets) + " |",
                  "| --- | " + " | ".join("---:" for _ in buckets) + " |"]
        for e in m["engines"][1:]:
            cw = m["results"][e["key"]]["cosine_by_words"]
            lines.append(f"| {e['label']} | " + " | ".join(f"{cw[b]['mean']:.5f}" for b in buckets) + " |")
        lines.append("")
    q = rep["ort_int8_settings"]
    lines += [
        "Method: every vector is L2-normalized before cosine; e5embed f32 is the reference for every row. "
        "Cosine p1 = 1st percentile over sentences. Retrieval: exact cosine search of each query over all "
        "sentences; top-1 agree = % of queries whose best passage is f32's; top-10 overlap = mean "
        "|top10 ∩ top10_f32| / 10; Spearman = rank correlation between the engine's and f32's scores of "
        "f32's top-100 passages, per query, mean / min over queries; source @1 = % of queries whose own "
        "source sentence ranks first (a span can occur in several sentences, so < 100% even for f32).",
        "",
        "Engines: e5embed via `e5embed embed --precision P --input … --output ….npy` for every precision "
        "`e5embed info --json` lists; the int8 row uses the engine's default int8 GEMM set, the all-GEMMs row "
        f"passes --int8-gemms {ALL_INT8_GEMMS}. ONNX Runtime {rep['onnxruntime']} (CPUExecutionProvider, "
        "ORT_ENABLE_ALL) on the tools/onnx_bert.py graph of the same safetensors, sentence-transformers "
        "tokenization (tokenizer.json without its own padding/truncation, truncation at max_seq_length; ids "
        "checked against tools/make_reference.py) and batching (32, padded to the batch's longest), masked "
        "mean pooling, Normalize iff modules.json has it. ORT int8 = tools/compare's quantization: "
        + ", ".join(f"{k} {v}" for k, v in q.items()) + ". The per-channel row (if present) changes only "
        "per_channel to True. ORT's dynamic activation quantization is per tensor over the whole padded "
        "batch, so an ORT int8 vector also depends on its batch mates; e5embed quantizes activations per token.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Accuracy of e5embed's precisions and ONNX Runtime vs e5embed f32.")
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma list of model names or directories "
                                                             f"(default {DEFAULT_MODELS})")
    ap.add_argument("--quick", action="store_true", help="development run: 300 sentences, 60 queries")
    ap.add_argument("--sentences", type=int, help="sentence count (default 3000, --quick 300)")
    ap.add_argument("--queries", type=int, help="retrieval queries (default 300, --quick 60)")
    ap.add_argument("--json", metavar="FILE", help="also write every raw number to FILE")
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    ap.add_argument("--no-ort-per-channel", dest="ort_per_channel", action="store_false",
                    help="skip the extra ORT int8 row with per-channel weights")
    ap.add_argument("--binary", default=str(REPO_DIR / "target" / "release" / "e5embed"))
    ap.add_argument("--lock", default="/tmp/e5embed-bench.lock")
    args = ap.parse_args(argv)
    args.sentences = args.sentences or (300 if args.quick else 3000)
    args.queries = args.queries or (60 if args.quick else 300)

    import onnxruntime

    header = machine_header()
    texts = build_texts(args.sentences, args.queries)
    work = cache_dir() / "accuracy" / "vectors"
    work.mkdir(parents=True, exist_ok=True)
    models, ort_quant = [], {}
    for name in [m for m in args.models.split(",") if m]:
        model_dir = resolve_model(name)
        st = ModelInfo.load(model_dir)
        engines, info = run_engines(args, model_dir, texts, work)
        ort_quant = next(e["settings"]["note"] for e in engines if e["key"] == "ort-int8")
        from make_reference import StConfig, tokenize

        enc = tokenize(model_dir, StConfig.load(model_dir), texts["sentences"])
        models.append({
            "name": model_dir.name, "dir": str(model_dir), "max_seq_length": st.max_seq_length,
            "normalize": st.normalize, "truncated_sentences": sum(e.truncated for e in enc),
            "model_safetensors_sha256": sha256_file(model_dir / "model.safetensors"),
            "e5embed_info": info, "results": evaluate(engines, texts),
            "engines": [{"key": e["key"], "label": e["label"], "settings": e["settings"]} for e in engines],
        })
    rep = {
        "header": header,
        "command": os.environ.get("E5EMBED_ACCURACY_CMD") or shlex.join(["tools/accuracy.py", *sys.argv[1:]]),
        "onnxruntime": onnxruntime.__version__, "threads": args.threads, "quick": args.quick,
        "texts": {k: v for k, v in texts.items() if k not in ("sentences", "queries", "all_file")}
                 | {"queries": texts["queries"]},
        "ort_int8_settings": ort_quant, "models": models,
    }
    text = markdown(rep)
    sys.stdout.write(text)
    if args.json:
        rep["markdown"] = text
        Path(args.json).write_text(json.dumps(rep, indent=1, default=str) + "\n")
        log(f"raw numbers saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
