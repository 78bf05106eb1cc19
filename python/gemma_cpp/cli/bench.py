"""`gemma-cpp bench [MODEL]`: prompt-processing (pp) and generation (tg) tokens/s, like llama-bench
(the timing itself is gemma_cpp/bench.py)."""

from __future__ import annotations

import json
import sys

from .common import PROG
from .models import default_model, resolve_model
from .options import add_device, add_kv_dtype, add_model, add_speculative, check_speculative, int_list, param, positive, positive_list


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="prompt-processing and generation speed, like llama-bench",
                       description="Measure prompt processing (pp) and token generation (tg) speed in tokens/s. "
                                   "Each result is printed to stderr as soon as it is measured.")
    add_model(p)
    p.add_argument("-p", "--n-prompt", type=int_list, default=(128, 512), help="prompt lengths (default 128,512)")
    p.add_argument("-n", "--n-gen", type=int_list, default=(128,), help="generation lengths (default 128)")
    p.add_argument("-t", "--threads", type=positive_list, default=(1, 2), help="thread counts (default 1,2)")
    p.add_argument("-r", "--reps", type=positive, default=3, help="repetitions (default 3)")
    add_kv_dtype(p)
    add_device(p)
    add_speculative(p)
    p.add_argument("--temperature", "--temp", type=param("temperature"), default=0.0,
                   help="with speculation: sample the tg tests at this temperature (default 0: greedy)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=main)


def main(args, parser) -> int:
    from ..bench import format_table, run_bench
    from ..gcpp_format import read_header

    check_speculative(args, parser)
    path = resolve_model(args.model or default_model())
    read_header(path)  # a clear error for a bad file before any timing starts
    draft = None
    if args.draft is not None:
        draft = resolve_model(args.draft)
        read_header(draft)

    def progress(r: dict) -> None:  # each cell as it finishes: a full run takes tens of seconds
        acc = f" ({100 * r['acceptance']:.0f}% of drafted tokens accepted)" if r.get("acceptance") is not None else ""
        print(f"{PROG} bench: {r['test']} on {r['threads']} thread{'s' if r['threads'] > 1 else ''}: "
              f"{r['tps_mean']:.2f} ± {r['tps_sd']:.2f} tokens/s{acc}", file=sys.stderr, flush=True)

    results = run_bench(path, n_prompt=args.n_prompt, n_gen=args.n_gen, threads=args.threads, reps=args.reps,
                        progress=progress, kv_dtype=args.kv_dtype, speculative=args.speculative, draft=draft,
                        draft_len=args.draft_len, ngram_min=args.ngram_min, ngram_max=args.ngram_max,
                        temperature=args.temperature, device=args.device)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 0
