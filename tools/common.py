"""Small helpers shared by tools/fetch_models.py and tools/make_reference.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
REPO_DIR = TOOLS_DIR.parent


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var, "")
    return Path(value) if value else None  # empty counts as unset, as in the Rust engine


def cache_dir() -> Path:
    """Download cache outside the repo (wheels go to <cache>/wheels)."""
    return _env_path("E5EMBED_CACHE") or Path.home() / ".cache" / "e5embed"


def models_dir() -> Path:
    """Where tools/fetch-models puts the models; the same rule as e5embed::models_dir() in src/lib.rs."""
    return _env_path("E5EMBED_MODELS") or Path.home() / ".cache" / "e5embed" / "models"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str | Path, obj) -> None:
    """Pretty JSON with a trailing newline, parent directories created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def log(msg: str) -> None:
    print(msg, flush=True)
