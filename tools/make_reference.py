"""Write ONNX Runtime reference fixtures under tests/fixtures/ (run via `tools/make-reference`).

For each model below, every text of tests/fixtures/texts.json is tokenized exactly as
sentence-transformers does it, run through ONNX Runtime in padded batches of mixed lengths, and
the per-text results are stored in tests/fixtures/<model>/reference.safetensors with a
meta.json that records where every number came from. tests/fixtures/README.md documents the
format.

  paraphrase-MiniLM-L3-v2   reference = the third-party ONNX graph exactly as shipped (model.onnx)
  all-MiniLM-L6-v2          reference = the graph that tools/onnx_bert.py builds from safetensors

Before writing anything, the builder is validated: the paraphrase-MiniLM-L3-v2 graph rebuilt by
tools/onnx_bert.py from the converted model.safetensors must match the shipped graph on every
real token of every batch (max abs diff <= REBUILD_TOLERANCE), or this script fails.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import safetensors
import tokenizers
from safetensors.numpy import save_file
from tokenizers import Tokenizer

import onnx_bert
from common import REPO_DIR, log, sha256_file
from fetch_models import ensure_model

FIXTURES_DIR = REPO_DIR / "tests" / "fixtures"
TEXTS_FILE = FIXTURES_DIR / "texts.json"

BATCH_SIZE = 5  # texts are batched in file order, so each batch mixes short and long texts
REBUILD_TOLERANCE = 1e-4  # tools/onnx_bert.py graph vs the shipped graph, last hidden state
POOLED_TOLERANCE = 1e-5  # our masked mean vs the shipped graph's own pooling output
ORT_OPT_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # no fusions: plain op semantics

# Paraphrase and unrelated sentences in texts.json: a cheap check that tokenizer and weights fit.
SANITY_ANCHOR, SANITY_PARAPHRASE, SANITY_UNRELATED = 14, 15, 16


@dataclass
class Encoded:
    ids: list[int]  # input ids with [CLS]/[SEP], truncated to max_seq_length
    truncated: bool  # the untruncated encoding was longer than max_seq_length


@dataclass
class StConfig:
    """The sentence-transformers modules of a model directory that matter for the reference."""

    max_seq_length: int
    do_lower_case: bool
    normalize: bool

    @staticmethod
    def load(model_dir: Path) -> "StConfig":
        sbert = json.loads((model_dir / "sentence_bert_config.json").read_text())
        modules = json.loads((model_dir / "modules.json").read_text())
        pooling = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise ValueError(f"{model_dir}: only mean pooling is supported, got {modes}")
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if types[:2] != ["Transformer", "Pooling"] or not set(types[2:]) <= {"Normalize"}:
            raise ValueError(f"{model_dir}: unsupported modules {types}")
        return StConfig(
            max_seq_length=int(sbert["max_seq_length"]),
            do_lower_case=bool(sbert.get("do_lower_case", False)),
            normalize="Normalize" in types,
        )


# ------------------------------------------------------------------------------------------------
# Tokenization, as sentence-transformers' Transformer.tokenize does it


def tokenize(model_dir: Path, st: StConfig, texts: list[str]) -> list[Encoded]:
    """Strip each text (and lowercase if do_lower_case), add [CLS]/[SEP], truncate at max_seq_length.

    The tokenizer.json of these models carries its own truncation (128) and fixed padding (128);
    sentence-transformers overrides both (truncation at max_seq_length, padding to the batch's
    longest), so both are cleared here and truncation is set to max_seq_length. Padding is done
    per batch in pad_batch().
    """
    full = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    full.no_truncation()
    full.no_padding()
    cut = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    cut.no_padding()
    cut.enable_truncation(max_length=st.max_seq_length)  # longest_first, stride 0, as ST/HF

    prepared = [t.strip() for t in texts]
    if st.do_lower_case:
        prepared = [t.lower() for t in prepared]
    out = []
    for text in prepared:
        ids = cut.encode(text, add_special_tokens=True).ids
        n_full = len(full.encode(text, add_special_tokens=True).ids)
        out.append(Encoded(ids=list(ids), truncated=n_full > len(ids)))
        assert len(ids) == min(n_full, st.max_seq_length)
    return out


def make_batches(n: int) -> list[list[int]]:
    return [list(range(i, min(i + BATCH_SIZE, n))) for i in range(0, n, BATCH_SIZE)]


def pad_batch(encoded: list[Encoded], batch: list[int], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pad a batch to its longest sequence; token type ids are all zero (single sentences)."""
    width = max(len(encoded[i].ids) for i in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for row, i in enumerate(batch):
        n = len(encoded[i].ids)
        ids[row, :n] = encoded[i].ids
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


# ------------------------------------------------------------------------------------------------
# ONNX Runtime


def session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # deterministic, and gentle on a shared 2-core machine
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ORT_OPT_LEVEL
    opts.log_severity_level = 3
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def run_batches(sess: ort.InferenceSession, feeds: list[dict[str, np.ndarray]],
                outputs: list[str]) -> list[list[np.ndarray]]:
    """Run every batch, feeding only the inputs the graph declares."""
    names = [i.name for i in sess.get_inputs()]
    return [sess.run(outputs, {k: f[k] for k in names}) for f in feeds]


def shipped_session(model_dir: Path) -> tuple[ort.InferenceSession, str, str | None]:
    """Session for the third-party graph, with its last hidden state exposed as an output.

    onnx_io.json (written by tools/fetch-models) names the tensor. If the graph only output the
    pooled vector, the tensor is added to the graph outputs; no node is changed.
    """
    io = json.loads((model_dir / "onnx_io.json").read_text())
    hidden_name = io["last_hidden_state"]
    model = onnx.load(str(model_dir / "model.onnx"))
    if hidden_name not in [o.name for o in model.graph.output]:
        model.graph.output.append(onnx.helper.make_tensor_value_info(hidden_name, onnx.TensorProto.FLOAT, None))
        return session(model), hidden_name, io.get("sentence_embedding")
    return session(model_dir / "model.onnx"), hidden_name, io.get("sentence_embedding")


def unbatch(encoded: list[Encoded], batches: list[list[int]], hidden: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Per-text last hidden state, padding rows dropped: {text index: [len, hidden]}."""
    per_text = {}
    for batch, h in zip(batches, hidden):
        for row, i in enumerate(batch):
            per_text[i] = np.ascontiguousarray(h[row, : len(encoded[i].ids)], dtype=np.float32)
    return per_text


def mean_pool(h: np.ndarray) -> np.ndarray:
    """Masked mean over real tokens (h holds real tokens only), as sentence-transformers' Pooling."""
    return (h.sum(axis=0, dtype=np.float32) / np.float32(max(h.shape[0], 1e-9))).astype(np.float32)


def l2_normalize(v: np.ndarray) -> np.ndarray:
    """torch.nn.functional.normalize(p=2, eps=1e-12), as sentence-transformers' Normalize."""
    return (v / np.float32(max(float(np.linalg.norm(v)), 1e-12))).astype(np.float32)


def max_abs_diff_real_tokens(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[i] - b[i]))) for i in a)


