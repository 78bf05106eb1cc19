"""Speculative decoding options: checked here, run by the C++ Generator (decode/speculative.h).

    m.generate(prompt, speculative="ngram", draft_len=8)     # prompt lookup, no second model
    m.generate(prompt, draft_model=small)                    # a draft model of the same vocabulary

A drafter proposes up to `draft_len` tokens, one forward of the model verifies them all, and
the rejected ones are cut from the KV cache. Greedy output is token for token the same as plain
greedy decoding; sampled output has exactly the same distribution (the rejection rule of
Leviathan et al. / Chen et al.), though not the same tokens for a seed, since the random numbers
are used differently. docs/speculative.md has the details and the measured speed-ups.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _core
from .params import InvalidParameterType, InvalidRequestError, check

MODES = ("ngram", "draft")
# Defaults measured on the real Gemma 3 270M (benchmarks/speculative.py): a verify of k tokens
# costs more than one decode step, so a draft model (whose drafts each cost a forward) drafts fewer.
DEFAULT_DRAFT_LEN = {"ngram": 8, "draft": 4}
DEFAULT_NGRAM_MIN, DEFAULT_NGRAM_MAX = 2, 4
# A generation's draft seed: the request's seed mixed with this (the draft samples its own tokens).
_DRAFT_SEED_MIX = 0x9E3779B97F4A7C15


@dataclass
class Speculation:
    """One generation's speculation: its drafter and, once it ran, the counts."""

    mode: str
    draft_len: int
    drafter: Any
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0  # verifying forwards of the model

    @property
    def acceptance_rate(self) -> float | None:
        """Accepted / drafted tokens (None when nothing was drafted)."""
        return self.accepted / self.drafted if self.drafted else None

    def start(self, seed: int) -> None:
        if self.mode == "draft":
            self.drafter.reseed(seed ^ _DRAFT_SEED_MIX)

    def next(self, g) -> list[int]:
        return g.next_speculative(self.drafter, self.draft_len, self.draft_len + 1)

    def finish(self, g) -> None:
        self.drafted, self.accepted, self.rounds = g.spec_stats


def _same_vocabulary(model, draft) -> str | None:
    """None when `draft` tokenises exactly as `model`, else what differs."""
    if model.config.vocab_size != draft.config.vocab_size:
        return f"vocab_size {draft.config.vocab_size} != {model.config.vocab_size}"
    a, b = model.tokenizer, draft.tokenizer
    for key in ("bos_id", "eos_id", "pad_id", "unk_id"):
        if getattr(a.sp, key)() != getattr(b.sp, key)():
            return f"special id {key}"
    if a.sp.serialized_model_proto() != b.sp.serialized_model_proto():
        n = a.sp.get_piece_size()
        if n != b.sp.get_piece_size():
            return f"tokenizer sizes {b.sp.get_piece_size()} != {n}"
        for i in range(n):
            if a.sp.id_to_piece(i) != b.sp.id_to_piece(i):
                return f"token {i} is {b.sp.id_to_piece(i)!r} in the draft, {a.sp.id_to_piece(i)!r} in the model"
    return None


def _model_drafter(model, draft):
    """The C++ drafter running `draft` for `model` (kept on `model` for the next call, so the
    draft's KV cache of the conversation is reused)."""
    # (a Model by its parts: model.py imports generation.py, which imports this module)
    if not all(hasattr(draft, a) for a in ("_core", "tokenizer", "config", "kv_dtype")):
        raise InvalidParameterType(f"draft_model must be a gemma_cpp.Model, got {type(draft).__name__}",
                                   "draft_model")
    cached = getattr(model, "_spec_drafter", None)
    if cached is not None and cached[0] is draft._core:
        if cached[1].n_threads != model.n_threads:
            cached[1].n_threads = model.n_threads
        return cached[1]
    why = _same_vocabulary(model, draft)
    if why is not None:
        raise InvalidRequestError(f"draft_model {draft.path} does not share the vocabulary of {model.path} "
                                  f"({why}); a draft model must use the same tokenizer", "draft_model")
    max_seq = min(model.max_seq_len, draft.config.max_position)
    drafter = _core.ModelDrafter(draft._core, max_seq, model.n_threads, draft.kv_dtype, 0)
    model._spec_drafter = (draft._core, drafter)
    return drafter


def setup(model, speculative: str | None = None, draft_model=None, draft_len: int | None = None,
          ngram_min: int | None = None, ngram_max: int | None = None, *, dynamic_mask: bool = False,
          logprobs: bool = False) -> Speculation | None:
    """The Speculation a request asks for, checked (InvalidRequestError naming the parameter), or None.

    speculative: None (off, unless draft_model is given), "ngram" or "draft" (needs draft_model).
    dynamic_mask / logprobs: the request has a grammar or a token_mask function / logprobs,
    which speculation does not support (an error, not a silent fallback).
    """
    if speculative is None and draft_model is not None:
        speculative = "draft"
    if speculative is None:
        for name, v in (("draft_len", draft_len), ("ngram_min", ngram_min), ("ngram_max", ngram_max)):
            if v is not None:
                raise InvalidRequestError(f"{name} applies to speculative decoding: also give speculative='ngram' "
                                          f"or a draft_model", name)
        return None
    if speculative not in MODES:
        raise InvalidRequestError(f"speculative must be one of {', '.join(MODES)} (or None), got {speculative!r}",
                                  "speculative")
    if dynamic_mask:
        raise InvalidRequestError("speculative decoding cannot be combined with json_schema/regex/grammar or a "
                                  "token_mask function (a fixed token_mask array is fine)", "speculative")
    if logprobs:
        raise InvalidRequestError("speculative decoding cannot be combined with logprobs", "speculative")
    draft_len = check("draft_len", DEFAULT_DRAFT_LEN[speculative] if draft_len is None else draft_len)
    if speculative == "ngram":
        if draft_model is not None:
            raise InvalidRequestError("draft_model is for speculative='draft', not 'ngram'", "draft_model")
        lo = check("ngram_min", DEFAULT_NGRAM_MIN if ngram_min is None else ngram_min)
        hi = check("ngram_max", max(DEFAULT_NGRAM_MAX, lo) if ngram_max is None else ngram_max)
        if lo > hi:
            raise InvalidRequestError(f"ngram_min ({lo}) must not exceed ngram_max ({hi})", "ngram_min")
        return Speculation("ngram", draft_len, _core.NgramDrafter(lo, hi))
    if draft_model is None:
        raise InvalidRequestError("speculative='draft' needs a draft_model", "draft_model")
    for name, v in (("ngram_min", ngram_min), ("ngram_max", ngram_max)):
        if v is not None:
            raise InvalidRequestError(f"{name} applies to speculative='ngram'", name)
    return Speculation("draft", draft_len, _model_drafter(model, draft_model))


def batch_options(options: dict) -> dict:
    """generate()'s options for a list of prompts, without the speculative ones (speculative
    decoding runs one prompt at a time: giving one with a list is an InvalidRequestError)."""
    names = ("speculative", "draft_model", "draft_len", "ngram_min", "ngram_max")
    for name in names:
        if options.get(name) is not None:
            raise InvalidRequestError(f"{name}: speculative decoding takes one prompt, not a list of prompts", name)
    return {k: v for k, v in options.items() if k not in names}


__all__ = ["Speculation", "setup", "batch_options", "MODES", "DEFAULT_DRAFT_LEN", "DEFAULT_NGRAM_MIN", "DEFAULT_NGRAM_MAX"]
