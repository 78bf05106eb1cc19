#!/usr/bin/env python3
"""Constrained vs unconstrained decode speed on one model, alternated in one process.

    python benchmarks/structured_decode.py [MODEL] [--rounds 5] [-n 96] [-t 2]

Each round runs the same greedy generation of -n tokens twice, A (no constraint) then B (a JSON
schema whose output is long: an array of at least 50 objects), swapping the order every round.
Prints each side's median decode tokens/s (tokens after the first, over the time after the
first), the ratio B / A, and the mean time llguidance took per token to consume the token and
compute the next mask (timed inside GrammarMask). MODEL defaults to the demo model (Gemma 3 270M).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SCHEMA = {"type": "array", "minItems": 50, "items": {
    "type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"},
                                     "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "city", "age"], "additionalProperties": False}}
PROMPT = "A list of people with their name, city and age, as JSON:"


def main() -> int:
    from gemma_cpp import Model, _core, structured

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", "--n-gen", type=int, default=96)
    ap.add_argument("-t", "--threads", type=int, default=None)
    args = ap.parse_args()
    if args.model is None:
        from gemma_cpp.demo import default_model_path

        args.model = default_model_path()
    m = Model(args.model, n_threads=args.threads, max_seq_len=512)
    structured.lltokenizer(m.tokenizer, m.config.vocab_size)  # built once, outside the timings

    mask_s = [0.0, 0]
    orig = structured.GrammarMask.__call__

    def timed(self, ids):
        t0 = time.perf_counter()
        try:
            return orig(self, ids)
        finally:
            mask_s[0] += time.perf_counter() - t0
            mask_s[1] += 1

    structured.GrammarMask.__call__ = timed

    def run(constrained: bool) -> float:
        kw = {"json_schema": SCHEMA} if constrained else {}
        g = m.generate(PROMPT, max_new_tokens=args.n_gen, ignore_eos=True, stream=True, **kw)
        g.run()
        assert g.completion_tokens == args.n_gen, (g.completion_tokens, g.stop_reason)
        return (g.completion_tokens - 1) / g.decode_seconds

    run(False), run(True)  # warm-up
    mask_s[:] = [0.0, 0]
    a, b = [], []
    for r in range(args.rounds):
        for side in ((False, True) if r % 2 == 0 else (True, False)):
            (b if side else a).append(run(side))
    ma, mb = statistics.median(a), statistics.median(b)
    print(json.dumps({"model": args.model, "isa": _core.active_isa(), "threads": m.n_threads, "n_gen": args.n_gen,
                      "rounds": args.rounds, "unconstrained_tps": round(ma, 2), "constrained_tps": round(mb, 2),
                      "ratio": round(mb / ma, 3), "mask_ms_per_token": round(1e3 * mask_s[0] / max(1, mask_s[1]), 3),
                      "unconstrained_all": [round(x, 2) for x in a], "constrained_all": [round(x, 2) for x in b]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
