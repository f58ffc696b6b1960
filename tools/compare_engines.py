"""The engines that tools/compare measures: e5embed (its CLI) and the peers (ONNX Runtime, OpenVINO).

Every engine offers the same three operations:

    fixed(batch, seq, iters) -> median milliseconds of one forward pass on synthetic ids
    corpus(path, texts)      -> seconds for one pass over the whole corpus (text in, vectors out)
    embed(texts)             -> float32 [len(texts), hidden] sentence embeddings

The peers run a model the way sentence-transformers does (SentenceTransformer.encode):
texts stripped, sorted by length (characters, longest first), batches of 32 tokenized with the
model's tokenizer.json (its own truncation and fixed padding replaced by truncation at
max_seq_length and padding to the batch's longest), token_type_ids all zero, the graph's
last_hidden_state pooled (masked mean or CLS) and L2-normalized when modules.json has Normalize.
A corpus pass times the forward passes and pooling over the pre-tokenized batches: tokenization
is done once up front, untimed, as e5embed's `bench --corpus` does.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

ST_BATCH = 32  # sentence-transformers' default encode() batch size
SEED_IDS = 1234  # synthetic token ids for the fixed-shape workloads


# ------------------------------------------------------------------------------------------------
# The model directory's sentence-transformers settings


@dataclass
class ModelInfo:
    dir: Path
    name: str
    max_seq_length: int
    do_lower_case: bool
    pooling: str  # "mean" or "cls"
    normalize: bool
    hidden: int
    vocab_size: int

    @staticmethod
    def load(model_dir: Path) -> "ModelInfo":
        config = json.loads((model_dir / "config.json").read_text())
        sbert_file = model_dir / "sentence_bert_config.json"
        sbert = json.loads(sbert_file.read_text()) if sbert_file.exists() else {}
        modules_file = model_dir / "modules.json"
        modules = json.loads(modules_file.read_text()) if modules_file.exists() else []
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = "mean"  # sentence-transformers' default when a directory has no Pooling module
        pool_dirs = [m.get("path", "") for m in modules if m["type"].endswith("Pooling")]
        if pool_dirs:
            pool_cfg = json.loads((model_dir / pool_dirs[0] / "config.json").read_text())
            modes = [k for k, v in pool_cfg.items() if k.startswith("pooling_mode") and v]
            if modes == ["pooling_mode_mean_tokens"]:
                pooling = "mean"
            elif modes == ["pooling_mode_cls_token"]:
                pooling = "cls"
            else:
                raise ValueError(f"{model_dir}: pooling {modes} not supported by tools/compare")
        return ModelInfo(
            dir=model_dir,
            name=model_dir.name,
            max_seq_length=int(sbert.get("max_seq_length", config["max_position_embeddings"])),
            do_lower_case=bool(sbert.get("do_lower_case", False)),
            pooling=pooling,
            normalize="Normalize" in types,
            hidden=int(config["hidden_size"]),
            vocab_size=int(config["vocab_size"]),
        )


def st_tokenizer(info: ModelInfo) -> Tokenizer:
    """The model's tokenizer set up as sentence-transformers uses it (see the module docstring)."""
    tok = Tokenizer.from_file(str(info.dir / "tokenizer.json"))
    pad_id = tok.token_to_id("[PAD]")
    tok.no_padding()
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")  # to batch longest
    tok.enable_truncation(max_length=info.max_seq_length)  # longest_first, stride 0, as ST/HF
    return tok


def pool(hidden: np.ndarray, mask: np.ndarray, info: ModelInfo) -> np.ndarray:
    """[B, S, H] last hidden state + [B, S] mask -> [B, H] pooled (and normalized) vectors."""
    if info.pooling == "cls":
        v = hidden[:, 0, :].astype(np.float32)
    else:
        m = mask.astype(np.float32)[:, :, None]
        v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    if info.normalize:
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v.astype(np.float32)


