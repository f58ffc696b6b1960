"""examples/ray_embed.py on a small dataset in Ray's local mode (2 workers): every row's
embedding equals the single-process Embedder's, bitwise."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from e5embed import Embedder

from conftest import REPO, model_dir

ROWS = 300


def test_ray_example_matches_single_process(tmp_path):
    model = model_dir("paraphrase-MiniLM-L3-v2")
    rng = np.random.default_rng(7)
    words = "the of and river protein grams day women chart north valley flows quick brown fox".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) + f" #{i}" for i in range(ROWS)]
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": np.arange(ROWS), "text": texts}), src)
    out = tmp_path / "out"
    # A subprocess bounds Ray's time and keeps its workers out of pytest's process.
    r = subprocess.run([sys.executable, str(REPO / "examples/ray_embed.py"), "--input", str(src), "--output", str(out),
                        "--model", str(model), "--workers", "2", "--threads-per-worker", "1", "--batch-size", "64",
                        "--prompt-name", "passage"],
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"embedded {ROWS} rows" in r.stdout, r.stdout
    table = pq.read_table(out)
    assert table.num_rows == ROWS
    assert pa.types.is_fixed_size_list(table.schema.field("embedding").type)
    ids = table.column("id").to_numpy()
    assert sorted(ids.tolist()) == list(range(ROWS))
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    got_texts = table.column("text").to_pylist()
    want = Embedder(model, threads=1).encode_passages(texts)
    for row, i in enumerate(ids):
        assert got_texts[row] == texts[i]
        assert np.array_equal(got[row].view(np.uint32), want[i].view(np.uint32)), f"row id {i}"
