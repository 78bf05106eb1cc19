"""`gemma-cpp chat [MODEL]`: interactive multi-turn chat; the conversation stays in the KV cache."""

from __future__ import annotations

import os
import sys

from .common import PROG, Out, chat_prompt_ids, gen_kwargs, max_new
from .models import default_model, open_model
from .options import add_constraints, add_model, add_runtime, add_sampling

_CHAT_HELP = "commands: /reset (forget the conversation), /exit (quit), /help; Ctrl-C stops an answer"


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="interactive multi-turn chat",
                       description="Chat with MODEL using its chat template; the conversation stays in the KV "
                                   "cache, so each turn only processes the new tokens. Commands: /reset, /exit. "
                                   "Ctrl-C stops the current answer. With piped stdin each line is a user "
                                   "turn and stdout holds only the answers, one after another.")
    add_model(p)
    p.add_argument("--system", default=None, help="system prompt (put at the start of the first user turn)")
    add_sampling(p)
    add_constraints(p)
    add_runtime(p)
    p.set_defaults(func=main)


def main(args, parser) -> int:
    from ..generation import Generation

    model = open_model(args.model if args.model else default_model(), args)
    model.warn_if_base_model()  # before the first prompt, not in the middle of the first answer
    interactive = sys.stdin.isatty()
    base = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(base)
    out = Out()
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
        print(f"{PROG} chat: {os.path.basename(model.path)} ({model.config.model_type}, context "
              f"{model.max_seq_len} tokens); {_CHAT_HELP}", file=sys.stderr)
    turn = 0
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            break
        if not interactive and line == "":
            break  # end of input
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd = text.split()[0]
            if cmd in ("/exit", "/quit", "/bye"):
                break
            if cmd == "/reset":
                messages = list(base)
                model.reset()
                if interactive:
                    print("(conversation reset)", file=sys.stderr)
                continue
            if cmd in ("/help", "/?"):
                print(_CHAT_HELP, file=sys.stderr)
                continue
            print(f"unknown command {cmd}; {_CHAT_HELP}", file=sys.stderr)
            continue
        messages.append({"role": "user", "content": text})
        ids = _fit_history(model, messages, base, args.max_new_tokens)
        if ids is None:
            messages.pop()
            continue
        turn += 1
        gen = Generation(model, ids, max_tokens=max_new(model, len(ids), args.max_new_tokens),
                         seed=None if args.seed is None else (args.seed + turn) % (1 << 64),
                         stop=args.stop, **gen_kwargs(args))
        try:
            for piece in gen:
                out.write(piece)
        except KeyboardInterrupt:
            out.end_line()
            print("(answer stopped)", file=sys.stderr)
        finally:
            gen.close()
        out.end_line()
        messages.append({"role": "assistant", "content": gen.text})
    return 0


def _fit_history(model, messages: list, base: list, max_new_tokens: int | None) -> list[int] | None:
    """Prompt ids for `messages`, dropping the oldest exchanges until they fit the context."""
    reserve = min(max_new_tokens or 256, model.max_seq_len // 4)
    trimmed = False
    while True:
        ids = chat_prompt_ids(model, messages)
        if len(ids) + reserve <= model.max_seq_len:
            break
        if len(messages) - len(base) <= 1:  # only the new message is left
            if len(ids) < model.max_seq_len:
                break
            print(f"{PROG}: that message has {len(ids)} tokens and does not fit the context "
                  f"({model.max_seq_len}); not sent", file=sys.stderr)
            return None
        del messages[len(base):len(base) + 2]  # the oldest user/assistant exchange
        trimmed = True
    if trimmed:
        print("(older turns dropped to fit the context)", file=sys.stderr)
    return ids
