#!/usr/bin/env python3
"""Counts the instructions of the innermost loops of one function in an aarch64
`objdump -d --no-show-raw-insn -C` listing (kernels/PERF.md, "aarch64").

    tools/aarch64-loop-count.py LISTING FUNCTION MNEMONIC [N]

A loop is a backward branch inside FUNCTION (the first symbol whose name starts with
FUNCTION) to an address in it; a loop is innermost when no other backward branch lies
inside it. For the N innermost loops with the most MNEMONIC instructions (default 3) it
prints the total instructions, the vector instructions (any SIMD&FP register operand:
v/q/d/s/h/b registers; branches excluded) and MNEMONIC's share of them, and the mix.
"""
import re
import sys
from collections import Counter

VREG = re.compile(r"\b[vqdshb]\d+\b")
BRANCHES = ("cbz", "cbnz", "tbz", "tbnz", "b", "br", "bl", "blr", "ret")


def is_branch(op):
    return op in BRANCHES or op.startswith("b.")


def main():
    path, func, key = sys.argv[1], sys.argv[2], sys.argv[3]
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    lines = open(path).read().split("\n")
    start = next(
        (i for i, l in enumerate(lines) if l.endswith(">:") and ("<" + func) in l), None
    )
    if start is None:
        sys.exit(f"{func}: not in {path}")
    print(lines[start])
    ins = []
    for l in lines[start + 1:]:
        if l.endswith(">:"):
            break
        m = re.match(r"\s*([0-9a-f]+):\s+(\S+)\s*(.*)", l)
        if m:
            ins.append((int(m.group(1), 16), m.group(2), m.group(3)))
    index = {a: k for k, (a, _, _) in enumerate(ins)}
    loops = []
    for k, (a, op, args) in enumerate(ins):
        t = re.search(r"\b([0-9a-f]+) <", args)
        if is_branch(op) and t and int(t.group(1), 16) <= a and int(t.group(1), 16) in index:
            loops.append((index[int(t.group(1), 16)], k))
    inner = [
        (s, e)
        for s, e in loops
        if not any((s2, e2) != (s, e) and s <= s2 and e2 <= e for s2, e2 in loops)
    ]
    rows = []
    for s, e in inner:
        body = ins[s:e + 1]
        vec = [x for x in body if not is_branch(x[1]) and VREG.search(x[2])]
        hot = [x for x in vec if x[1] == key]
        rows.append((len(hot), body, vec))
    rows.sort(key=lambda r: -r[0])
    for hot, body, vec in rows[:top]:
        mix = Counter(x[1] for x in vec)
        print(
            f"loop {body[0][0]:#x}..{body[-1][0]:#x}: {len(body)} instructions, "
            f"{len(vec)} vector, {hot} {key} = {100 * hot / max(len(vec), 1):.1f}% of vector; "
            f"mix {dict(mix.most_common())}"
        )


if __name__ == "__main__":
    main()
