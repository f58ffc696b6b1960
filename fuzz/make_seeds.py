#!/usr/bin/env python3
"""Writes the committed seed corpora under fuzz/seeds/<target>/ (Python 3 stdlib only).

Run from anywhere: `python3 fuzz/make_seeds.py`. The model_config and tokenizer_json seeds
are derived from the test models' files (`tools/fetch-models`, `$E5EMBED_MODELS` or
~/.cache/e5embed/models); the tokenizer seeds keep the real file's structure with a tiny
vocabulary, so each seed stays a few KB.
"""

import json
import os
import shutil
import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
SEEDS = FUZZ / "seeds"
MODELS = Path(os.environ.get("E5EMBED_MODELS") or Path.home() / ".cache/e5embed/models")

# The encoder of fuzz_targets/safetensors_weights.rs.
V, H, L, I, P, T = 8, 4, 1, 8, 8, 2


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- safetensors_weights


def f32(vals):
    return struct.pack(f"<{len(vals)}f", *vals)


def f16(vals):
    return struct.pack(f"<{len(vals)}e", *vals)


def bf16(vals):
    return b"".join(struct.pack("<f", v)[2:] for v in vals)


def i8(vals):
    return struct.pack(f"<{len(vals)}b", *vals)


ENC = {"F32": (f32, 4), "F16": (f16, 2), "BF16": (bf16, 2), "I8": (i8, 1)}


def values(n, seed):
    return [((i * 7 + seed * 13) % 17 - 8) / 16.0 for i in range(n)]


def tensor_list(prefix="", dtype="F32", int8=False, smooth=False):
    """(name, dtype, shape, raw bytes) of every tensor of the small encoder."""
    out = []
    seed = [0]

    def add(name, shape, dt=dtype, vals=None):
        n = 1
        for s in shape:
            n *= s
        seed[0] += 1
        vals = values(n, seed[0]) if vals is None else vals
        enc, _ = ENC[dt]
        out.append((prefix + name, dt, list(shape), enc(vals)))

    def linear(name, rows, cols):
        if int8:
            add(name + ".weight", [rows, cols], "I8", [((r * cols + c) % 255) - 127 for r in range(rows) for c in range(cols)])
            add(name + ".weight_scale", [rows], "F32", [0.01 * (r + 1) for r in range(rows)])
            if smooth:
                add(name + ".weight_smooth", [cols], "F32", [1.0 + c / 8 for c in range(cols)])
        else:
            add(name + ".weight", [rows, cols])
        add(name + ".bias", [rows])

    add("embeddings.word_embeddings.weight", [V, H])
    add("embeddings.position_embeddings.weight", [P, H])
    add("embeddings.token_type_embeddings.weight", [T, H])
    add("embeddings.LayerNorm.weight", [H])
    add("embeddings.LayerNorm.bias", [H])
    for layer in range(L):
        p = f"encoder.layer.{layer}."
        for part in ["query", "key", "value"]:
            linear(p + f"attention.self.{part}", H, H)
        linear(p + "attention.output.dense", H, H)
        add(p + "attention.output.LayerNorm.weight", [H])
        add(p + "attention.output.LayerNorm.bias", [H])
        linear(p + "intermediate.dense", I, H)
        linear(p + "output.dense", H, I)
        add(p + "output.LayerNorm.weight", [H])
        add(p + "output.LayerNorm.bias", [H])
    return out


