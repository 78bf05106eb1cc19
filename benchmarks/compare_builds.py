#!/usr/bin/env python3
"""Two builds of gemma_cpp on the same models, alternated (A B, B A, ...): is B slower than A?

    python benchmarks/compare_builds.py --a /tmp/build_a --b python MODEL.gcpp [MODEL2.gcpp ...] \
        [--rounds 3] [-p 512] [-n 64] [-t 1 2]

--a / --b are directories holding a `gemma_cpp` package (e.g. a copy of python/ from an older
commit after ./dev-build.sh, and python/ itself). Each measurement is one
`python -m gemma_cpp.bench` process with that directory first on PYTHONPATH, so the two builds
never share a process. Prints median tokens/s per build and the ratio B / A per model, test
and thread count (a refactor should keep every ratio near 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def bench(pkg_dir: str, model: str, n_prompt: int, n_gen: int, threads: int) -> dict[str, float]:
    """{'ppN': t/s, 'tgN': t/s} of one bench process on build `pkg_dir`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.abspath(pkg_dir), os.environ.get("PYTHONPATH", "")]))
    code = ("import json, sys; from gemma_cpp.bench import run_bench; "
            f"r = run_bench({model!r}, n_prompt=({n_prompt},), n_gen=({n_gen},), threads=({threads},), reps=1); "
            "print(json.dumps({x['test']: x['tps_mean'] for x in r}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--a", required=True, help="directory with the baseline gemma_cpp package")
    ap.add_argument("--b", required=True, help="directory with the gemma_cpp package under test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    samples: dict[tuple, list[float]] = {}
    for rnd in range(a.rounds):
        for model in a.models:
            for t in a.threads:
                order = (("A", a.a), ("B", a.b)) if rnd % 2 == 0 else (("B", a.b), ("A", a.a))
                for name, pkg in order:
                    for test, v in bench(pkg, model, a.n_prompt, a.n_gen, t).items():
                        samples.setdefault((os.path.basename(model), test, t, name), []).append(v)
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    print(f"| model | test | threads | A t/s (median of {a.rounds}) | B t/s | B / A |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (model, test, t, name) in sorted(k for k in samples if k[3] == "A"):
        ma = statistics.median(samples[(model, test, t, "A")])
        mb = statistics.median(samples[(model, test, t, "B")])
        print(f"| {model} | {test} | {t} | {ma:.2f} | {mb:.2f} | {mb / ma:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
