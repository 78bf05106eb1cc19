#!/usr/bin/env python3
"""Interleaved A/B benchmark of several .gcpp files (this machine's bandwidth is noisy, so each
round runs every model once and we quote medians over rounds), plus decode's achieved fraction
of the measured read bandwidth.

    python benchmarks/compare.py M.bf16.gcpp M.int8.gcpp M.int4.gcpp --rounds 3 \
        [-p 128 512] [-n 128] [-t 1 2]

Roofline: decode reads every weight byte once per token (the .gcpp file is ~all weights; the
tied embedding is read as the output layer), so tg_roofline = bandwidth / file_bytes and
fraction = tg * file_bytes / bandwidth (bandwidth measured with the same thread count).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bandwidth import measure  # noqa: E402
from gemma_cpp.bench import run_bench  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, nargs="+", default=[128, 512])
    ap.add_argument("-n", "--n-gen", type=int, nargs="+", default=[128])
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    samples: dict[tuple, list[float]] = {}
    info: dict[tuple, dict] = {}
    bw: dict[int, list[float]] = {t: [] for t in a.threads}
    for rnd in range(a.rounds):
        for t, r in measure(a.threads, gib=1.0, reps=5).items():
            bw[t].append(r["median_gbs"])
        for path in a.models:
            for r in run_bench(path, a.n_prompt, a.n_gen, a.threads, reps=1):
                key = (path, r["threads"], r["test"])
                samples.setdefault(key, []).extend(r["samples"])
                info[key] = r
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    bwm = {t: statistics.median(v) for t, v in bw.items()}
    print("read bandwidth (median GB/s): " + ", ".join(f"{t} thr: {v:.2f}" for t, v in bwm.items()))
    print("| model | size GB | threads | test | t/s median (min-max) | % of bw roofline | load s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for key, v in samples.items():
        path, t, test = key
        r = info[key]
        med = statistics.median(v)
        frac = ""
        if test.startswith("tg"):
            frac = f"{100 * med * os.path.getsize(path) / 1e9 / bwm[t]:.0f}%"
        print(f"| {os.path.basename(path)} | {r['size_gb']:.2f} | {t} | {test} | {med:.2f} ({min(v):.2f}-{max(v):.2f}) "
              f"| {frac} | {r['load_s']:.2f} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
