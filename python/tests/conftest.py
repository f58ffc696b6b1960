"""Shared fixtures: the test models (tools/fetch-models makes them), the release `e5embed` CLI
(tools/test-python builds it), the ONNX Runtime fixtures in tests/fixtures."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("E5EMBED_MODELS") or Path.home() / ".cache/e5embed/models")


def model_dir(name: str) -> Path:
    d = MODELS / name
    if not (d / "model.safetensors").is_file():
        pytest.fail(f"test model {name} is missing at {d}: run tools/fetch-models first", pytrace=False)
    return d


def cli_path() -> Path:
    p = Path(os.environ.get("E5EMBED_CLI") or REPO / "target/release/e5embed")
    if not p.is_file():
        pytest.fail(f"the e5embed CLI is missing at {p}: run tools/test-python (it builds it)", pytrace=False)
    return p


def read_safetensors(path: Path) -> dict:
    """A minimal safetensors reader (the fixtures hold F32 and I64 tensors)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    dtypes = {"F32": np.float32, "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


@pytest.fixture(scope="session")
def minilm():
    from e5embed import Embedder

    return Embedder(model_dir("all-MiniLM-L6-v2"), threads=2)


@pytest.fixture(scope="session")
def texts() -> list:
    return json.loads((REPO / "tests/fixtures/texts.json").read_text())