# ------------------------------------------------------------------------------------------------


def write_fixture(name: str, model_dir: Path, st: StConfig, texts: list[str], encoded: list[Encoded],
                  batches: list[list[int]], hidden: dict[int, np.ndarray], *, reference: str,
                  onnx_sha256: str, validation: dict) -> None:
    tensors: dict[str, np.ndarray] = {}
    embeddings = {}
    for i, enc in enumerate(encoded):
        pooled = mean_pool(hidden[i])
        emb = l2_normalize(pooled) if st.normalize else pooled
        embeddings[i] = emb
        tensors[f"input_ids.{i}"] = np.asarray(enc.ids, dtype=np.int64)
        tensors[f"last_hidden.{i}"] = hidden[i]
        tensors[f"pooled.{i}"] = pooled
        tensors[f"embedding.{i}"] = emb
        tensors[f"truncated.{i}"] = np.asarray([1 if enc.truncated else 0], dtype=np.uint8)

    # Sanity: a paraphrase must sit closer than an unrelated sentence (catches a wrong tokenizer
    # or scrambled weights, which the numerical checks above cannot see for the L6 model).
    def cos(a: int, b: int) -> float:
        x, y = embeddings[a], embeddings[b]
        return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))

    near, far = cos(SANITY_ANCHOR, SANITY_PARAPHRASE), cos(SANITY_ANCHOR, SANITY_UNRELATED)
    log(f"  sanity: cos(paraphrase) {near:.4f} > cos(unrelated) {far:.4f}")
    if not near > far:
        raise SystemExit(f"{name}: paraphrase is not closer than the unrelated sentence; wrong model or tokenizer?")
    validation = validation | {"sanity_cos_paraphrase": round(near, 6), "sanity_cos_unrelated": round(far, 6)}

    out_dir = FIXTURES_DIR / name
    out_dir.mkdir(parents=True, exist_ok=True)
    # One metadata key only: safetensors writes __metadata__ from a hash map, so with several
    # keys their order (and the file's bytes) would change from run to run. meta.json has the rest.
    save_file(tensors, str(out_dir / "reference.safetensors"), metadata={"format": "e5embed-reference-v1"})
    (out_dir / "reference.safetensors").chmod(0o644)

    meta = {
        "model": name,
        "model_safetensors_sha256": sha256_file(model_dir / "model.safetensors"),
        "onnx_sha256": onnx_sha256,
        "tokenizer_sha256": sha256_file(model_dir / "tokenizer.json"),
        "onnxruntime_version": ort.__version__,
        "onnx_version": onnx.__version__,
        "numpy_version": np.__version__,
        "tokenizers_version": tokenizers.__version__,
        "safetensors_version": safetensors.__version__,
        "max_seq_length": st.max_seq_length,
        "do_lower_case": st.do_lower_case,
        "normalize": st.normalize,
        "pooling": "mean",
        "hidden_size": int(hidden[0].shape[1]),
        "reference": reference,
        "ort_graph_optimization_level": str(ORT_OPT_LEVEL).rsplit(".", 1)[-1],
        "ort_threads": 1,
        "token_type_ids": "all zero",
        "texts": "tests/fixtures/texts.json",
        "texts_sha256": sha256_file(TEXTS_FILE),
        "num_texts": len(texts),
        "truncated_texts": [i for i, e in enumerate(encoded) if e.truncated],
        "batches": batches,
        "validation": validation,
        "created": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
        "command": "tools/make-reference",
    }
    text = json.dumps(meta, indent=2, ensure_ascii=False)
    # Keep lists of integers (batches, truncated_texts) on one line each.
    text = re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(re.findall(r"-?\d+", m.group(1))) + "]", text)
    (out_dir / "meta.json").write_text(text + "\n")
    size = (out_dir / "reference.safetensors").stat().st_size
    log(f"  wrote {out_dir.relative_to(REPO_DIR)}/reference.safetensors ({size / 1e6:.2f} MB, "
        f"{len(tensors)} tensors) and meta.json")


