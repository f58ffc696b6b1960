"""Loading by Hugging Face hub id from Python (``Embedder("owner/name")``) against a local
server that plays the hub: the files of the all-MiniLM-L6-v2 test model under
``/{repo}/resolve/main/{file}`` (``model.safetensors`` with its sha256 as the ETag, as the hub
sends for LFS files), 404 with the hub's error code for anything else. The Rust client itself
is tested in depth by tests/hub.rs; this checks the path from Python: the environment it
honours (``HF_ENDPOINT``, ``E5EMBED_HUB_CACHE``, ``HF_HUB_OFFLINE``), vectors equal to the local
directory's, the cache reused without a request, and a clear ``OSError`` for a missing repo."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from e5embed import Embedder

from conftest import model_dir

REPO_ID = "acme/tiny-minilm"
FILES = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
]


class FakeHub:
    """A hub on 127.0.0.1 serving `files` for REPO_ID at revision main; records the paths."""

    def __init__(self, files: dict):
        self.paths: list = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, head_only: bool):
                hub.paths.append(self.path)
                prefix = f"/{REPO_ID}/resolve/main/"
                name = self.path[len(prefix):] if self.path.startswith(prefix) else None
                body = files.get(name) if name else None
                if body is None:
                    code = "EntryNotFound" if name else "RepositoryNotFound"
                    self.send_response(404)
                    self.send_header("X-Error-Code", code)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                if name == "model.safetensors":
                    etag = hashlib.sha256(body).hexdigest()
                else:
                    etag = hashlib.sha1(body).hexdigest()
                self.send_header("ETag", f'"{etag}"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head_only:
                    self.wfile.write(body)

            def do_GET(self):
                self._reply(False)

            def do_HEAD(self):
                self._reply(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    src = model_dir("all-MiniLM-L6-v2")
    files = {f: (src / f).read_bytes() for f in FILES if (src / f).is_file()}
    h = FakeHub(files)
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setenv("E5EMBED_HUB_CACHE", str(tmp_path / "hub"))
    # Nothing from a shared Hugging Face cache or a real token.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    yield h
    h.close()


def test_hub_id_downloads_once_and_matches_the_directory(hub, monkeypatch, tmp_path, texts):
    local = Embedder(model_dir("all-MiniLM-L6-v2"), threads=2)
    e = Embedder(REPO_ID, threads=2)
    assert Path(e.model_dir).is_dir() and str(tmp_path / "hub") in e.model_dir, e.model_dir
    got = e.encode(texts[:20])
    want = local.encode(texts[:20])
    assert np.array_equal(got, want), "vectors from the hub id differ from the local directory's"
    fetched = [p for p in hub.paths if p.endswith("/model.safetensors")]
    assert len(fetched) == 1, hub.paths
    # Loaded again: from the cache, and offline too, with no request at all.
    n = len(hub.paths)
    again = Embedder(REPO_ID, threads=2)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = Embedder(REPO_ID, threads=2)
    assert len(hub.paths) == n, hub.paths[n:]
    assert np.array_equal(again.encode(texts[:5]), want[:5])
    assert np.array_equal(offline.encode(texts[:5]), want[:5])


def test_hub_errors_are_oserrors_that_say_why(hub, monkeypatch):
    with pytest.raises(OSError) as e:
        Embedder("acme/no-such-model")
    assert "acme/no-such-model" in str(e.value), str(e.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as e:
        Embedder("acme/never-downloaded")
    msg = str(e.value).lower()
    assert "offline" in msg, str(e.value)
