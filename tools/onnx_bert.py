"""Build an ONNX graph of a BERT encoder from a Hugging Face BERT directory.

The graph is written op by op with onnx.helper (opset 17), following Hugging Face's eager
`BertModel` forward as closely as float32 allows:

    embeddings   = LayerNorm(word[input_ids] + token_type[token_type_ids] + position[0..S))
    for each layer:
        q, k, v  = x @ Wq + bq, x @ Wk + bk, x @ Wv + bv          split into heads
        scores   = (q @ k^T) / sqrt(head_dim) + (1 - mask) * finfo(float32).min
        context  = softmax(scores) @ v                              heads merged back
        x        = LayerNorm(context @ Wo + bo + x)
        h        = gelu(x @ Wi + bi)            exact GELU: h * 0.5 * (1 + erf(h / sqrt(2)))
        x        = LayerNorm(h @ Wo2 + bo2 + x)
    last_hidden_state = x                                            [batch, sequence, hidden]

Inputs are input_ids, attention_mask and token_type_ids (int64, [batch, sequence], both axes
dynamic). Nothing model-specific is hard-coded: sizes come from config.json and are checked
against the tensor shapes in model.safetensors, so the same builder serves all-MiniLM-L6-v2
(6 layers), paraphrase-MiniLM-L3-v2 (3 layers) and e5-small-v2-shape (12 layers).

Library use:
    import onnx_bert
    model = onnx_bert.build_from_dir("path/to/model_dir")      # onnx.ModelProto

Command line (e.g. to benchmark ONNX Runtime on a model directory):
    python tools/onnx_bert.py MODEL_DIR OUT.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

OPSET = 17
# ir_version 8 is the oldest that carries opset 17; it keeps the file loadable by older runtimes.
IR_VERSION = 8

# Per-layer parameters of a Hugging Face BertLayer, relative to "encoder.layer.{i}.".
LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def bert_tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every BertModel encoder tensor (no pooler), in checkpoint order.

    Linear weights are in PyTorch layout [out_features, in_features].
    """
    hidden = config["hidden_size"]
    inter = config["intermediate_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config["vocab_size"], hidden),
        "embeddings.position_embeddings.weight": (config["max_position_embeddings"], hidden),
        "embeddings.token_type_embeddings.weight": (config["type_vocab_size"], hidden),
        "embeddings.LayerNorm.weight": (hidden,),
        "embeddings.LayerNorm.bias": (hidden,),
    }
    # (out_features, in_features) of each Linear in a BertLayer.
    linear_dims = {
        "attention.self.query": (hidden, hidden),
        "attention.self.key": (hidden, hidden),
        "attention.self.value": (hidden, hidden),
        "attention.output.dense": (hidden, hidden),
        "intermediate.dense": (inter, hidden),
        "output.dense": (hidden, inter),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for part in LINEARS:
            out_f, in_f = linear_dims[part]
            shapes[p + part + ".weight"] = (out_f, in_f)
            shapes[p + part + ".bias"] = (out_f,)
            if part == "attention.output.dense":
                shapes[p + "attention.output.LayerNorm.weight"] = (hidden,)
                shapes[p + "attention.output.LayerNorm.bias"] = (hidden,)
        shapes[p + "output.LayerNorm.weight"] = (hidden,)
        shapes[p + "output.LayerNorm.bias"] = (hidden,)
    return shapes


def expected_tensor_names(num_layers: int) -> list[str]:
    """The BertModel encoder tensor names (no pooler) for a given depth."""
    dummy = dict(hidden_size=1, intermediate_size=1, vocab_size=1, max_position_embeddings=1,
                 type_vocab_size=1, num_hidden_layers=num_layers)
    return list(bert_tensor_shapes(dummy))


def load_bert_dir(model_dir: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read config.json and model.safetensors; return (config, tensors without any 'bert.' prefix)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    tensors = load_file(str(model_dir / "model.safetensors"))
    # Checkpoints saved from BertFor* heads prefix the encoder with "bert.".
    if "embeddings.word_embeddings.weight" not in tensors and "bert.embeddings.word_embeddings.weight" in tensors:
        tensors = {k[len("bert."):]: v for k, v in tensors.items() if k.startswith("bert.")}
    return config, tensors


def _check_config_and_shapes(config: dict, tensors: dict[str, np.ndarray]) -> None:
    """Fail early, naming the tensor, if config.json and the weights disagree."""
    if config.get("hidden_act", "gelu") != "gelu":
        raise NotImplementedError(f"hidden_act {config['hidden_act']!r}: only exact 'gelu' is built")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise NotImplementedError("only absolute position embeddings are built")
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    if hidden % heads:
        raise ValueError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    shapes = bert_tensor_shapes(config)
    missing = [n for n in shapes if n not in tensors]
    if missing:
        raise KeyError(f"model.safetensors lacks {len(missing)} tensors, first: {missing[:5]}")
    for name, shape in shapes.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"{name}: shape {tuple(tensors[name].shape)} but config.json implies {shape}")


class _GraphBuilder:
    """Collects nodes and initializers and hands out unique tensor names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def fresh(self, hint: str) -> str:
        n = self._count.get(hint, 0)
        self._count[hint] = n + 1
        return hint if n == 0 else f"{hint}_{n}"

    def init(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def const(self, hint: str, value, dtype=np.float32) -> str:
        return self.init(self.fresh("const/" + hint), np.asarray(value, dtype=dtype))

    def op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        out = self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def build_bert_graph(config: dict, tensors: dict[str, np.ndarray], *, graph_name: str = "bert") -> onnx.ModelProto:
    """Return an ONNX BERT encoder (inputs input_ids/attention_mask/token_type_ids, output last_hidden_state)."""
    _check_config_and_shapes(config, tensors)
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(config["layer_norm_eps"])
    f32 = lambda name: np.asarray(tensors[name], dtype=np.float32)  # noqa: E731

    g = _GraphBuilder()

    def linear(x: str, prefix: str) -> str:
        # ONNX MatMul wants [in, out]: transpose the PyTorch [out, in] weight once, at build time.
        w = g.init(prefix + ".weight.T", f32(prefix + ".weight").T)
        b = g.init(prefix + ".bias", f32(prefix + ".bias"))
        return g.op("Add", [g.op("MatMul", [x, w], prefix + "/MatMul"), b], prefix + "/Add")

    def layer_norm(x: str, prefix: str) -> str:
        w = g.init(prefix + ".weight", f32(prefix + ".weight"))
        b = g.init(prefix + ".bias", f32(prefix + ".bias"))
        return g.op("LayerNormalization", [x, w, b], prefix + "/LayerNorm", axis=-1, epsilon=eps)

    # ---- embeddings ---------------------------------------------------------------------------
    word = g.op("Gather", [g.init("embeddings.word_embeddings.weight", f32("embeddings.word_embeddings.weight")),
                           "input_ids"], "embeddings/word")                                    # [B, S, H]
    tok_type = g.op("Gather", [g.init("embeddings.token_type_embeddings.weight",
                                      f32("embeddings.token_type_embeddings.weight")),
                               "token_type_ids"], "embeddings/token_type")                     # [B, S, H]
    # Positions 0..S-1: the first S rows of the table, S read from the input at run time.
    # (A Slice, not Gather(Range(0, S)): ORT's full graph optimizations rewrite that Gather into
    # a Slice with scalar bounds, which then fails at run time in onnxruntime 1.32.)
    seq_len = g.op("Shape", ["input_ids"], "embeddings/seq_len", start=1, end=2)              # [1]
    pos = g.op("Slice", [g.init("embeddings.position_embeddings.weight",
                                f32("embeddings.position_embeddings.weight")),
                         g.const("zero_1d", [0], np.int64), seq_len, g.const("axis0", [0], np.int64)],
               "embeddings/position")                                                          # [S, H]
    # Same summation order as BertEmbeddings: (word + token_type) + position.
    x = g.op("Add", [g.op("Add", [word, tok_type], "embeddings/add_type"), pos], "embeddings/add_pos")
    x = layer_norm(x, "embeddings.LayerNorm")                                                  # [B, S, H]

    # ---- additive attention mask, as HF BERT: (1 - mask) * finfo(float32).min -----------------
    mask_f = g.op("Cast", ["attention_mask"], "mask/float", to=TensorProto.FLOAT)              # [B, S]
    mask_4d = g.op("Unsqueeze", [mask_f, g.const("axes_1_2", [1, 2], np.int64)], "mask/unsqueeze")  # [B,1,1,S]
    inverted = g.op("Sub", [g.const("one_f32", 1.0), mask_4d], "mask/invert")
    mask_bias = g.op("Mul", [inverted, g.const("f32_min", np.finfo(np.float32).min)], "mask/bias")

    split_shape = g.const("split_heads_shape", [0, 0, heads, head_dim], np.int64)  # 0 = keep that dim
    merge_shape = g.const("merge_heads_shape", [0, 0, hidden], np.int64)
    scale = g.const("sqrt_head_dim", math.sqrt(head_dim))
    sqrt2 = g.const("sqrt2", math.sqrt(2.0))
    one = g.const("gelu_one", 1.0)
    half = g.const("gelu_half", 0.5)

    # ---- encoder layers -----------------------------------------------------------------------
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def heads_of(t: str, perm: list[int], what: str) -> str:
            # [B, S, H] -> [B, S, heads, head_dim] -> permuted
            r = g.op("Reshape", [t, split_shape], p + f"attention/{what}_split")
            return g.op("Transpose", [r], p + f"attention/{what}_heads", perm=perm)

        q = heads_of(linear(x, p + "attention.self.query"), [0, 2, 1, 3], "q")    # [B, nh, S, hd]
        k_t = heads_of(linear(x, p + "attention.self.key"), [0, 2, 3, 1], "k")    # [B, nh, hd, S]
        v = heads_of(linear(x, p + "attention.self.value"), [0, 2, 1, 3], "v")    # [B, nh, S, hd]
        scores = g.op("Div", [g.op("MatMul", [q, k_t], p + "attention/qk"), scale], p + "attention/scaled")
        scores = g.op("Add", [scores, mask_bias], p + "attention/masked")        # [B, nh, S, S]
        probs = g.op("Softmax", [scores], p + "attention/probs", axis=-1)
        ctx = g.op("MatMul", [probs, v], p + "attention/context")                # [B, nh, S, hd]
        ctx = g.op("Transpose", [ctx], p + "attention/context_t", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape], p + "attention/context_merged")  # [B, S, H]
        attn = linear(ctx, p + "attention.output.dense")
        x = layer_norm(g.op("Add", [attn, x], p + "attention/residual"), p + "attention.output.LayerNorm")

        h = linear(x, p + "intermediate.dense")                                  # [B, S, I]
        # Exact (erf) GELU, written as PyTorch's exporter writes it.
        erf = g.op("Erf", [g.op("Div", [h, sqrt2], p + "gelu/div")], p + "gelu/erf")
        h = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, one], p + "gelu/add")], p + "gelu/mul"), half],
                 p + "gelu/half")
        out = linear(h, p + "output.dense")                                      # [B, S, H]
        x = layer_norm(g.op("Add", [out, x], p + "output/residual"), p + "output.LayerNorm")

    final = g.op("Identity", [x], "last_hidden_state")

    ids_type = lambda name: helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])  # noqa: E731
    graph = helper.make_graph(
        g.nodes,
        graph_name,
        inputs=[ids_type("input_ids"), ids_type("attention_mask"), ids_type("token_type_ids")],
        outputs=[helper.make_tensor_value_info(final, TensorProto.FLOAT, ["batch", "sequence", hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="e5embed tools/onnx_bert.py")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def build_from_dir(model_dir: str | Path) -> onnx.ModelProto:
    """Build the encoder graph for an HF BERT directory (config.json + model.safetensors)."""
    config, tensors = load_bert_dir(model_dir)
    return build_bert_graph(config, tensors, graph_name=Path(model_dir).name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="HF BERT directory with config.json and model.safetensors")
    ap.add_argument("output", help="where to write the .onnx file")
    args = ap.parse_args(argv)
    model = build_from_dir(args.model_dir)
    onnx.save(model, args.output)
    print(f"wrote {args.output}: {len(model.graph.node)} nodes, output last_hidden_state", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
