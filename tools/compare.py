"""Side-by-side speed and agreement of e5embed and its peers on one machine, in one run.

Run through the wrapper `tools/compare` (it makes the venv, fetches the model, builds e5embed):

    tools/compare [--model NAME_OR_DIR] [--threads 2] [--quick] [--json FILE] [--rounds N] ...

Engines: e5embed at every precision its `info --json` lists (f32 when it lists none), ONNX Runtime
fp32 and int8 (dynamic quantization), OpenVINO f32 and bf16, all on the same model: the ONNX graph
that tools/onnx_bert.py builds from the model directory's safetensors (cached per weights hash).

Workloads (one Markdown table row each):
  * batch 1 at 8 ... 512 tokens (capped at the model's max_seq_length): median ms per forward;
  * batch 32 x 128 tokens: tokens/s;
  * a mixed-length corpus (tools/compare_corpus.py, 2,000 texts by default): texts/s, text in,
    vectors out. Peers run it as sentence-transformers does (compare_engines.Peer.embed);
    e5embed runs `bench --corpus` its own way (token-budget batches without padding).

Method: every timed call runs under an exclusive flock on /tmp/e5embed-bench.lock (shared with the
other engineers' benches; held for the whole timed phase, as `flock LOCK tools/compare` would,
or per timing with --lock-scope measurement), taken before waiting for a quiet machine, never while rustc runs, and is repeated (up to --retries times) when
other processes used more than a tenth of a core meanwhile (/proc/stat minus our own CPU time).
An unreported calibration round fixes each workload's iteration count (the same for every
engine), then --rounds rounds go over all workloads, with every engine measured back to back
per workload and the engine order rotated each round, so drift hits all engines alike. A cell is
the median over rounds of each round's median. Agreement: each engine embeds a sample of the
corpus; cosine to e5embed f32's vectors of the same texts (mean and min).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

# Keep HF tokenizers' batch parallelism after the e5embed subprocesses fork: unset, the library
# turns it off for the rest of the process at the first fork, and the peers would tokenize on one core.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import compare_corpus  # noqa: E402
from common import REPO_DIR, cache_dir, models_dir, sha256_file
from compare_engines import E5Cli, E5Engine, ModelInfo, OpenVinoPeer, OrtPeer, Unsupported, st_tokenizer

FULL_SEQS = [8, 16, 32, 64, 128, 256, 512]
QUICK_SEQS = [8, 128, 512]
BATCH_ROW = (32, 128)
SAMPLE_SEED = 7  # which corpus texts the cosine check uses


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Measuring on a shared 2-core machine


def _cpu_busy_seconds() -> float:
    """Machine-wide busy CPU seconds so far (everything but idle and iowait; steal counts as busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (e5embed runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _builds_running() -> bool:
    return subprocess.run(["pgrep", "-x", "rustc"], capture_output=True).returncode == 0


class Guard:
    """Runs timed calls under the bench lock, on a quiet machine, and retries disturbed ones."""

    OTHER_CORES_MAX = 0.10  # other processes may use this share of one core during a timing

    def __init__(self, lock_path: str, retries: int) -> None:
        self.lock_path, self.retries = lock_path, retries
        self.held = False  # inside hold(): the lock is already ours
        self.disturbed = 0  # timings thrown away
        self.flagged: list[str] = []  # timings kept although still disturbed after all retries

    def _others_cores(self, seconds: float) -> float:
        b0, o0, t0 = _cpu_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        time.sleep(seconds)
        return (_cpu_busy_seconds() - b0 - (_own_cpu_seconds() - o0)) / (time.perf_counter() - t0)

    def wait_quiet(self) -> None:
        """Block while rustc runs or the machine is busy with something else."""
        since = time.monotonic()
        next_note = 0.0  # log at once, then once a minute
        while True:
            building = _builds_running()
            others = 0.0 if building else self._others_cores(0.3)
            if not building and others < 0.3:
                return
            waited = time.monotonic() - since
            if waited >= next_note:
                why = "rustc is running" if building else f"other processes use {others:.1f} cores"
                log(f"waiting for a quiet machine ({why}; {waited:.0f} s so far)")
                next_note = waited + 60
            time.sleep(1)

    @contextmanager
    def _lock(self):
        if self.held:
            yield
            return
        with open(self.lock_path, "a") as f:
            if not self._try(f):
                log(f"waiting for {self.lock_path} (another benchmark holds it)")
                fcntl.flock(f, fcntl.LOCK_EX)  # the same lock as `flock /tmp/e5embed-bench.lock ...`
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @staticmethod
    def _try(f) -> bool:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    @contextmanager
    def hold(self, enabled: bool):
        """Keep the lock for a whole phase, as `flock LOCK tools/compare` would (enabled=False: per timing)."""
        if not enabled:
            yield
            return
        with self._lock():
            self.held = True
            try:
                yield
            finally:
                self.held = False

    def measure(self, what: str, fn):
        for attempt in range(self.retries + 1):
            # Lock first, then wait for quiet: the other benches queue on the lock behind us
            # instead of taking every quiet moment first (waiting outside the lock starves).
            with self._lock():
                self.wait_quiet()
                b0, o0, t0 = _cpu_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
                value = fn()
                wall = time.perf_counter() - t0
                others = _cpu_busy_seconds() - b0 - (_own_cpu_seconds() - o0)
                building = _builds_running()
            if not building and others <= max(self.OTHER_CORES_MAX * wall, 0.05):
                return value
            self.disturbed += 1
            why = "rustc started" if building else f"others used {others:.2f} CPU-s in {wall:.2f} s"
            log(f"  {what}: disturbed ({why}), attempt {attempt + 1}/{self.retries + 1}")
        self.flagged.append(what)
        return value


# ------------------------------------------------------------------------------------------------
# Setup


def _cpuinfo_field(cpuinfo: str, name: str) -> str:
    return next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                 if l.split(":", 1)[0].strip() == name), "?")


