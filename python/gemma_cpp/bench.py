"""llama-bench-style throughput measurement.

    from gemma_cpp.bench import run_bench, format_table
    print(format_table(run_bench("model.int4.gcpp")))

pp<N>: prompt processing, one prefill of N random tokens from an empty cache (tokens/s).
tg<N>: text generation, N greedy decode steps after a one-token prompt (tokens/s).
With speculation (speculative="ngram" or draft=PATH): tg<N> and tg<N>+ngram / tg<N>+draft, both
continuing SUMMARY_PROMPT (at `temperature`), their repetitions alternated, the second with its
acceptance rate (accepted / drafted tokens).
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

# A summarisation-style prompt (text the answer can copy from): where prompt lookup pays.
SUMMARY_PROMPT = (
    "The city council met on Tuesday evening to discuss the new public library. The library will be built "
    "on the site of the old train station, next to the river, and it will open in the spring of next year. "
    "The building will have three floors: the ground floor for children's books and a cafe, the first floor "
    "for fiction and a quiet reading room, and the second floor for computers, study rooms and a small "
    "theatre. The council said that the library will cost twelve million euros, of which the national "
    "government will pay half. Opening hours will be from eight in the morning to ten in the evening, seven "
    "days a week. Members of the public can suggest names for the library until the end of the month, and "
    "the council will choose the name in a vote in June.\n\n"
    "Summary of the article above, in the article's own words:\nThe city council met on Tuesday evening to")


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
              progress: Callable[[dict], None] | None = None, kv_dtype: str = DEFAULT_KV_DTYPE,
              speculative: str | None = None, draft: str | None = None, draft_len: int | None = None,
              ngram_min: int | None = None, ngram_max: int | None = None, temperature: float = 0.0,
              device: str = "cpu") -> list[dict]:
    """One dict per (threads, test): model, dtype, size_gb, n_params, isa, threads, test, n,
    tps_mean, tps_sd, samples (tokens/s of each rep), load_s, peak_rss_mb, kv_dtype, kv_bytes_per_token
    (and with speculation: acceptance, drafted, accepted). `progress(result)` is called as each
    one is measured."""
    from . import _core
    from .model import Model

    results = []
    size_gb = os.path.getsize(model_path) / 1e9
    for nt in threads:
        peak_ok = _reset_peak_rss()
        t0 = time.perf_counter()
        speculating = speculative is not None or draft is not None
        m = Model(model_path, n_threads=nt, kv_dtype=kv_dtype, device=device,  # speculation: room for SUMMARY_PROMPT
                  max_seq_len=None if speculating else max([*n_prompt, *(g + 1 for g in n_gen), 1]))
        load_s = time.perf_counter() - t0
        cfg = m.config
        rng = np.random.default_rng(seed)
        s = m._session
        base = dict(model=os.path.basename(model_path), dtype=cfg.weight_dtype, size_gb=round(size_gb, 3),
                    isa=_core.active_isa() if device == "cpu" else m.device, threads=nt, load_s=round(load_s, 3), kv_dtype=m.kv_dtype,
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
        spec = None
        if speculating:
            tests = [t for t in tests if not t[0].startswith("tg")]
            spec = dict(speculative=speculative, draft_len=draft_len, ngram_min=ngram_min, ngram_max=ngram_max,
                        draft_model=Model(draft, n_threads=nt, kv_dtype=kv_dtype, device=device) if draft else None)
        for name, n, fn in tests:
            tps = timed(fn, n)
            results.append(dict(base, test=name, n=n, tps_mean=statistics.fmean(tps),
                                tps_sd=statistics.stdev(tps) if len(tps) > 1 else 0.0, samples=tps))
            if progress is not None:
                progress(results[-1])
        if spec is not None:
            for r in speculative_tg(m, n_gen, reps, spec, temperature, seed):
                results.append(dict(base, **r))
                if progress is not None:
                    progress(results[-1])
        peak = _rss_mb("VmHWM") if peak_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        for r in results:
            if r["threads"] == nt:
                r["peak_rss_mb"] = round(peak, 1) if peak is not None else None
        del m, s
    return results


def speculative_tg(m, n_gen: Sequence[int], reps: int, spec: dict, temperature: float = 0.0,
                   seed: int = 0) -> list[dict]:
    """tg<n> plain and speculative, continuing SUMMARY_PROMPT, repetitions alternated (A B A B)."""
    prompt = m.tokenize(SUMMARY_PROMPT)
    label = "draft" if spec.get("draft_model") is not None else spec["speculative"]
    out = []
    for n in n_gen:
        room = m.max_seq_len - n
        if room < 2:
            raise ValueError(f"tg{n} does not fit the context of {m.max_seq_len} tokens")
        if len(prompt) > room:  # a small context: the prompt's end
            prompt = prompt[:1] + prompt[len(prompt) - room + 1:]
        runs = {"plain": [], label: []}
        counts = [0, 0]

        def once(kind):
            kw = {} if kind == "plain" else spec
            g = m.generate(prompt, max_new_tokens=n, ignore_eos=True, temperature=temperature, seed=seed,
                           stream=True, **kw)
            t = time.perf_counter()
            got = sum(1 for _ in g)
            dt = time.perf_counter() - t
            if g.speculation is not None:
                counts[0] += g.speculation.drafted
                counts[1] += g.speculation.accepted
            return got / dt

        once("plain")  # warm-up: pages the weights in, caches the prompt (in both models)
        once(label)
        counts[:] = [0, 0]
        for _ in range(reps):
            for kind in runs:
                runs[kind].append(once(kind))
        for kind, tps in runs.items():
            r = dict(test=f"tg{n}" if kind == "plain" else f"tg{n}+{label}", n=n, tps_mean=statistics.fmean(tps),
                     tps_sd=statistics.stdev(tps) if len(tps) > 1 else 0.0, samples=tps, temperature=temperature)
            if kind != "plain":
                r.update(drafted=counts[0], accepted=counts[1],
                         acceptance=counts[1] / counts[0] if counts[0] else None)
            out.append(r)
    return out


def format_table(results: Sequence[dict]) -> str:
    """Markdown table, one row per result, like llama-bench."""
    head = "| model | size | dtype | isa | threads | test | t/s | load s | peak RSS MiB | KV KiB/token |"
    rows = [head, "|" + "---|" * 10]
    for r in results:
        test = r["test"] + (f" ({100 * r['acceptance']:.0f}% accepted)" if r.get("acceptance") is not None else "")
        rows.append(f"| {r['model']} | {r['size_gb']:.2f} GB | {r['dtype']} | {r['isa']} | {r['threads']} | "
                    f"{test} | {r['tps_mean']:.2f} ± {r['tps_sd']:.2f} | {r['load_s']:.2f} | "
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
