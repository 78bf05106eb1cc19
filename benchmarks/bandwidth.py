#!/usr/bin/env python3
"""This machine's memory read bandwidth with 1 and 2 threads (the decode roofline).

    python benchmarks/bandwidth.py [--gib 1] [--reps 7] [--threads 1 2]

Compiles bandwidth.cpp (g++ -O3 -march=native -fopenmp) into a temporary directory and runs
it; prints GB/s (median and best of reps). `measure()` returns {threads: median GB/s}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(threads=(1, 2), gib: float = 1.0, reps: int = 7) -> dict[int, dict[str, float]]:
    with tempfile.TemporaryDirectory() as d:
        exe = os.path.join(d, "bandwidth")
        subprocess.run(["g++", "-O3", "-march=native", "-fopenmp", os.path.join(HERE, "bandwidth.cpp"),
                        "-o", exe], check=True)
        out = subprocess.run([exe, str(gib), str(reps), *map(str, threads)], check=True,
                             capture_output=True, text=True).stdout
    res = {}
    for line in out.split("\n"):
        if line.strip():
            t, med, best, _ = line.split()
            res[int(t)] = {"median_gbs": float(med), "best_gbs": float(best)}
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    for t, r in measure(a.threads, a.gib, a.reps).items():
        print(f"threads={t}: read bandwidth {r['median_gbs']:.2f} GB/s median, {r['best_gbs']:.2f} best")