def machine_header() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = _cpuinfo_field(cpuinfo, "model name")
    family, cpu_model_no = _cpuinfo_field(cpuinfo, "cpu family"), _cpuinfo_field(cpuinfo, "model")
    flags = set(next((l.split(":", 1)[1].split() for l in cpuinfo.splitlines() if l.startswith("flags")), []))
    summary = {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags,
               "avx512_bf16": "avx512_bf16" in flags, "amx": any(f.startswith("amx") for f in flags)}

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"

    # Documents under kernels/ (PERF.md) do not change the engine.
    dirty = git("status", "--porcelain", "--", "src", "kernels", "Cargo.toml", "Cargo.lock",
                ":(exclude)*.md")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu_model": model, "cpu_family": family, "cpu_model_number": cpu_model_no,
            "cpus": os.cpu_count(), "flags": summary, "commit": git("rev-parse", "--short", "HEAD"),
            "engine_tree_dirty": bool(dirty)}


def resolve_model(arg: str) -> Path:
    p = Path(arg).expanduser()
    if p.is_dir():
        return p.resolve()
    p = models_dir() / arg
    if p.is_dir():
        return p
    raise SystemExit(f"model {arg!r}: neither a directory nor a model in {models_dir()} (tools/fetch-models NAME)")


def onnx_graphs(model_dir: Path) -> tuple[Path, Path, dict]:
    """fp32 graph from tools/onnx_bert.py and its dynamic int8 quantization, cached by weights hash."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx_bert

    key = hashlib.sha256((sha256_file(model_dir / "model.safetensors") + sha256_file(model_dir / "config.json")
                          + sha256_file(Path(onnx_bert.__file__)) + onnxruntime.__version__).encode()).hexdigest()[:16]
    out = cache_dir() / "compare" / f"{model_dir.name}-{key}"
    fp32, int8 = out / "model.onnx", out / "model_qint8.onnx"
    # What the HF repos' onnx/model_qint8_avx512_vnni.onnx is: sentence-transformers'
    # export_dynamic_quantized_onnx_model(..., "avx512_vnni") = optimum
    # AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False): dynamic (IntegerOps)
    # quantization, symmetric QInt8 weights per tensor, QUInt8 activations quantized at run time,
    # reduce_range False, optimum's default dynamic operator list (MatMul, Attention, LSTM, Gather,
    # Transpose, EmbedLayerNormalization), which is exactly quantize_dynamic's default op list.
    quant = {"function": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
             "activation_type": "QUInt8 (dynamic)", "per_channel": False, "reduce_range": False,
             "op_types_to_quantize": "default (MatMul, Attention, LSTM, Gather, Transpose, "
                                     "EmbedLayerNormalization, Conv)",
             "extra_options": "default (MatMulConstBOnly=True: only weight MatMuls become MatMulInteger)"}
    if not (fp32.exists() and int8.exists()):
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            t_fp32, t_int8 = Path(tmp) / fp32.name, Path(tmp) / int8.name
            log(f"building the ONNX graph of {model_dir.name} (tools/onnx_bert.py)")
            onnx.save(onnx_bert.build_from_dir(model_dir), str(t_fp32))
            log("quantizing it (quantize_dynamic, QInt8 weights, per_channel=False, reduce_range=False)")
            quantize_dynamic(str(t_fp32), str(t_int8), weight_type=QuantType.QInt8, per_channel=False,
                             reduce_range=False)
            os.replace(t_fp32, fp32)
            os.replace(t_int8, int8)
    return fp32, int8, quant


def make_engines(args, info: ModelInfo, cli: E5Cli, fp32: Path, int8: Path, quant: dict):
    """Every engine that can run here, and the reasons for those that cannot."""
    engines, failed = [], {}
    wanted = set(args.engines.split(",")) if args.engines else None

    def add(key: str, make) -> None:
        if wanted is not None and key not in wanted and not key.startswith("e5embed-f32"):
            return
        try:
            engines.append(make())
        except Unsupported as e:
            failed[key] = f"not supported on this CPU: {e}"
            log(f"{key}: {failed[key]}")
        except Exception as e:  # noqa: BLE001 - any engine failure is reported, never fatal
            failed[key] = f"failed to load: {type(e).__name__}: {e}"
            log(f"{key}: {failed[key]}")

    for p in cli.precisions:
        add(f"e5embed-{p}", lambda p=p: E5Engine(cli, p))
    if args.base_binary:
        # Another build of e5embed (e.g. main before a change), measured in the same rounds,
        # interleaved with this one: the before/after comparison of a refactor.
        base = E5Cli.probe(Path(args.base_binary), cli.model, args.threads)
        for p in base.precisions:
            add(f"base-{p}", lambda p=p: E5Engine(base, p, key=f"base-{p}", label=f"base {p}"))
    add("ort-fp32", lambda: OrtPeer(info, fp32, args.threads, "ort-fp32", "ORT fp32", "fp32 graph"))
    add("ort-int8", lambda: OrtPeer(info, int8, args.threads, "ort-int8", "ORT int8", quant))
    add("ov-f32", lambda: OpenVinoPeer(info, fp32, args.threads, "f32"))
    add("ov-bf16", lambda: OpenVinoPeer(info, fp32, args.threads, "bf16"))
    return engines, failed


# ------------------------------------------------------------------------------------------------
# The run


def check_tokenization(info: ModelInfo, texts: list[str]) -> None:
    """The peers' batch tokenizer must give make-reference's ids (the e5embed tests' reference)."""
    from make_reference import tokenize

    want = [e.ids for e in tokenize(info.dir, info, texts)]
    got = [[i for i, m in zip(e.ids, e.attention_mask) if m] for e in st_tokenizer(info).encode_batch(texts)]
    if want != got:
        bad = next(i for i, (a, b) in enumerate(zip(want, got)) if a != b)
        raise SystemExit(f"peer tokenization differs from tools/make_reference.py on text {bad}")


def run(args) -> dict:
    header = machine_header()
    model_dir = resolve_model(args.model)
    info = ModelInfo.load(model_dir)
    binary = Path(args.binary)
    cli = E5Cli.probe(binary, model_dir, args.threads)
    log(f"e5embed CLI: precisions {cli.precisions}, bench --corpus {cli.has_corpus}, "
        f"bench --precision {cli.has_precision}, embed --input {cli.has_input}")

    corpus = compare_corpus.build(model_dir / "tokenizer.json", args.corpus_texts, info.max_seq_length)
    work = Path(tempfile.mkdtemp(prefix="e5embed-compare-"))
    corpus_file = work / "corpus.txt"
    corpus.write(corpus_file)
    log(f"corpus: {corpus.summary()}")

    rng = np.random.default_rng(SAMPLE_SEED)
    sample_idx = np.sort(rng.choice(len(corpus.texts), size=min(args.sample, len(corpus.texts)), replace=False))
    sample = [corpus.texts[i] for i in sample_idx]
    check_tokenization(info, sample)

    fp32, int8, quant = onnx_graphs(model_dir)
    engines, failed = make_engines(args, info, cli, fp32, int8, quant)
    if not engines or engines[0].key != "e5embed-f32":
        raise SystemExit("e5embed f32 is the reference and did not load")
    log("engines: " + ", ".join(e.label for e in engines))

    # ---- agreement (also warms every engine up) --------------------------------------------------
    log(f"cosine check on {len(sample)} corpus texts")
    ref = engines[0].embed(sample)
    cosine = {}
    for e in engines:
        try:
            v = ref if e is engines[0] else e.embed(sample)
            cos = (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1))
            cosine[e.key] = {"mean": float(cos.mean()), "min": float(cos.min()), "texts": len(sample)}
        except Exception as ex:  # noqa: BLE001
            cosine[e.key] = {"error": f"{type(ex).__name__}: {ex}"}
            log(f"{e.key}: embedding the sample failed: {ex}")

    # ---- workloads ----------------------------------------------------------------------------
    seqs = [s for s in (QUICK_SEQS if args.quick else FULL_SEQS) if s <= info.max_seq_length]
    workloads = [{"id": f"b1-s{s}", "kind": "fixed", "batch": 1, "seq": s, "unit": "ms"} for s in seqs]
    workloads.append({"id": f"b{BATCH_ROW[0]}-s{BATCH_ROW[1]}", "kind": "fixed", "batch": BATCH_ROW[0],
                      "seq": min(BATCH_ROW[1], info.max_seq_length), "unit": "tokens/s"})
    workloads.append({"id": "corpus", "kind": "corpus", "texts": len(corpus.texts),
                      "tokens": int(sum(corpus.tokens)), "unit": "texts/s"})

    padding = {}
    for e in engines:
        if hasattr(e, "prepare_corpus"):
            padding[e.key] = e.prepare_corpus(corpus.texts)  # same for every peer: one tokenizer
    guard = Guard(args.lock, args.retries)
    target_s = 0.3 if args.quick else args.target_seconds
    min_iters = 3 if args.quick else 5

    def timed(e, w, iters: int) -> float:
        """One measurement: ms per forward (fixed shapes) or seconds per pass (corpus)."""
        what = f"{w['id']} {e.label}"
        if w["kind"] == "fixed":
            return guard.measure(what, lambda: e.fixed(w["batch"], w["seq"], iters))
        return guard.measure(what, lambda: e.corpus(corpus_file, corpus.texts))

    # The timed phase holds the bench lock throughout (default) or per timing (--lock-scope measurement).
    with guard.hold(args.lock_scope == "run"):
        # Calibration round (not reported): the slowest engine sets each workload's iteration count.
        for w in workloads:
            if w["kind"] != "fixed":
                continue
            per_iter = [timed(e, w, 2) for e in engines]
            w["iters"] = int(np.clip(round(target_s * 1e3 / max(per_iter)), min_iters, 200))
            log(f"calibrated {w['id']}: {w['iters']} iterations ({max(per_iter):.1f} ms per run, slowest engine)")

        raw: dict[str, dict[str, list[float]]] = {w["id"]: {e.key: [] for e in engines} for w in workloads}
        e5_json: dict[str, dict[str, dict]] = {w["id"]: {} for w in workloads}
        for r in range(args.rounds):
            order = engines[r % len(engines):] + engines[:r % len(engines)]  # rotate who goes first
            log(f"round {r + 1}/{args.rounds} (order: {', '.join(e.key for e in order)})")
            for w in workloads:
                for e in order:
                    try:
                        raw[w["id"]][e.key].append(timed(e, w, w.get("iters", 1)))
                        if getattr(e, "last", None):
                            e5_json[w["id"]][e.key] = e.last  # e5embed's own bench JSON (rss, kernels)
                    except Exception as ex:  # noqa: BLE001 - keep the other engines' numbers
                        log(f"  {w['id']} {e.label}: failed: {ex}")
                        failed.setdefault(f"{e.key} {w['id']}", f"{type(ex).__name__}: {ex}")

    results = {}
    for w in workloads:
        results[w["id"]] = {}
        for e in engines:
            vals = raw[w["id"]][e.key]
            if not vals:
                continue
            med = float(np.median(vals))
            if w["unit"] == "ms":
                shown = med
            elif w["unit"] == "tokens/s":
                shown = w["batch"] * w["seq"] / (med / 1e3)
            else:
                shown = w["texts"] / med
            results[w["id"]][e.key] = {"value": shown, "unit": w["unit"], "per_round": vals,
                                       "spread": float((max(vals) - min(vals)) / med) if med else 0.0}
            if e.key in e5_json[w["id"]]:
                results[w["id"]][e.key]["e5embed_bench_json"] = e5_json[w["id"]][e.key]

    e5_isa = {k: engines[0].last.get(k) for k in ("isa", "gemm_kernel") if k in engines[0].last}
    return {
        "header": header, "command": os.environ.get("E5EMBED_COMPARE_CMD") or shlex.join(["tools/compare.py", *sys.argv[1:]]),
        "model": str(model_dir), "model_info": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(info).items()},
        "threads": args.threads, "quick": args.quick, "rounds": args.rounds,
        "engines": [{"key": e.key, "label": e.label, "settings": e.settings} for e in engines],
        "e5embed_cli": {"precisions": cli.precisions, "bench_corpus": cli.has_corpus, "info": cli.info,
                        "missing": cli.missing, **e5_isa},
        "failed": failed, "workloads": workloads, "results": results, "cosine": cosine,
        "corpus": corpus.summary() | {"peer_batches": next(iter(padding.values()), None)},
        "sample_texts": len(sample),
        "timing": {"disturbed_and_rerun": guard.disturbed, "flagged": guard.flagged, "lock": args.lock,
                   "lock_scope": args.lock_scope,
                   "calibration_target_s": target_s},
    }