def reference_paraphrase_l3(texts: list[str]) -> None:
    """Shipped third-party graph; validates tools/onnx_bert.py against it first."""
    name = "paraphrase-MiniLM-L3-v2"
    model_dir = ensure_model(name)
    st = StConfig.load(model_dir)
    encoded = tokenize(model_dir, st, texts)
    batches = make_batches(len(texts))
    pad_id = Tokenizer.from_file(str(model_dir / "tokenizer.json")).token_to_id("[PAD]")
    feeds = [pad_batch(encoded, b, pad_id) for b in batches]
    log(f"{name}: running the shipped ONNX graph on {len(batches)} batches")

    sess, hidden_name, pooled_name = shipped_session(model_dir)
    outputs = [hidden_name] + ([pooled_name] if pooled_name else [])
    results = run_batches(sess, feeds, outputs)
    hidden = unbatch(encoded, batches, [r[0] for r in results])
    log(f"  last hidden state taken from graph output {hidden_name!r}")

    validation = {}
    if pooled_name:
        # The shipped graph pools too: our masked mean must agree with it.
        graph_pooled = {i: r[1][row] for b, r in zip(batches, results) for row, i in enumerate(b)}
        d = max(float(np.max(np.abs(mean_pool(hidden[i]) - graph_pooled[i]))) for i in hidden)
        log(f"  masked mean vs shipped pooling output {pooled_name!r}: max abs diff {d:.3e}")
        if d > POOLED_TOLERANCE:
            raise SystemExit(f"{name}: pooling disagrees with the shipped graph ({d:.3e} > {POOLED_TOLERANCE})")
        validation["shipped_pooled_output_vs_masked_mean_max_abs_diff"] = d

    # Validate tools/onnx_bert.py: rebuild the model from the converted safetensors.
    rebuilt = run_batches(session(onnx_bert.build_from_dir(model_dir)), feeds, ["last_hidden_state"])
    rebuilt_hidden = unbatch(encoded, batches, [r[0] for r in rebuilt])
    diff = max_abs_diff_real_tokens(hidden, rebuilt_hidden)
    emb_diff = max(float(np.max(np.abs(mean_pool(hidden[i]) - mean_pool(rebuilt_hidden[i])))) for i in hidden)
    log(f"  tools/onnx_bert.py rebuild vs shipped graph: last hidden max abs diff {diff:.3e}, "
        f"pooled {emb_diff:.3e} (tolerance {REBUILD_TOLERANCE:g})")
    if not diff <= REBUILD_TOLERANCE:
        raise SystemExit(f"VALIDATION FAILED: tools/onnx_bert.py graph differs from the shipped graph "
                         f"by {diff:.3e} > {REBUILD_TOLERANCE:g}")
    validation["onnx_bert_rebuild_vs_shipped_last_hidden_max_abs_diff"] = diff
    validation["onnx_bert_rebuild_vs_shipped_pooled_max_abs_diff"] = emb_diff
    validation["rebuild_tolerance"] = REBUILD_TOLERANCE

    write_fixture(name, model_dir, st, texts, encoded, batches, hidden,
                  reference="shipped third-party onnx", onnx_sha256=sha256_file(model_dir / "model.onnx"),
                  validation=validation)


