"""Shared fixtures of the server's Python tests (run by tools/test-server).

Environment (set by tools/test-server):
  E5EMBED_SERVER_URL  base URL of a running e5embed-server, e.g. http://127.0.0.1:40123
  E5EMBED_CLI         path to the `e5embed` binary (reference vectors)
  E5EMBED_TEST_MODEL  the model directory the server was started with
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

URL = os.environ.get("E5EMBED_SERVER_URL", "")


def _need(var: str) -> str:
    v = os.environ.get(var)
    if not v:
        pytest.fail(f"{var} is not set: run these tests through tools/test-server")
    return v


@pytest.fixture(scope="session")
def url() -> str:
    return _need("E5EMBED_SERVER_URL")


@pytest.fixture(scope="session")
def cli_embed():
    """Vectors from the `e5embed embed` CLI (one JSON array per line, input order), as float32."""
    cli = _need("E5EMBED_CLI")
    model = _need("E5EMBED_TEST_MODEL")

    def run(texts: list[str], *flags: str) -> np.ndarray:
        out = subprocess.run(
            [cli, "embed", "--model", model, "--threads", "1", *flags],
            input="\n".join(texts) + "\n",
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert len(rows) == len(texts), out[:500]
        return np.asarray(rows, dtype=np.float32)

    return run
