"""Cold start of `e5embed embed`: process start to first vector, wall time and memory (issue 17
item 5). For each precision and each binary given (e.g. main's build and this branch's),
the one-query command

    BIN embed --model MODEL --precision P --query "how much protein should a female eat"

is timed by hyperfine (`-N`, warm-up runs first: they fill the tuning, calibration and
packed-weights caches, so what is measured is the steady state of a machine that has loaded
the model before), in `--rounds` rounds with the binaries' order alternating, and the median
of all timed runs is reported. Then each command runs `--rss-runs` times under
`/usr/bin/time -v`: the median "Maximum resident set size", and the medians of what the CLI
itself prints (the peak during load, which `embed`'s peak reset after the load hides from
/usr/bin/time, and the peak while embedding). `--stages` adds the median of each stage of
`E5EMBED_TIMING=1`'s breakdown.

Prints Markdown tables. Needs hyperfine (`apt-get install -y hyperfine`) and GNU time
(`/usr/bin/time`). Timings on a shared machine belong under its bench lock: the tool takes
/tmp/e5embed-bench.lock exclusively unless --no-lock (when the caller already holds it, e.g.
`bench-quiet tools/cold-start --no-lock ...`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO_DIR, models_dir

LOCK = "/tmp/e5embed-bench.lock"
QUERY = "how much protein should a female eat"
EMBED_PEAK = re.compile(r"peak while embedding ([\d.]+) MB")
LOAD_PEAK = re.compile(r"peak during load ([\d.]+) MB")
STAGE = re.compile(r"^  (\(?[a-zA-Z][^\d]*?\)?)\s+(-?[\d.]+)(?:\s+[\d.]+\s+[\d.]+)?$")


def command(binary: str, model: Path, precision: str, extra: list[str]) -> list[str]:
    return [
        binary,
        "embed",
        "--model",
        str(model),
        "--precision",
        precision,
        *extra,
        "--query",
        QUERY,
    ]


def quote(args: list[str]) -> str:
    return " ".join(f"'{a}'" if " " in a else a for a in args)


def hyperfine(cmds: dict[str, list[str]], warmup: int, runs: int, rounds: int) -> dict[str, list[float]]:
    """Wall seconds of every timed run per label, rounds alternating the order."""
    times: dict[str, list[float]] = {label: [] for label in cmds}
    labels = list(cmds)
    for r in range(rounds):
        order = labels if r % 2 == 0 else labels[::-1]
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            args = ["hyperfine", "-N", "--style", "none", "-w", str(warmup), "-r", str(runs)]
            args += ["--export-json", out.name]
            for label in order:
                args += ["-n", label, quote(cmds[label])]
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
            for res in json.load(open(out.name))["results"]:
                times[res["command"]] += res["times"]
    return times


def rss(cmd: list[str], runs: int) -> tuple[float, float, float]:
    """Medians of /usr/bin/time's max RSS, the CLI's peak during load and while embedding (MB)."""
    maxrss, load, embed = [], [], []
    for _ in range(runs):
        p = subprocess.run(
            ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True
        )
        kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        maxrss.append(int(kb.group(1)) / 1024 if kb else float("nan"))
        m = EMBED_PEAK.search(p.stderr)
        embed.append(float(m.group(1)) if m else float("nan"))
        m = LOAD_PEAK.search(p.stderr)
        load.append(float(m.group(1)) if m else float("nan"))
    return statistics.median(maxrss), statistics.median(load), statistics.median(embed)


def stages(cmd: list[str], runs: int) -> dict[str, float]:
    """Median ms per stage of E5EMBED_TIMING=1's table (and the first forward's op total)."""
    seen: dict[str, list[float]] = {}
    env = dict(os.environ, E5EMBED_TIMING="1")
    for _ in range(runs):
        p = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        section = None
        for line in p.stderr.splitlines():
            if line.startswith("cold start stages"):
                section = "stage"
                continue
            if line.startswith("per-op timings"):
                section = "op"
                continue
            if section == "op":
                t = re.match(r"^  total\s+([\d.]+) ms$", line)
                if t:
                    seen.setdefault("(first forward: per-op total)", []).append(float(t.group(1)))
                continue
            m = STAGE.match(line)
            if not m or section is None:
                continue
            name = m.group(1).strip()
            seen.setdefault(name, []).append(float(m.group(2)))
    return {k: statistics.median(v) for k, v in seen.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="e5-small-v2-shape", help="name under the models dir, or a directory")
    ap.add_argument("--bin", action="append", default=[], metavar="LABEL=PATH",
                    help="a binary to measure (repeatable; default: this=target/release/e5embed)")
    ap.add_argument("--precisions", default="f32,int8,bf16")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20, help="hyperfine timed runs per round")
    ap.add_argument("--rounds", type=int, default=2, help="hyperfine rounds, binaries' order alternating")
    ap.add_argument("--rss-runs", type=int, default=5)
    ap.add_argument("--stages", type=int, default=0, metavar="N", help="also N runs of the stage breakdown")
    ap.add_argument("--no-hyperfine", action="store_true")
    ap.add_argument("--no-lock", action="store_true", help="the caller holds the bench lock")
    ap.add_argument("extra", nargs="*", help="more embed arguments (after --)")
    a = ap.parse_args()

    model = Path(a.model) if Path(a.model).is_dir() else models_dir() / a.model
    bins = dict(b.split("=", 1) for b in a.bin) or {"this": str(REPO_DIR / "target/release/e5embed")}
    if not a.no_hyperfine and not shutil.which("hyperfine"):
        sys.exit("hyperfine is missing: apt-get install -y hyperfine")
    if not a.no_lock:
        lock = open(LOCK, "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
    cpu = next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
        "unknown CPU",
    )
    print(f"model {model.name}, CPU {cpu}, {os.cpu_count()} CPUs; query {QUERY!r}\n")
    for p in a.precisions.split(","):
        cmds = {label: command(path, model, p, a.extra) for label, path in bins.items()}
        print(f"### {p}\n")
        for label, cmd in cmds.items():
            print(f"- {label}: `{quote(cmd)}`")
        print()
        times = {} if a.no_hyperfine else hyperfine(cmds, a.warmup, a.runs, a.rounds)
        print("| binary | median wall (ms) | min | max | runs | /usr/bin/time max RSS (MB) | CLI: peak during load | CLI: peak while embedding |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, cmd in cmds.items():
            t = times.get(label, [])
            wall = (
                f"{statistics.median(t) * 1e3:.1f} | {min(t) * 1e3:.1f} | {max(t) * 1e3:.1f} | {len(t)}"
                if t
                else "- | - | - | 0"
            )
            maxrss, load, embed = rss(cmd, a.rss_runs) if a.rss_runs else (float("nan"),) * 3
            print(f"| {label} | {wall} | {maxrss:.1f} | {load:.1f} | {embed:.1f} |")
        print()
        if a.stages:
            per = {label: stages(cmd, a.stages) for label, cmd in cmds.items()}
            names: list[str] = []
            for st in per.values():
                names += [n for n in st if n not in names]
            print(f"Stages (`E5EMBED_TIMING=1`, median ms of {a.stages} runs; parenthesised: on a thread of its own):\n")
            print("| stage | " + " | ".join(per) + " |")
            print("| --- |" + " ---: |" * len(per))
            for n in names:
                print(f"| {n} | " + " | ".join(f"{per[l][n]:.2f}" if n in per[l] else "-" for l in per) + " |")
            print()


if __name__ == "__main__":
    main()