# ------------------------------------------------------------------------------------------------
# Report


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:.1f}"
    return f"{value:,.0f}"


def markdown(rep: dict) -> str:
    h = rep["header"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in h["flags"].items())
    engines = rep["engines"]
    e5 = [e for e in engines if e["key"].startswith("e5embed")]
    base = [e for e in engines if e["key"].startswith("base-")]
    peers = [e for e in engines if not e["key"].startswith(("e5embed", "base-"))]
    lines = [
        f"# tools/compare: {Path(rep['model']).name}",
        "",
        f"{h['date']} · {h['cpu_model']} (family {h.get('cpu_family', '?')} model "
        f"{h.get('cpu_model_number', '?')}; {h['cpus']} CPUs; {flags}) · threads {rep['threads']} · "
        f"commit {h['commit']}{' + uncommitted engine changes' if h['engine_tree_dirty'] else ''} · "
        f"`{rep['command']}`",
        "",
    ]
    # With --base-binary: this build against the base build, precision by precision.
    vs = [(a, b) for a in e5 for b in base if a["key"][len("e5embed-"):] == b["key"][len("base-"):]] \
        if base else [(a, b) for a in e5 for b in peers]
    cols = [e["label"] for e in engines] + [f"{a['label'].replace('e5embed ', '')} ÷ {b['label']}" for a, b in vs]
    lines.append("| workload | " + " | ".join(cols) + " |")
    lines.append("| --- | " + " | ".join("---:" for _ in cols) + " |")
    flagged = set(rep["timing"]["flagged"])
    for w in rep["workloads"]:
        res = rep["results"][w["id"]]
        if w["kind"] == "corpus":
            name = f"corpus {w['texts']:,} texts, {w['tokens']:,} tokens (texts/s)"
        elif w["unit"] == "ms":
            name = f"batch 1 × {w['seq']} tokens (ms)"
        else:
            name = f"batch {w['batch']} × {w['seq']} tokens (tokens/s)"
        cells = []
        for e in engines:
            r = res.get(e["key"])
            mark = "†" if any(f == f"{w['id']} {e['label']}" for f in flagged) else ""
            cells.append(fmt(r["value"], r["unit"]) + mark if r else "n/a")
        for a, b in vs:
            ra, rb = res.get(a["key"]), res.get(b["key"])
            if not (ra and rb):
                cells.append("n/a")
                continue
            # Speed ratio: > 1 means e5embed (this build) is faster, whatever the row's unit.
            ratio = rb["value"] / ra["value"] if w["unit"] == "ms" else ra["value"] / rb["value"]
            cells.append(f"{ratio:.2f}×")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")

    lines += ["", "Cells: median over rounds (batch-1 rows: ms per forward, lower is better; other rows: "
              "throughput, higher is better). Ratio columns: e5embed's speed ÷ the peer's speed "
              "(> 1 = e5embed faster; for ms rows that is peer ms ÷ e5embed ms)."
              + (" † = disturbed by other load in every attempt." if flagged else ""), ""]

    lines += [f"Agreement with e5embed f32 ({rep['sample_texts']} corpus texts, pooled + normalized as modules.json says):",
              "", "| engine | mean cosine | min cosine |", "| --- | ---: | ---: |"]
    for e in engines:
        c = rep["cosine"].get(e["key"], {})
        if "error" in c:
            lines.append(f"| {e['label']} | error | {c['error'][:80]} |")
        elif c:
            ref = " (reference)" if e["key"] == "e5embed-f32" else ""
            lines.append(f"| {e['label']}{ref} | {c['mean']:.6f} | {c['min']:.6f} |")

    c = rep["corpus"]
    lines += ["", "Setup:", "",
              f"- corpus: {c['texts']:,} texts, {c['tokens']:,} tokens (mean {c['mean_tokens']}, median "
              f"{c['median_tokens']:.0f}, p90 {c['p90_tokens']:.0f}, max {c['max_tokens']}; "
              f"{c['share_10_to_60']:.0%} have 10-60 tokens, {c['share_over_100']:.0%} over 100, "
              f"{c['truncated']} truncated), {c['distribution']}, seed {c['seed']}, sha256 {c['sha256'][:12]}.",
              f"- peers run it like sentence-transformers: sorted by length, batches of 32 padded to the "
              f"batch's longest" + (f" ({pb['batches']} batches, {pb['padded_tokens']:,} token slots for "
                                    f"{pb['real_tokens']:,} real tokens)" if (pb := c.get("peer_batches")) else "")
              + "; pooling timed, tokenization done once up front and not timed; e5embed: "
              f"{e5[0]['settings']['corpus_mode'] if e5 else '?'}.",
              f"- rounds {rep['rounds']} after a calibration round; engine order rotated each round; "
              f"{rep['timing']['disturbed_and_rerun']} disturbed timings rerun.",
              ]
    cli = rep["e5embed_cli"]
    if cli.get("isa"):
        lines.append(f"- e5embed: isa {cli['isa']}, GEMM kernel {cli.get('gemm_kernel', '?')}, "
                     f"precisions {', '.join(cli['precisions'])}.")
    for e in peers:
        s = e["settings"]
        if e["key"].startswith("ort"):
            extra = "; quantization: " + ", ".join(f"{k} {v}" for k, v in s["note"].items() if k != "function") \
                if isinstance(s["note"], dict) else ""
            lines.append(f"- {e['label']}: {s['runtime']}, {s['graph']}, intra_op_num_threads "
                         f"{s['intra_op_num_threads']}, inter_op_num_threads 1, ORT_ENABLE_ALL, sequential{extra}.")
        else:
            comp = s["compiled"]
            lines.append(f"- {e['label']}: {s['runtime']}, reads {s['graph']}; INFERENCE_PRECISION_HINT "
                         f"{comp['INFERENCE_PRECISION_HINT']}, INFERENCE_NUM_THREADS {comp['INFERENCE_NUM_THREADS']}, "
                         f"PERFORMANCE_HINT {comp['PERFORMANCE_HINT']} (all workloads: synchronous requests), "
                         f"NUM_STREAMS {comp['NUM_STREAMS']}; FullyConnected layers run in "
                         + ", ".join(f"{p} ×{n}" for p, n in s["fully_connected_runtime_precision"].items()) + ".")
    for key, why in rep["failed"].items():
        lines.append(f"- **{key}**: {why}")
    for m in cli["missing"]:
        lines.append(f"- e5embed CLI missing: {m}")
    return "\n".join(lines) + "\n"


