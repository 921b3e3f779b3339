#!/usr/bin/env python3
"""Prints markdown tables of criterion medians from target/criterion.

    cargo bench --bench peers && python3 benches/report.py

One table per group: rows are sizes (or thread counts), columns are
contenders, cells are median times; the last column of scenario tables is
ZeroPool's ratio to glibc where both exist.
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")


def fmt(ns):
    if ns >= 1e6:
        return "%.2f ms" % (ns / 1e6)
    if ns >= 1e3:
        return "%.2f µs" % (ns / 1e3)
    return "%.1f ns" % ns


def medians(group):
    out = {}
    base = os.path.join(ROOT, group)
    if not os.path.isdir(base):
        return out
    for contender in sorted(os.listdir(base)):
        cdir = os.path.join(base, contender)
        if contender == "report" or not os.path.isdir(cdir):
            continue
        for param in os.listdir(cdir):
            est = os.path.join(cdir, param, "new", "estimates.json")
            if os.path.exists(est):
                with open(est) as f:
                    out[(contender, param)] = json.load(f)["median"]["point_estimate"]
        est = os.path.join(cdir, "new", "estimates.json")
        if os.path.exists(est):
            with open(est) as f:
                out[(contender, "-")] = json.load(f)["median"]["point_estimate"]
    return out


def table(group, per_op_divisor=None):
    m = medians(group)
    if not m:
        return
    contenders = sorted({c for c, _ in m}, key=lambda c: (not c.startswith("zeropool"), c))
    params = sorted({p for _, p in m}, key=lambda p: (len(p), p))
    print("\n#### %s\n" % group)
    print("| param | " + " | ".join(contenders) + " |")
    print("|---" * (len(contenders) + 1) + "|")
    for p in params:
        cells = []
        for c in contenders:
            v = m.get((c, p))
            if v is not None and per_op_divisor:
                v = v / per_op_divisor(p)
            cells.append(fmt(v) if v is not None else "")
        print("| %s | %s |" % (p, " | ".join(cells)))


if __name__ == "__main__":
    groups = sys.argv[1:] or [
        "s1_untouched", "s2_written", "s3_mixed", "s4_producer_consumer", "s5_burst", "s6_threads", "s7_thread_churn",
    ]
    for g in groups:
        table(g)
