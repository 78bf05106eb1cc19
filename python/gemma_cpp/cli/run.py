"""`gemma-cpp run [MODEL] PROMPT`: generate a continuation (or, with --chat, an answer), streamed."""

from __future__ import annotations

import json
import sys
from typing import Any

from .common import PROG, Out, chat_prompt_ids, gen_kwargs, max_new, spec_kwargs
from .models import default_model, is_model_path, open_draft, open_model
from .options import add_constraints, add_runtime, add_sampling, add_speculative, check_speculative


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="generate text from a prompt", usage=f"{PROG} run [options] [MODEL] PROMPT",
                       description="Generate a continuation of PROMPT (or, with --chat, an answer to it), "
                                   "streamed to stdout. MODEL is a .gcpp file (or a .gguf, converted once "
                                   "into ~/.cache/gemma_cpp); without it the default Gemma 3 270M model is used. "
                                   "PROMPT '-' reads stdin.")
    p.add_argument("positionals", nargs="+", metavar="[MODEL] PROMPT")
    p.add_argument("--chat", action="store_true", help="wrap PROMPT in the model's chat template")
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS / <end_of_turn>")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (text, token counts, tokens/s, finish_reason) instead of streaming")
    p.add_argument("-v", "--verbose", action="store_true", help="print token counts and speed to stderr")
    add_sampling(p)
    add_constraints(p)
    add_speculative(p)
    add_runtime(p)
    p.set_defaults(func=main)


def main(args, parser) -> int:
    from ..generation import Generation

    pos = args.positionals
    if len(pos) > 2:
        parser.error(f"expected [MODEL] PROMPT, got {len(pos)} arguments (quote the prompt)")
    if len(pos) == 2:
        model_path, prompt = pos
    elif is_model_path(pos[0]):
        parser.error(f"missing PROMPT after MODEL {pos[0]}")
    else:
        model_path, prompt = None, pos[0]
    if args.system and not args.chat:
        parser.error("--system needs --chat")
    check_speculative(args, parser)
    if prompt == "-":
        prompt = sys.stdin.read()
    if model_path is None:
        model_path = default_model()
    model = open_model(model_path, args)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + \
            [{"role": "user", "content": prompt}]
        ids = chat_prompt_ids(model, messages)
    else:
        ids = model.tokenize(prompt, add_bos=True)
    if not ids:
        parser.error("empty prompt")
    n = max_new(model, len(ids), args.max_new_tokens)
    gen = Generation(model, ids, max_tokens=n, seed=args.seed, stop=args.stop, ignore_eos=args.ignore_eos,
                     **gen_kwargs(args), **spec_kwargs(args, open_draft(args, model)))
    out = Out()
    try:
        if args.json:
            gen.run()
        else:
            for piece in gen:
                out.write(piece)
    finally:
        gen.close()
    stats = _stats(gen)
    if gen.speculation is not None:
        sp = gen.speculation
        stats["speculation"] = {"mode": sp.mode, "draft_len": sp.draft_len, "drafted": sp.drafted,
                                "accepted": sp.accepted, "acceptance_rate": sp.acceptance_rate}
    if args.json:
        print(json.dumps({"model": model.path, "text": gen.text, **stats}, ensure_ascii=False))
    else:
        out.end_line()
        if args.verbose:
            _print_stats(stats)
    return 0


def _stats(gen) -> dict[str, Any]:
    pre, dec = gen.prefill_seconds, gen.decode_seconds
    n = gen.completion_tokens
    return {
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": n,
        "finish_reason": gen.finish_reason,
        "prefill_seconds": pre,
        "decode_seconds": dec,
        # The first token comes out of the prefill; the decode rate counts the tokens after it.
        "prefill_tokens_per_s": gen.prompt_tokens / pre if pre else None,
        "decode_tokens_per_s": (n - 1) / dec if dec and n > 1 else None,
    }


def _print_stats(s: dict) -> None:
    def rate(v):
        return "n/a" if v is None else f"{v:.1f} tok/s"

    print(f"prompt: {s['prompt_tokens']} tokens, {rate(s['prefill_tokens_per_s'])}; "
          f"generated: {s['completion_tokens']} tokens, {rate(s['decode_tokens_per_s'])}; "
          f"finish: {s['finish_reason']}", file=sys.stderr)
    sp = s.get("speculation")
    if sp:
        rate = "n/a" if sp["acceptance_rate"] is None else f"{100 * sp['acceptance_rate']:.0f}%"
        print(f"speculation ({sp['mode']}, draft_len {sp['draft_len']}): {sp['accepted']} of {sp['drafted']} "
              f"drafted tokens accepted ({rate})", file=sys.stderr)
