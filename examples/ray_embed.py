#!/usr/bin/env python3
"""Bulk embedding with Ray Data and e5embed: a Parquet or text dataset in, Parquet out.

    python examples/ray_embed.py --input texts.parquet --output embeddings/ \
        --model intfloat/e5-small-v2 --workers 2 --threads-per-worker 1

Each worker is a Ray actor that loads the model once (``Embedder``) and embeds batches of
rows (``map_batches``, ``concurrency`` = ``--workers``); the output holds the input's columns
plus ``embedding``, a fixed-size list of float32 (``dim`` values per row).

Input: a Parquet file or directory with a ``--column`` of text (default ``text``), or a text
file (one text per line, read as column ``text``). On a laptop this runs Ray locally; on a
cluster, start the script on the head node (or pass ``--address auto``) with ``--workers`` =
the number of actors to run; each actor reserves ``--threads-per-worker`` CPUs (leave a CPU
free for Ray Data's read and write tasks: actors holding every CPU starve them), and the model
must be reachable on every node (a hub id downloads once per node; a directory must exist on
each).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Optional

import pyarrow as pa


class EmbedBatch:
    """A Ray Data actor: loads the model once, then embeds one Arrow batch per call."""

    def __init__(self, model: str, column: str, threads: int, precision: str,
                 prompt_name: Optional[str]) -> None:
        from e5embed import Embedder

        self.embedder = Embedder(model, precision=precision, threads=threads)
        self.column = column
        self.prompt_name = prompt_name

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(self.column).to_pylist()
        if self.prompt_name:
            vectors = self.embedder.encode(texts, prompt_name=self.prompt_name)
        else:
            vectors = self.embedder.encode(texts)
        dim = self.embedder.dim
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        return batch.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, dim))


def embed_dataset(input_path: str, output_path: str, model: str, *, column: str = "text",
                  workers: int = 2, threads_per_worker: int = 1, batch_size: int = 256,
                  precision: str = "auto", prompt_name: Optional[str] = None) -> int:
    """Embeds the dataset at ``input_path`` into Parquet files under ``output_path``; returns the row count."""
    import ray

    if input_path.endswith((".txt", ".text")):
        ds = ray.data.read_text(input_path)
        column = "text"
    else:
        ds = ray.data.read_parquet(input_path)
    ds = ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"model": model, "column": column, "threads": threads_per_worker,
                               "precision": precision, "prompt_name": prompt_name},
        batch_size=batch_size,
        batch_format="pyarrow",
        concurrency=workers,
        num_cpus=threads_per_worker,
    )
    ds.write_parquet(output_path)
    # Counted from the written files' metadata (ds.count() would run the pipeline again).
    return ray.data.read_parquet(output_path).count()


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="Parquet file/directory, or a .txt file (one text per line)")
    ap.add_argument("--output", required=True, help="output directory for the Parquet files")
    ap.add_argument("--model", default="intfloat/e5-small-v2", help="model directory or hub id")
    ap.add_argument("--column", default="text", help="the text column of Parquet input")
    ap.add_argument("--workers", type=int, default=2, help="embedding actors (Ray Data concurrency)")
    ap.add_argument("--threads-per-worker", type=int, default=1, help="engine threads (and CPUs) per actor")
    ap.add_argument("--batch-size", type=int, default=256, help="rows per map_batches call")
    ap.add_argument("--precision", default="auto", help="auto, f32, int8 or bf16")
    ap.add_argument("--prompt-name", default=None, help="e.g. passage or query (E5 prefixes)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: start Ray locally)")
    ap.add_argument("--num-cpus", type=int, default=None,
                    help="logical CPUs of a local Ray (default: the cores, at least workers x threads + 1: "
                         "the read and write tasks need a CPU beside the actors, else they wait forever)")
    args = ap.parse_args(argv)

    import ray

    if args.address:
        ray.init(address=args.address)
    else:
        num_cpus = args.num_cpus or max(os.cpu_count() or 1, args.workers * args.threads_per_worker + 1)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    t = time.perf_counter()
    rows = embed_dataset(args.input, args.output, args.model, column=args.column, workers=args.workers,
                         threads_per_worker=args.threads_per_worker, batch_size=args.batch_size,
                         precision=args.precision, prompt_name=args.prompt_name)
    secs = time.perf_counter() - t
    print(f"embedded {rows} rows in {secs:.1f} s ({rows / secs:.1f} rows/s) -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