def reference_all_minilm(texts: list[str]) -> None:
    """Graph built by tools/onnx_bert.py from the model's own safetensors."""
    name = "all-MiniLM-L6-v2"
    model_dir = ensure_model(name)
    st = StConfig.load(model_dir)
    encoded = tokenize(model_dir, st, texts)
    batches = make_batches(len(texts))
    pad_id = Tokenizer.from_file(str(model_dir / "tokenizer.json")).token_to_id("[PAD]")
    feeds = [pad_batch(encoded, b, pad_id) for b in batches]
    log(f"{name}: running the tools/onnx_bert.py graph on {len(batches)} batches")

    graph = onnx_bert.build_from_dir(model_dir)
    # The built graph is not stored; its hash still pins exactly which graph made the numbers.
    onnx_sha = hashlib.sha256(graph.SerializeToString()).hexdigest()
    results = run_batches(session(graph), feeds, ["last_hidden_state"])
    hidden = unbatch(encoded, batches, [r[0] for r in results])
    write_fixture(name, model_dir, st, texts, encoded, batches, hidden,
                  reference="tools/onnx_bert.py graph", onnx_sha256=onnx_sha, validation={})


def main() -> int:
    texts = json.loads(TEXTS_FILE.read_text())
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise SystemExit(f"{TEXTS_FILE} must be a JSON list of strings")
    log(f"{len(texts)} texts from {TEXTS_FILE.relative_to(REPO_DIR)}; onnxruntime {ort.__version__}")
    reference_paraphrase_l3(texts)  # first: it validates tools/onnx_bert.py
    reference_all_minilm(texts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