def safetensors(tensors, metadata=None, offsets=None):
    """A safetensors file; `offsets` overrides the data_offsets per tensor name."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = b""
    for name, dt, shape, raw in tensors:
        begin, end = len(data), len(data) + len(raw)
        if offsets and name in offsets:
            begin, end = offsets[name]
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [begin, end]}
        data += raw
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    t = "safetensors_weights"
    write(t, "valid_f32", safetensors(tensor_list(), {"format": "pt"}))
    write(t, "valid_f16_bert_prefix", safetensors(tensor_list("bert.", "F16")))
    write(t, "valid_bf16", safetensors(tensor_list("", "BF16")))
    write(t, "valid_int8_scale", safetensors(tensor_list(int8=True)))
    write(t, "valid_int8_smooth", safetensors(tensor_list(int8=True, smooth=True)))
    base = tensor_list()
    # Lying offsets: a tensor whose range points past the data, one overlapping another.
    write(t, "offset_past_end", safetensors(base, offsets={base[0][0]: (0, 1 << 40)}))
    write(t, "overlapping", safetensors(base, offsets={base[1][0]: (0, len(base[1][3]))}))
    # Shapes whose product overflows, and a wrong dtype.
    big = [(n, d, [1 << 62, 1 << 62] if i == 0 else s, r) for i, (n, d, s, r) in enumerate(base)]
    write(t, "shape_overflow", safetensors(big))
    wrong = [(n, "I64" if i == 3 else d, [1] if i == 3 else s, struct.pack("<q", 1) if i == 3 else r) for i, (n, d, s, r) in enumerate(base)]
    write(t, "wrong_dtype", safetensors(wrong))
    f = safetensors(base)
    write(t, "truncated", f[: len(f) - 7])
    write(t, "header_only", struct.pack("<Q", 2) + b"{}")


# ---------------------------------------------------------------- model_config

CONFIG_FILES = ["config.json", "sentence_bert_config.json", "modules.json", "1_Pooling/config.json"]


def config_seed(parts):
    return b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)


def model_config_seeds():
    t = "model_config"
    for model in ["paraphrase-MiniLM-L3-v2", "all-MiniLM-L6-v2", "e5-small-v2-shape"]:
        d = MODELS / model
        parts = []
        for f in CONFIG_FILES:
            if not (d / f).is_file():
                break
            parts.append((d / f).read_bytes())
        write(t, model, config_seed(parts))
    small = {"model_type": "bert", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1,
             "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 8}
    cfg = json.dumps(small)
    mods = json.dumps([{"path": "", "type": "sentence_transformers.models.Transformer"},
                       {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                       {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    cls = json.dumps({"word_embedding_dimension": 4, "pooling_mode_cls_token": True})
    write(t, "small_config_only", config_seed([cfg]))
    write(t, "small_cls_normalize", config_seed([cfg, '{"max_seq_length": 6}', mods, cls]))
    write(t, "small_no_modules_pooling_dir", config_seed([cfg, "{}", "", cls]))
    write(t, "arch_only", config_seed([json.dumps({**{k: v for k, v in small.items() if k != "model_type"}, "architectures": ["BertModel"]})]))
    write(t, "bad_values", config_seed([json.dumps({**small, "hidden_size": 5, "layer_norm_eps": -1}), '{"max_seq_length": 1}']))


# ---------------------------------------------------------------- tokenizer_json

WORDS = ["the", "a", "hello", "world", "query", "how", "much", "protein", "should", "female",
         "eat", ":", ",", "!", "##s", "##ing", "##ll", "##o", "h", "e", "l", "o", "w", "r", "d",
         "q", "u", "y", "日", "本", "語"]


def tokenizer_seeds():
    t = "tokenizer_json"
    real = json.loads((MODELS / "paraphrase-MiniLM-L3-v2" / "tokenizer.json").read_text())
    specials = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    vocab = dict(specials)
    for w in WORDS:
        vocab[w] = len(vocab)
    tok = json.loads(json.dumps(real))
    tok["model"]["vocab"] = vocab
    for a in tok["added_tokens"]:
        a["id"] = specials[a["content"]]
    pp = tok["post_processor"]["special_tokens"]
    pp["[CLS]"]["ids"] = [specials["[CLS]"]]
    pp["[SEP]"]["ids"] = [specials["[SEP]"]]
    write(t, "wordpiece_small", json.dumps(tok, ensure_ascii=False, indent=1))
    plain = json.loads(json.dumps(tok))
    plain["truncation"] = None
    plain["padding"] = None
    plain["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]}
    write(t, "wordpiece_bertprocessing", json.dumps(plain, ensure_ascii=False))
    bpe = json.loads(json.dumps(plain))
    bpe["normalizer"] = None
    bpe["pre_tokenizer"] = {"type": "Whitespace"}
    bpe["decoder"] = None
    bpe["model"] = {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                    "vocab": {**specials, "h": 5, "e": 6, "l": 7, "o": 8, "he": 9, "ll": 10, "hell": 11, "hello": 12},
                    "merges": ["h e", "l l", "he ll", "hell o"]}
    write(t, "bpe_small", json.dumps(bpe))
    uni = json.loads(json.dumps(plain))
    uni["model"] = {"type": "Unigram", "unk_id": 1,
                    "vocab": [[k, -1.0] for k in specials] + [["▁hello", -2.0], ["▁world", -2.5], ["h", -5.0], ["e", -5.0]]}
    uni["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    write(t, "unigram_small", json.dumps(uni, ensure_ascii=False))


# ---------------------------------------------------------------- input_reader / embed


def input_seeds():
    t = "input_reader"
    # First byte: bits 0-2 chunk size - 1, bits 3-6 buffer size - 1, bit 7 JSON Lines.
    write(t, "lines_crlf", b"\x13" + b"a\r\n\nb c\nlast\r")
    write(t, "lines_bad_utf8", b"\x02" + b"ok\nok\nbad\xff\nafter\n")
    write(t, "lines_long", b"\x7f" + (b"word " * 200 + b"\n") * 3)
    write(t, "jsonl", b"\x8b" + '{"text": "x", "id": 1}\n\n{"text": "\\u00e9t\\u00e9"}\r\n  \n{"text": "日本"}'.encode())
    write(t, "jsonl_errors", b"\x81" + b'{"text": "x"}\n{"body": "y"}\n{"text": 3}\n{oops\n[1]\n')


def embed_seeds():
    t = "embed"
    write(t, "queries", "query: how much protein should a female eat\npassage: The CDC recommends 46 grams of protein a day.")
    write(t, "empty_and_specials", "\n[CLS] [SEP] [PAD] [MASK] [UNK]\n\u00e9t\u00e9 caf\u00e9 na\u00efve\n日本語のテキスト 🙂")
    write(t, "long", " ".join(["tokenization"] * 300))
    write(t, "controls", "\u0000\u0001\t\r \u200b\ufeff\u0301\u0301\u0301 x")


def main():
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    safetensors_seeds()
    model_config_seeds()
    tokenizer_seeds()
    input_seeds()
    embed_seeds()
    total = sum(f.stat().st_size for f in SEEDS.rglob("*") if f.is_file())
    print(f"wrote {sum(1 for f in SEEDS.rglob('*') if f.is_file())} seeds, {total} bytes, under {SEEDS}")


if __name__ == "__main__":
    main()
