"""Run one fuzz target (targets.py) for a bounded time.

    python tests/fuzz/run.py TARGET CORPUS_DIR --seconds 60 [--artifacts DIR] [--plain]

With atheris installed (PyPI: `pip install atheris`), libFuzzer drives the target with Python
coverage feedback of the gemma_cpp package, growing CORPUS_DIR; a crash, a per-input timeout
(10 s: a hang) or more than 3 GB RSS (a memory blow-up) stops it, writes the input to
ARTIFACTS/crash-* (or timeout-*, oom-*) and exits non-zero. Without atheris (or with --plain), a
seeded mutation loop runs instead: byte flips, interesting integers, splices and truncations
of the corpus files, deterministic for a given --seed. Either way the exit status is 0 only
when nothing was found. A finding becomes a regression test: copy the input to
tests/fuzz/regressions/TARGET/ (tests/test_fuzz.py runs every file there).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import struct
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 31, 1 << 32, 1 << 62,
                (1 << 63) - 1, (1 << 64) - 1, 64, 4096]


def mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """One to four random edits of `data` (the plain fuzzer's mutator)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if not b:
            b = bytearray(rng.choice(corpus))
        i = rng.randrange(len(b))
        if op == 0:  # flip a bit
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # an interesting integer, 1/2/4/8 bytes wide
            n = rng.choice((1, 2, 4, 8))
            v = rng.choice(_INTERESTING) & ((1 << (8 * n)) - 1)
            b[i:i + n] = v.to_bytes(n, "little")
        elif op == 2:  # a random byte run
            b[i:i + rng.randint(1, 16)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3:  # truncate
            del b[i:]
        elif op == 4:  # splice another corpus file's tail
            other = rng.choice(corpus)
            j = rng.randrange(len(other)) if other else 0
            b[i:] = other[j:j + rng.randint(1, 4096)]
        else:  # a digit or JSON token swapped in (headers and configs are JSON)
            tok = rng.choice([b"0", b"-1", b"1e308", b"NaN", b"-Infinity", b"[]", b"{}", b'""', b"null",
                              b"9" * 30, b"[" * 64, b"true"])
            b[i:i + rng.randint(0, 3)] = tok
    return bytes(b)


class _Timeout(Exception):
    pass


def plain(target, corpus_dir: str, seconds: float, artifacts: str, seed: int) -> int:
    corpus = [open(os.path.join(corpus_dir, f), "rb").read() for f in sorted(os.listdir(corpus_dir))]
    if not corpus:
        sys.exit(f"{corpus_dir}: empty corpus; write seeds with tests/fuzz/seeds.py")
    rng = random.Random(seed)
    deadline, n = time.monotonic() + seconds, 0

    def alarm(*_):
        raise _Timeout

    signal.signal(signal.SIGALRM, alarm)
    while time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), corpus, rng)
        n += 1
        signal.alarm(10)
        try:
            target(data)
        except _Timeout:
            return _found(artifacts, "timeout", data, f"input {n} ran longer than 10 s")
        except Exception:  # noqa: BLE001
            return _found(artifacts, "crash", data, traceback.format_exc())
        finally:
            signal.alarm(0)
    print(f"plain fuzzer: {n} inputs in {seconds:.0f} s (seed {seed}), nothing found")
    return 0


def _found(artifacts: str, kind: str, data: bytes, why: str) -> int:
    os.makedirs(artifacts, exist_ok=True)
    path = os.path.join(artifacts, f"{kind}-{len(os.listdir(artifacts))}")
    with open(path, "wb") as f:
        f.write(data)
    print(f"FOUND ({kind}), input written to {path}:\n{why}", file=sys.stderr)
    return 1


def with_atheris(name: str, corpus_dir: str, seconds: float, artifacts: str) -> int:
    import atheris

    with atheris.instrument_imports(include=["gemma_cpp"]):
        import targets
        import gemma_cpp.convert.config  # noqa: F401  (instrumented before the targets import them)
        import gemma_cpp.convert.gguf_file  # noqa: F401
        import gemma_cpp.convert.gguf_reader  # noqa: F401
        import gemma_cpp.convert.hf  # noqa: F401
        import gemma_cpp.convert.safetensors_reader  # noqa: F401
        import gemma_cpp.convert.sp_builder  # noqa: F401
        import gemma_cpp.gcpp_format  # noqa: F401
        import gemma_cpp.model  # noqa: F401
    os.makedirs(artifacts, exist_ok=True)
    atheris.Setup([sys.argv[0], corpus_dir, f"-max_total_time={int(seconds)}", "-timeout=10",
                   "-rss_limit_mb=3072", "-print_final_stats=1", f"-artifact_prefix={artifacts.rstrip('/')}/"],
                  targets.TARGETS[name])
    atheris.Fuzz()  # exits the process: 0 when the time ran out with nothing found
    return 0


def main() -> int:
    import targets

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", choices=sorted(targets.TARGETS))
    ap.add_argument("corpus", help="directory of seed inputs (tests/fuzz/seeds.py); atheris adds to it")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--artifacts", default="fuzz-artifacts", help="where findings are written")
    ap.add_argument("--plain", action="store_true", help="the seeded mutation loop even if atheris is installed")
    ap.add_argument("--seed", type=int, default=0, help="the plain fuzzer's random seed")
    a = ap.parse_args()
    try:
        import atheris  # noqa: F401
        have = not a.plain
    except ImportError:
        have = False
        print("atheris is not installed (pip install atheris): running the plain mutation fuzzer", file=sys.stderr)
    if have:
        return with_atheris(a.target, a.corpus, a.seconds, a.artifacts)
    return plain(targets.TARGETS[a.target], a.corpus, a.seconds, a.artifacts, a.seed)


if __name__ == "__main__":
    sys.exit(main())
