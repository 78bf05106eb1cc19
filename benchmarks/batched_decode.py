#!/usr/bin/env python3
"""Aggregate decode throughput of batched generation: B sequences advancing together, one
batched forward pass per step (gemma_cpp/batching.py, decode/batch_decoder.h).

    python benchmarks/batched_decode.py                       # the demo model (real Gemma 3 270M)
    python benchmarks/batched_decode.py MODEL.gcpp -b 1 2 4 8 -n 32 -t 2 -r 3 [--json]

Each sequence gets its own prompt (-p tokens, different ids) and is prefilled first (not timed);
then -n decode steps are timed, each what the Batcher runs per step: one
BatchDecoder.forward_pending over the B sequences, then each one's next(1) (logits processing and
sampling, greedy). Aggregate tokens/s = B * n / seconds. The batch sizes are measured in rounds
(B=1, 2, 4, 8, then again), so a slow stretch of a shared machine hits them all alike; the
median of the rounds is reported, with its ratio to B=1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

import numpy as np  # noqa: E402

from gemma_cpp import Model, _core  # noqa: E402
from gemma_cpp.generation import sampling_params  # noqa: E402


def prompts(model: Model, n: int, count: int) -> list[list[int]]:
    rng = np.random.default_rng(0)
    hi = min(model.config.vocab_size, 20000)
    return [[2] + [int(t) for t in rng.integers(100, hi, n - 1)] for _ in range(count)]


def run(model: Model, gens, decoder, ps, n_tokens: int) -> float:
    """Seconds for n_tokens batched steps of len(gens) sequences (prefill not timed)."""
    greedy = sampling_params()
    for g, p in zip(gens, ps):
        g.start(p, greedy, n_tokens + 1, [], 0)
        g.next(1)  # the first token comes from the prefill's logits
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        decoder.forward_pending(gens)
        for g in gens:
            g.next(1)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help=".gcpp file (default: the demo model, the real Gemma 3 270M)")
    ap.add_argument("-b", "--batch", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes")
    ap.add_argument("-p", "--prompt", type=int, default=16, help="prompt tokens per sequence")
    ap.add_argument("-n", "--tokens", type=int, default=32, help="timed decode steps")
    ap.add_argument("-t", "--threads", type=int, default=None, help="threads (default: all cores)")
    ap.add_argument("-r", "--rounds", type=int, default=3, help="rounds over the batch sizes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    path = args.model
    if path is None:
        from gemma_cpp.demo import default_model_path
        path = default_model_path()
    threads = args.threads or _core.default_threads()
    m = Model(path, n_threads=threads, max_seq_len=args.prompt + args.tokens + 8)
    top = max(args.batch)
    gens = [_core.Generator(m._core, m.max_seq_len, threads, 0, m.kv_dtype) for _ in range(top)]
    decoder = _core.BatchDecoder(m._core, top, threads)
    ps = prompts(m, args.prompt, top)
    secs: dict[int, list[float]] = {b: [] for b in args.batch}
    run(m, gens[:1], decoder, ps, 2)  # warm up: page the weights in
    for _ in range(args.rounds):
        for b in args.batch:
            secs[b].append(run(m, gens[:b], decoder, ps[:b], args.tokens))
    rows = []
    for b in args.batch:
        med = statistics.median(secs[b])
        rows.append({"batch": b, "seconds": med, "tokens_per_s": b * args.tokens / med})
    base = next((r["tokens_per_s"] for r in rows if r["batch"] == 1), None)
    for r in rows:
        r["vs_b1"] = r["tokens_per_s"] / base if base else None
    info = {"model": os.path.basename(path), "weights": m.config.weight_dtype, "isa": m.config.isa,
            "threads": threads, "prompt": args.prompt, "tokens": args.tokens, "rounds": args.rounds, "rows": rows}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['model']} ({info['weights']}), {info['isa']}, {threads} threads, prompt {args.prompt}, "
          f"{args.tokens} steps, median of {args.rounds} rounds")
    print("| B | aggregate tok/s | per sequence tok/s | vs B=1 |")
    print("| ---: | ---: | ---: | ---: |")
    for r in rows:
        vs = f"{r['vs_b1']:.2f}x" if r["vs_b1"] else "-"
        print(f"| {r['batch']} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / r['batch']:.1f} | {vs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