def synthetic_feeds(batch: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    """[CLS] random ids [SEP], all real tokens (no padding), as for e5embed's bench."""
    rng = np.random.default_rng(SEED_IDS)
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


# ------------------------------------------------------------------------------------------------
# Peers


class Peer:
    """A runtime that executes the ONNX graph; subclasses provide run(feeds) -> last hidden state."""

    key = ""
    label = ""

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.tok = st_tokenizer(info)
        self.settings: dict = {}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def fixed(self, batch: int, seq: int, iters: int) -> float:
        feeds = synthetic_feeds(batch, seq, self.info.vocab_size)
        self.run(feeds)  # warm-up: first run of a shape plans memory / compiles kernels
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            self.run(feeds)
            times.append(time.perf_counter() - t0)
        return float(np.median(times) * 1e3)

    def batches(self, texts: list[str]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """sentence-transformers' encode() batching: sort by length, batches of 32 padded to their longest.

        Returns (text indices, feeds) per batch, in run order.
        """
        texts = [t.strip() for t in texts]
        if self.info.do_lower_case:
            texts = [t.lower() for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")  # ST sorts by characters, longest first
        out = []
        for start in range(0, len(texts), ST_BATCH):
            idx = order[start:start + ST_BATCH]
            encs = self.tok.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            out.append((idx, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}))
        return out

    def run_batches(self, batches, n: int) -> np.ndarray:
        out = np.empty((n, self.info.hidden), dtype=np.float32)
        for idx, feeds in batches:
            out[idx] = pool(self.run(feeds), feeds["attention_mask"], self.info)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.run_batches(self.batches(texts), len(texts))

    def prepare_corpus(self, texts: list[str]) -> dict:
        """Tokenize and batch the corpus once, untimed (e5embed's `bench --corpus` does the same)."""
        self._corpus = (self.batches(texts), len(texts))
        real = sum(int(f["attention_mask"].sum()) for _, f in self._corpus[0])
        padded = sum(int(f["attention_mask"].size) for _, f in self._corpus[0])
        return {"batches": len(self._corpus[0]), "real_tokens": real, "padded_tokens": padded}

    def corpus(self, path: Path, texts: list[str]) -> float:
        """Seconds for one pass over the prepared corpus: forward passes and pooling."""
        t0 = time.perf_counter()
        self.run_batches(*self._corpus)
        return time.perf_counter() - t0


class OrtPeer(Peer):
    def __init__(self, info: ModelInfo, onnx_path: Path, threads: int, key: str, label: str, note: str) -> None:
        import onnxruntime as ort

        super().__init__(info)
        self.key, self.label = key, label
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self.sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.sess.get_inputs()]
        self.output = self.sess.get_outputs()[0].name
        self.settings = {"runtime": f"onnxruntime {ort.__version__}", "graph": onnx_path.name, "note": note,
                         "intra_op_num_threads": threads, "inter_op_num_threads": 1,
                         "execution_mode": "ORT_SEQUENTIAL", "graph_optimization_level": "ORT_ENABLE_ALL",
                         "provider": "CPUExecutionProvider"}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.sess.run([self.output], {k: feeds[k] for k in self.inputs})[0]


class OpenVinoPeer(Peer):
    """OpenVINO CPU plugin reading the ONNX file; one compiled model, synchronous infer requests.

    PERFORMANCE_HINT LATENCY for every workload (batch-1 and batches): the batches are sent one
    at a time, synchronously, as sentence-transformers does, so THROUGHPUT's extra streams (one
    per core, each served by its own async request) would leave one core idle.
    """

    def __init__(self, info: ModelInfo, onnx_path: Path, threads: int, precision: str) -> None:
        import openvino as ov

        super().__init__(info)
        self.key, self.label = f"ov-{precision}", f"OpenVINO {precision}"
        core = ov.Core()
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        cap = {"f32": "FP32", "bf16": "BF16"}[precision]
        if cap not in caps:
            raise Unsupported(f"CPU plugin lacks {cap} (OPTIMIZATION_CAPABILITIES {caps})")
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if got != precision:
            raise Unsupported(f"asked INFERENCE_PRECISION_HINT {precision}, compiled model runs {got}")
        self.request = self.compiled.create_infer_request()
        self.inputs = [p.get_any_name() for p in self.compiled.inputs]
        self.settings = {"runtime": f"openvino {ov.get_version()}", "graph": onnx_path.name, "device": "CPU",
                         "requested": config,
                         "compiled": {k: _prop_str(self.compiled.get_property(k)) for k in
                                      ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "PERFORMANCE_HINT",
                                       "NUM_STREAMS", "ENABLE_CPU_PINNING")},
                         "execution_devices": str(self.compiled.get_property("EXECUTION_DEVICES")),
                         # Proof the hint took effect: the precision each FullyConnected really runs in.
                         "fully_connected_runtime_precision": self._fc_precisions()}

    def _fc_precisions(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if rt["layerType"].astype(str) == "FullyConnected":
                p = rt["runtimePrecision"].astype(str)
                counts[p] = counts.get(p, 0) + 1
        return counts

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.request.infer({k: feeds[k] for k in self.inputs})
        return self.request.get_output_tensor(0).data


def _prop_str(value) -> str:
    """OpenVINO property values as plain text (element types by their short name, e.g. bf16)."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value)


class Unsupported(Exception):
    """An engine that cannot run on this machine; reported in the output instead of crashing."""


# ------------------------------------------------------------------------------------------------
# e5embed, through its command line


@dataclass
class E5Cli:
    """What the e5embed binary offers; probed from its --help and `info --json`, never assumed."""

    binary: Path
    model: Path
    threads: int
    has_corpus: bool = False
    has_precision: bool = False
    has_embed_precision: bool = False
    has_input: bool = False
    precisions: list[str] = field(default_factory=lambda: ["f32"])
    info: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # CLI features that tools/compare had to work around

    @staticmethod
    def probe(binary: Path, model: Path, threads: int) -> "E5Cli":
        def help_of(cmd: str) -> str:
            r = subprocess.run([str(binary), cmd, "--help"], capture_output=True, text=True)
            return r.stdout + r.stderr

        bench_help, embed_help = help_of("bench"), help_of("embed")
        cli = E5Cli(binary=binary, model=model, threads=threads,
                    has_corpus="--corpus" in bench_help, has_precision="--precision" in bench_help,
                    has_embed_precision="--precision" in embed_help, has_input="--input" in embed_help)
        r = subprocess.run([str(binary), "info", "--model", str(model), "--json"], capture_output=True, text=True)
        if r.returncode == 0:
            try:
                cli.info = json.loads(r.stdout)
                cli.precisions = list(cli.info.get("precisions", ["f32"]))
            except json.JSONDecodeError:
                cli.missing.append("`info --json` output is not JSON")
        else:
            cli.missing.append("`info --json` (precisions list): assumed [\"f32\"]")
        if not cli.has_corpus:
            cli.missing.append("`bench --corpus FILE`: corpus timed as wall clock of `embed` minus a 1-text `embed`")
        if not cli.has_precision and cli.precisions != ["f32"]:
            cli.missing.append("`bench --precision`: only f32 measured")
            cli.precisions = ["f32"]
        return cli

    def base(self, cmd: str, precision: str) -> list[str]:
        args = [str(self.binary), cmd, "--model", str(self.model), "--threads", str(self.threads)]
        if precision != "f32" or (cmd == "bench" and self.has_precision):
            args += ["--precision", precision]
        return args

    def run_json(self, args: list[str]) -> dict:
        r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-800:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


class E5Engine:
    def __init__(self, cli: E5Cli, precision: str, key: str | None = None, label: str | None = None) -> None:
        self.cli, self.precision = cli, precision
        self.key, self.label = key or f"e5embed-{precision}", label or f"e5embed {precision}"
        self.settings = {"binary": str(cli.binary), "threads": cli.threads, "precision": precision,
                         "corpus_mode": "`bench --corpus` (token-budget batches, no padding; tokenization untimed)"
                         if cli.has_corpus else "wall clock of `embed` minus a 1-text `embed` (tokenization timed)"}
        self.last: dict = {}  # last bench JSON (isa, kernel names)

    def fixed(self, batch: int, seq: int, iters: int) -> float:
        self.last = self.cli.run_json(self.cli.base("bench", self.precision) +
                                      ["--batch", str(batch), "--seq", str(seq), "--json", "--iters", str(iters)])
        return float(self.last["median_ms"])

    def corpus(self, path: Path, texts: list[str]) -> float:
        if self.cli.has_corpus:
            self.last = self.cli.run_json(self.cli.base("bench", self.precision) +
                                          ["--corpus", str(path), "--json", "--iters", "1"])
            return float(self.last["median_ms"]) / 1e3
        # Fallback while `bench --corpus` does not exist: the wall clock of a whole `embed` run,
        # minus that of an `embed` of one short text (process start, model load, packing).
        full = self._embed_wall(path)
        with tempfile.TemporaryDirectory() as tmp:
            one = Path(tmp) / "one.txt"
            one.write_text(texts[0].split(".")[0] + "\n")
            load = min(self._embed_wall(one) for _ in range(2))
        return max(full - load, 1e-9)

    def _embed_wall(self, path: Path) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out.npy"
            t0 = time.perf_counter()
            self._embed_file(path, out)
            return time.perf_counter() - t0

    def _embed_file(self, path: Path, out: Path) -> None:
        args = self.cli.base("embed", self.precision) + ["--output", str(out)]
        if self.cli.has_input:
            args += ["--input", str(path)]
            r = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        else:
            with open(path, "rb") as f:
                r = subprocess.run(args, capture_output=True, text=True, stdin=f)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-800:]}")

    def embed(self, texts: list[str]) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            src, out = Path(tmp) / "texts.txt", Path(tmp) / "out.npy"
            src.write_text("\n".join(texts) + "\n", encoding="utf-8")
            self._embed_file(src, out)
            return np.load(out).astype(np.float32)
