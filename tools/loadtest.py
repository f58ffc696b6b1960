"""Load test of e5embed-server on loopback with oha (see tools/loadtest for the wrapper).

Runs, with the bench lock held (/tmp/e5embed-bench.lock, as tools/compare and
tools/memory-check take it):

1. the offline baselines of issue #15's targets: `e5embed bench --batch 1 --seq 8` (median ms)
   and `e5embed embed --input corpus.txt` (texts/s, tokenization included), same model,
   precision and threads as the server;
2. the server (`e5embed-server --port 0`), then for (a) distinct 8-token queries and (b) the
   mixed-length corpus of tools/compare (compare_corpus.py, one text per request, oha picks a
   random line per request) at each concurrency: oha with a bounded request count (and a
   wall-clock cap), recording throughput, p50/p90/p99, errors, tokens/s (from /metrics) and RSS;
   then --c1-rounds paired rounds of (bench, c=1 queries) for the c=1 target;
3. --rss-requests more query requests (default 100,000): RSS and open file descriptors
   before and after;
4. SIGTERM: the server must exit 0.

Prints a Markdown table and the targets met or not; writes --json and --png (latency vs
concurrency). Every connection is to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

LOCK = "/tmp/e5embed-bench.lock"


def log(msg: str) -> None:
    print(f"[loadtest] {msg}", file=sys.stderr, flush=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key.split("{")[0] == name:
            total += float(value)
    return total


def oha(oha_bin: str, url: str, bodies: Path, n: int, c: int, max_seconds: float) -> dict:
    cmd = [oha_bin, "-n", str(n), "-c", str(c), "-m", "POST", "-T", "application/json",
           "-Z", str(bodies), "--no-tui", "--output-format", "json", url + "/v1/embeddings"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=max_seconds)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"oha failed ({p.returncode}): {p.stderr[-2000:]}")
    r = json.loads(p.stdout)
    codes = {int(k): v for k, v in r.get("statusCodeDistribution", {}).items()}
    transport_errors = sum(r.get("errorDistribution", {}).values())
    ok = codes.get(200, 0)
    pct = r["latencyPercentiles"]
    return {
        "requests": n,
        "concurrency": c,
        "ok": ok,
        "errors": sum(v for k, v in codes.items() if k != 200) + transport_errors,
        "status_codes": codes,
        "transport_errors": r.get("errorDistribution", {}),
        "seconds": r["summary"]["total"],
        "wall_seconds": wall,
        "rps": r["summary"]["requestsPerSec"],
        "p50_ms": pct["p50"] * 1000,
        "p90_ms": pct["p90"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "mean_ms": r["summary"]["average"] * 1000,
    }


def start_server(binary: str, model: Path, precision: str, threads: int, log_path: Path, extra: list[str]):
    out = open(log_path.with_suffix(".stdout"), "w")
    err = open(log_path, "w")
    p = subprocess.Popen([binary, "--model", str(model), "--host", "127.0.0.1", "--port", "0",
                          "--precision", precision, "--threads", str(threads), *extra],
                         stdout=out, stderr=err, env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"listening on (\S+)", log_path.with_suffix(".stdout").read_text())
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        time.sleep(0.1)
    p.kill()
    raise RuntimeError("server did not start within 120 s")


def bench_median(e5: str, model: Path, precision: str, threads: int, iters: int) -> float:
    b = subprocess.run([e5, "bench", "--model", str(model), "--batch", "1", "--seq", "8",
                        "--threads", str(threads), "--precision", precision, "--iters", str(iters),
                        "--json"], capture_output=True, text=True, check=True)
    return json.loads(b.stdout)["median_ms"]


def baselines(e5: str, model: Path, precision: str, threads: int, corpus: Path, iters: int) -> dict:
    b = subprocess.run([e5, "bench", "--model", str(model), "--batch", "1", "--seq", "8",
                        "--threads", str(threads), "--precision", precision, "--iters", str(iters),
                        "--json"], capture_output=True, text=True, check=True)
    bench = json.loads(b.stdout)
    npy = corpus.with_suffix(".npy")
    e = subprocess.run([e5, "embed", "--model", str(model), "--input", str(corpus), "--output", str(npy),
                        "--threads", str(threads), "--precision", precision, "--no-progress"],
                       capture_output=True, text=True, check=True)
    npy.unlink(missing_ok=True)
    m = re.search(r"embedded (\d+) texts \((\d+) tokens.*?in ([\d.]+) s: ([\d.]+) texts/s", e.stderr)
    if not m:
        raise RuntimeError(f"cannot parse the embed summary: {e.stderr[-1000:]}")
    return {
        "bench_batch1_seq8_median_ms": bench["median_ms"],
        "bench_json": bench,
        "embed_texts": int(m.group(1)),
        "embed_tokens": int(m.group(2)),
        "embed_seconds": float(m.group(3)),
        "embed_texts_per_s": float(m.group(4)),
        "embed_summary": e.stderr.strip().splitlines()[-1],
    }


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (workload, label) in zip(axes, [("queries", "8-token queries"), ("corpus", "mixed-length corpus")]):
        rows = [r for r in results if r["workload"] == workload]
        cs = [r["concurrency"] for r in rows]
        for key, style in [("p50_ms", "o-"), ("p90_ms", "s--"), ("p99_ms", "^:")]:
            ax.plot(cs, [r[key] for r in rows], style, label=key.replace("_ms", ""))
        for r in rows:
            ax.annotate(f"{r['rps']:.0f}/s", (r["concurrency"], r["p50_ms"]), textcoords="offset points",
                        xytext=(4, -12), fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(cs, [str(c) for c in cs])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("latency (ms)")
        ax.set_title(label + " (throughput at p50)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--e5embed", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--oha", required=True)
    ap.add_argument("--tools-python", required=True)
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--query-requests", type=int, default=2000)
    ap.add_argument("--corpus-texts", type=int, default=2000)
    ap.add_argument("--corpus-requests", type=int, default=2000)
    ap.add_argument("--rss-requests", type=int, default=100_000)
    ap.add_argument("--rss-concurrency", type=int, default=16)
    ap.add_argument("--bench-iters", type=int, default=500)
    ap.add_argument("--c1-rounds", type=int, default=5,
                    help="paired rounds of (bench --batch 1 --seq 8, then c=1 queries) for the c=1 target")
    ap.add_argument("--c1-requests", type=int, default=400)
    ap.add_argument("--server-args", default="", help="more e5embed-server flags, e.g. '--linger-ms 0'")
    ap.add_argument("--max-seconds", type=float, default=300, help="wall-clock cap of each oha run")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--png", type=Path)
    ap.add_argument("--no-lock", action="store_true")
    a = ap.parse_args()
    conc = [int(c) for c in a.concurrency.split(",")]

    data = a.work / f"bodies-{a.model.name}-{a.corpus_texts}"
    if not (data / "summary.json").exists():
        log(f"generating request bodies in {data}")
        subprocess.run([a.tools_python, str(Path(__file__).parent / "loadtest_corpus.py"), str(a.model),
                        str(data), str(a.corpus_texts), "1000"], check=True, stdout=subprocess.DEVNULL)
    corpus_summary = json.loads((data / "summary.json").read_text())

    lock = open(LOCK, "w")
    if not a.no_lock:
        log(f"waiting for {LOCK}")
        fcntl.flock(lock, fcntl.LOCK_EX)
        log("bench lock held")
    started = datetime.datetime.now(datetime.timezone.utc)

    log("offline baselines: e5embed bench --batch 1 --seq 8, e5embed embed --input corpus")
    base = baselines(a.e5embed, a.model, a.precision, a.threads, data / "corpus.txt", a.bench_iters)
    log(f"bench median {base['bench_batch1_seq8_median_ms']:.3f} ms; {base['embed_summary']}")

    server, url = start_server(a.server, a.model, a.precision, a.threads, a.work / "server.log",
                               a.server_args.split())
    log(f"server pid {server.pid} at {url}")
    results: list[dict] = []
    paired: list[dict] = []
    try:
        oha(a.oha, url, data / "queries.jsonl", 200, 4, a.max_seconds)  # warm-up
        rss_start = rss_mb(server.pid)
        for workload, bodies, n in [("queries", data / "queries.jsonl", a.query_requests),
                                    ("corpus", data / "corpus.jsonl", a.corpus_requests)]:
            for c in conc:
                tok0, in0, fw0 = (metric(url, k) for k in
                                  ("e5embed_tokens_total", "e5embed_batch_inputs_sum", "e5embed_batch_inputs_count"))
                r = oha(a.oha, url, bodies, n, c, a.max_seconds)
                tok1, in1, fw1 = (metric(url, k) for k in
                                  ("e5embed_tokens_total", "e5embed_batch_inputs_sum", "e5embed_batch_inputs_count"))
                r.update(workload=workload, tokens_per_s=(tok1 - tok0) / r["seconds"],
                         inputs_per_forward=(in1 - in0) / max(fw1 - fw0, 1), rss_mb=rss_mb(server.pid))
                results.append(r)
                log(f"{workload} c={c}: {r['rps']:.1f} req/s, p50 {r['p50_ms']:.2f} p90 {r['p90_ms']:.2f} "
                    f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}, {r['inputs_per_forward']:.1f} inputs/forward, "
                    f"RSS {r['rss_mb']:.1f} MB")
        # The c=1 target, paired: the machine's speed drifts by more than the 0.5 ms margin
        # between runs minutes apart (bench medians of one config ranged 3.9-5.9 ms here), so
        # each round times the offline bench and then the server back to back, and the target
        # takes the median over rounds of (server p50 - bench median).
        for i in range(a.c1_rounds):
            b_ms = bench_median(a.e5embed, a.model, a.precision, a.threads, a.c1_requests)
            r = oha(a.oha, url, data / "queries.jsonl", a.c1_requests, 1, a.max_seconds)
            paired.append({"bench_median_ms": b_ms, "p50_ms": r["p50_ms"], "errors": r["errors"],
                           "diff_ms": r["p50_ms"] - b_ms})
            log(f"paired c=1 round {i + 1}: bench median {b_ms:.3f} ms, server p50 {r['p50_ms']:.3f} ms, "
                f"difference {r['p50_ms'] - b_ms:+.3f} ms")
        rss_warm, fds_warm = rss_mb(server.pid), fd_count(server.pid)
        soak = None
        if a.rss_requests:
            log(f"{a.rss_requests} query requests at concurrency {a.rss_concurrency}")
            soak = oha(a.oha, url, data / "queries.jsonl", a.rss_requests, a.rss_concurrency, a.max_seconds * 4)
            soak.update(rss_before_mb=rss_warm, rss_after_mb=rss_mb(server.pid), fds_before=fds_warm)
            time.sleep(0.5)  # let closed connections' fds go
            soak["fds_after"] = fd_count(server.pid)
            log(f"soak: {soak['rps']:.0f} req/s, errors {soak['errors']}, RSS {rss_warm:.1f} -> "
                f"{soak['rss_after_mb']:.1f} MB, fds {fds_warm} -> {soak['fds_after']}")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            exit_code = "killed after 60 s"
    finished = datetime.datetime.now(datetime.timezone.utc)
    if not a.no_lock:
        fcntl.flock(lock, fcntl.LOCK_UN)

    # Report.
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=Path(__file__).parent).stdout.strip()
    title = (f"e5embed-server{' ' + a.server_args if a.server_args else ''}, {a.model.name}, {a.precision}, "
             f"{a.threads} threads, {cpu} "
             f"({os.cpu_count()} CPUs), commit {commit}{'+' if dirty else ''}, {started:%Y-%m-%d %H:%M} UTC")
    lines = [f"{title}", "",
             "| workload | concurrency | requests | errors | req/s | tokens/s | inputs/forward | p50 ms | p90 ms | p99 ms | RSS after (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {'8-token queries' if r['workload'] == 'queries' else 'corpus, 1 text/request'} | "
                     f"{r['concurrency']} | {r['requests']:,} | {r['errors']} | {r['rps']:,.1f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['inputs_per_forward']:.1f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['rss_mb']:.1f} |")
    targets = []
    q1 = next((r for r in results if r["workload"] == "queries" and r["concurrency"] == 1), None)
    if paired:
        diffs = sorted(p["diff_ms"] for p in paired)
        med = diffs[len(diffs) // 2] if len(diffs) % 2 else (diffs[len(diffs) // 2 - 1] + diffs[len(diffs) // 2]) / 2
        targets.append((f"c=1 8-token queries: p50 <= bench median + 0.5 ms (paired, {len(paired)} rounds)",
                        med <= 0.5,
                        f"median of (server p50 - bench median) over rounds {med:+.3f} ms; rounds: "
                        + ", ".join(f"{p['p50_ms']:.2f} vs {p['bench_median_ms']:.2f}" for p in paired)))
    elif q1:
        limit = base["bench_batch1_seq8_median_ms"] + 0.5
        targets.append(("c=1 8-token queries: p50 <= bench median + 0.5 ms",
                        q1["p50_ms"] <= limit,
                        f"p50 {q1['p50_ms']:.2f} ms vs bench {base['bench_batch1_seq8_median_ms']:.2f} ms + 0.5 = {limit:.2f} ms"))
    c64 = next((r for r in results if r["workload"] == "corpus" and r["concurrency"] == 64), None)
    if c64:
        ratio = c64["rps"] / base["embed_texts_per_s"]
        targets.append(("c=64 corpus: throughput >= 85% of `e5embed embed --input`", ratio >= 0.85,
                        f"{c64['rps']:.1f} vs {base['embed_texts_per_s']:.1f} texts/s = {ratio:.1%}"))
        targets.append(("c=64 corpus: 0 errors", c64["errors"] == 0, f"{c64['errors']} errors"))
        targets.append(("c=64 corpus: p99 <= 4x p50", c64["p99_ms"] <= 4 * c64["p50_ms"],
                        f"p99 {c64['p99_ms']:.1f} ms = {c64['p99_ms'] / c64['p50_ms']:.2f}x p50 {c64['p50_ms']:.1f} ms"))
    if soak:
        targets.append((f"{a.rss_requests:,} requests: RSS after <= 1.1x RSS after warm-up",
                        soak["rss_after_mb"] <= 1.1 * soak["rss_before_mb"],
                        f"{soak['rss_before_mb']:.1f} -> {soak['rss_after_mb']:.1f} MB "
                        f"({soak['rss_after_mb'] / soak['rss_before_mb']:.3f}x), {soak['errors']} errors, "
                        f"{soak['rps']:.0f} req/s"))
        targets.append((f"{a.rss_requests:,} requests: no file-descriptor growth",
                        soak["fds_after"] <= soak["fds_before"], f"{soak['fds_before']} -> {soak['fds_after']} fds"))
    targets.append(("SIGTERM: exit 0", exit_code == 0, f"exit {exit_code}"))
    lines += ["", f"Baselines: `e5embed bench --batch 1 --seq 8` median {base['bench_batch1_seq8_median_ms']:.3f} ms; "
              f"`e5embed embed --input` ({base['embed_texts']:,} corpus texts, {base['embed_tokens']:,} tokens) "
              f"{base['embed_texts_per_s']:.1f} texts/s. Server RSS after warm-up {rss_start:.1f} MB.", ""]
    lines += ["| target | met | measured |", "| --- | --- | --- |"]
    lines += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in targets]
    report = "\n".join(lines)
    print(report)
    out = {"title": title, "started": started.isoformat(), "finished": finished.isoformat(), "cpu": cpu,
           "commit": commit, "dirty": bool(dirty), "platform": platform.platform(), "model": str(a.model),
           "precision": a.precision, "threads": a.threads, "baselines": base, "corpus": corpus_summary,
           "rss_after_warmup_mb": rss_start, "results": results, "soak": soak, "paired_c1": paired,
           "targets": [{"target": t, "met": ok, "measured": m} for t, ok, m in targets],
           "server_exit": exit_code, "report_markdown": report}
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    if a.png and results:
        plot(results, a.png, title)
        log(f"plot: {a.png}")
    bad_errors = (any(r["errors"] for r in results) or (soak and soak["errors"])
                  or any(p["errors"] for p in paired))
    return 1 if (exit_code != 0 or bad_errors) else 0


if __name__ == "__main__":
    sys.exit(main())
