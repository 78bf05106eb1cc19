"""What several `gemma-cpp` subcommands share: the program name, the one-line runtime error,
streamed output, and the prompt / token-budget helpers of `run` and `chat`."""

from __future__ import annotations

import sys
from typing import Any

PROG = "gemma-cpp"


class CLIError(Exception):
    """A runtime error reported as one line on stderr (exit status 1)."""


class Out:
    """Writes streamed text to stdout, flushing each piece."""

    def __init__(self):
        self.f = sys.stdout
        self.last = "\n"

    def write(self, s: str) -> None:
        if s:
            self.f.write(s)
            self.f.flush()
            self.last = s[-1]

    def end_line(self) -> None:
        if self.last != "\n":
            self.write("\n")


def gen_kwargs(args) -> dict[str, Any]:
    """The sampling flags (options.add_sampling) and the output constraint (options.add_constraints)
    as Generation's keyword arguments."""
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repetition_penalty=args.repetition_penalty, presence_penalty=args.presence_penalty,
                frequency_penalty=args.frequency_penalty, json_schema=getattr(args, "json_schema", None),
                grammar=getattr(args, "grammar", None), regex=getattr(args, "regex", None))


def spec_kwargs(args, draft=None) -> dict[str, Any]:
    """The speculative-decoding flags (options.add_speculative) as Generation's keyword arguments,
    with `draft` the Model opened for --draft (models.open_draft)."""
    if getattr(args, "speculative", None) is None and draft is None:
        return {}
    return dict(speculative=args.speculative, draft_model=draft, draft_len=args.draft_len,
                ngram_min=args.ngram_min, ngram_max=args.ngram_max)


def chat_prompt_ids(model, messages) -> list[int]:
    return model.tokenize(model.apply_chat_template(messages), add_bos=False)


def max_new(model, n_prompt: int, requested: int | None) -> int:
    """The tokens to generate: `requested` (None: until the context ends), at most the room left."""
    room = model.max_seq_len - n_prompt
    if room <= 0:
        from ..params import ContextLengthError

        raise ContextLengthError(f"the prompt has {n_prompt} tokens and fills the context "
                                 f"({model.max_seq_len} tokens); use a larger --ctx or a shorter prompt")
    return room if requested is None else min(requested, room)
