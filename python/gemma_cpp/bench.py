"""llama-bench-style throughput measurement.

    from gemma_cpp.bench import run_bench, format_table
    print(format_table(run_bench("model.int4.gcpp")))

pp<N>: prompt processing, one prefill of N random tokens from an empty cache (tokens/s).
tg<N>: text generation, N greedy decode steps after a one-token prompt (tokens/s).
Each test runs once untimed (pages the weights in), then `reps` timed times; mean ± sd.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from typing import Callable, Sequence

import numpy as np

from .params import DEFAULT_KV_DTYPE


def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets VmHWM (the peak) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_bench(model_path: str, n_prompt: Sequence[int] = (128, 512), n_gen: Sequence[int] = (128,),
              threads: Sequence[int] = (1, 2), reps: int = 3, seed: int = 0,
              progress: Callable[[dict], None] | None = None, kv_dtype: str = DEFAULT_KV_DTYPE) -> list[dict]:
    """One dict per (threads, test): model, dtype, size_gb, n_params, isa, threads, test, n,
    tps_mean, tps_sd, samples (tokens/s of each rep), load_s, peak_rss_mb, kv_dtype, kv_bytes_per_token.
    `progress(result)` is called as each one is measured."""
    from . import _core
    from .model import Model

    results = []
    size_gb = os.path.getsize(model_path) / 1e9
    for nt in threads:
        peak_ok = _reset_peak_rss()
        t0 = time.perf_counter()
        m = Model(model_path, n_threads=nt, max_seq_len=max([*n_prompt, *(g + 1 for g in n_gen), 1]),
                  kv_dtype=kv_dtype)
        load_s = time.perf_counter() - t0
        cfg = m.config
        rng = np.random.default_rng(seed)
        s = m._session
        base = dict(model=os.path.basename(model_path), dtype=cfg.weight_dtype, size_gb=round(size_gb, 3),
                    isa=_core.active_isa(), threads=nt, load_s=round(load_s, 3), kv_dtype=m.kv_dtype,
                    kv_bytes_per_token=m.kv_bytes_per_token)

        def timed(fn, n):
            fn()  # warm-up: pages weights in, grows scratch buffers
            out = []
            for _ in range(reps):
                t = time.perf_counter()
                fn()
                out.append(n / (time.perf_counter() - t))
            return out

        tests = []
        for n in n_prompt:
            ids = [int(i) for i in rng.integers(4, cfg.vocab_size, n)]

            def pp(ids=ids):
                s.reset()
                s.eval(ids)
            tests.append((f"pp{n}", n, pp))
        for n in n_gen:
            def tg(n=n):
                m.generate([2], max_new_tokens=n, ignore_eos=True)
            tests.append((f"tg{n}", n, tg))
        for name, n, fn in tests:
            tps = timed(fn, n)
            results.append(dict(base, test=name, n=n, tps_mean=statistics.fmean(tps),
                                tps_sd=statistics.stdev(tps) if len(tps) > 1 else 0.0, samples=tps))
            if progress is not None:
                progress(results[-1])
        peak = _rss_mb("VmHWM") if peak_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        for r in results:
            if r["threads"] == nt:
                r["peak_rss_mb"] = round(peak, 1) if peak is not None else None
        del m, s
    return results


def format_table(results: Sequence[dict]) -> str:
    """Markdown table, one row per result, like llama-bench."""
    head = "| model | size | dtype | isa | threads | test | t/s | load s | peak RSS MiB | KV KiB/token |"
    rows = [head, "|" + "---|" * 10]
    for r in results:
        rows.append(f"| {r['model']} | {r['size_gb']:.2f} GB | {r['dtype']} | {r['isa']} | {r['threads']} | "
                    f"{r['test']} | {r['tps_mean']:.2f} ± {r['tps_sd']:.2f} | {r['load_s']:.2f} | "
                    f"{r.get('peak_rss_mb') or 0:.0f} | {r.get('kv_bytes_per_token', 0) / 1024:.1f} ({r.get('kv_dtype')}) |")
    return "\n".join(rows)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="llama-bench style throughput of a .gcpp model")
    ap.add_argument("model", nargs="+")
    ap.add_argument("-p", "--n-prompt", type=int, nargs="+", default=[128, 512])
    ap.add_argument("-n", "--n-gen", type=int, nargs="+", default=[128])
    ap.add_argument("-t", "--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("-r", "--reps", type=int, default=3)
    a = ap.parse_args()
    res = []
    for path in a.model:
        res += run_bench(path, a.n_prompt, a.n_gen, a.threads, a.reps)
    print(format_table(res))