def cpu_slug(h: dict) -> str:
    """`amd-epyc-f25-m17`: the model string's words and the family / model numbers (a model string
    alone, e.g. a VM's "AMD EPYC", does not tell CPU generations apart)."""
    words = "".join(c if c.isalnum() else "-" for c in h["cpu_model"].lower())
    words = "-".join(w for w in words.split("-") if w and w not in ("r", "tm", "cpu", "processor"))
    return f"{words or 'unknown'}-f{h.get('cpu_family', '?')}-m{h.get('cpu_model_number', '?')}"


def save_result(rep: dict, text: str, results_dir: Path) -> Path:
    """Writes the run's table to results_dir/<date>-<cpu-slug>-<commit>.md (a temporary name renamed
    into place); a second run the same day on the same commit and CPU gets a -2, -3, ... suffix."""
    h = rep["header"]
    stem = f"{h['date'][:10]}-{cpu_slug(h)}-{h['commit']}{'-dirty' if h['engine_tree_dirty'] else ''}"
    results_dir.mkdir(parents=True, exist_ok=True)
    path, n = results_dir / f"{stem}.md", 2
    while path.exists():
        path, n = results_dir / f"{stem}-{n}.md", n + 1
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Compare e5embed with ONNX Runtime and OpenVINO on this machine.")
    ap.add_argument("--model", default="e5-small-v2-shape", help="model name under $E5EMBED_MODELS or a directory")
    ap.add_argument("--threads", type=int, default=2, help="threads for every engine (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 lengths, 200 texts, short timings")
    ap.add_argument("--json", metavar="FILE", help="also save every raw number to FILE")
    ap.add_argument("--rounds", type=int, help="measurement rounds (default 3, --quick 2)")
    ap.add_argument("--corpus-texts", type=int, help="corpus size (default 2000, --quick 200)")
    ap.add_argument("--sample", type=int, help="texts for the cosine check (default 200, --quick 50)")
    ap.add_argument("--target-seconds", type=float, default=1.5,
                    help="aim for this long per fixed-shape measurement (default 1.5; --quick 0.3)")
    ap.add_argument("--engines", help="comma list of engine keys to run besides e5embed-f32 "
                                      "(e.g. ort-fp32,ov-bf16; default: all)")
    ap.add_argument("--binary", default=str(REPO_DIR / "target" / "release" / "e5embed"))
    ap.add_argument("--base-binary", help="a second e5embed binary (e.g. built from the commit before a "
                                          "change) run as engines base-f32, base-int8, ... in the same "
                                          "interleaved rounds")
    ap.add_argument("--lock", default="/tmp/e5embed-bench.lock")
    ap.add_argument("--lock-scope", choices=("run", "measurement"), default="run",
                    help="hold the bench lock for the whole timed phase (default, like `flock LOCK cmd`) "
                         "or take it for each timing and let other benches run in between")
    ap.add_argument("--retries", type=int, default=3, help="reruns of a disturbed timing (default 3)")
    ap.add_argument("--results-dir", default=str(REPO_DIR / "bench" / "results"),
                    help="where the run's table is saved as <date>-<cpu>-<commit>.md (default bench/results)")
    ap.add_argument("--no-save", action="store_true", help="do not save the table under --results-dir")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 3)
    args.corpus_texts = args.corpus_texts or (200 if args.quick else 2000)
    args.sample = args.sample or (50 if args.quick else 200)

    rep = run(args)
    if args.json:  # the raw numbers first, so a report bug cannot lose a run
        Path(args.json).write_text(json.dumps(rep, indent=1, default=str) + "\n")
    text = markdown(rep)
    sys.stdout.write(text)
    if not args.no_save:
        log(f"table saved to {save_result(rep, text, Path(args.results_dir))}")
    if args.json:
        rep["markdown"] = text
        Path(args.json).write_text(json.dumps(rep, indent=1, default=str) + "\n")
        log(f"raw numbers saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
