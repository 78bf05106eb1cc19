"""The one place that turns a generation request into calls on the C++ Generator.

`Model.generate`/`chat`, the OpenAI-shaped calls, the CLI and the server all run a `Generation`:

    prompt ids -> Generator.start (prefill, reusing the cached prefix)
               -> Generator.next(1) ... (processors, sampler, accept: in C++, GIL released)
               -> StreamDecoder (UTF-8-safe pieces) -> StopMatcher (stop strings) -> text pieces

C++ reports why it stopped (an end id, the length, the context end, an interrupt); a stop string
is found here, in the text. Tokens are asked for one per call (next(1)): on a tiny test model
(~60 us a token) next(1) cost 2-8 us a token more than next(400) for the whole batch, and the
detokeniser and stop matcher 20-35 us (measured on a busy 2-core machine), against ~60 ms a token
for the real Gemma 3 270M. One at a time never runs the model past a stop string, so the KV cache
holds exactly the returned tokens (but the last, pending one) with no rollback. A speculative
step (speculative.py) returns several tokens from one call; they are still handed on one at a
time, so nothing past a stop string is returned (the cache may then hold a few tokens more, which
the next call's prefix reuse cuts off).

State lives in a `_Progress` kept apart from the `Generation` object, so the generator functions
running a generation never refer back to it: dropping a Generation frees the Model at once.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator, Sequence, Union

import numpy as np

from . import _core
from . import speculative as speculation
from . import structured
from .params import InvalidParameterType, check, check_logit_bias, resolve_seed
from .tokenizer import StopMatcher, StreamDecoder

# Why a generation ended (Generation.stop_reason): the C++ StopReason names, plus "stop" (a stop
# string), "grammar" (a json_schema/regex/grammar constraint is complete and allows no more
# tokens) and "cancelled" (the `cancel` event); None when the stream was closed early or raised.
# OpenAI's finish_reason folds them into three ("cancelled" for None too).
FINISH_REASON = {"eos": "stop", "stop": "stop", "grammar": "stop", "length": "length", "context": "length",
                 "interrupted": "cancelled", "cancelled": "cancelled"}

# A fixed allowed-token mask, or a function of the ids generated so far giving one (or None for
# "any token", or structured.END to end the generation, stop_reason "grammar") before each step:
# the seam for grammar-constrained output (structured.GrammarMask). Masks are uint32 words,
# bit i of word i // 32 set when id i is allowed (see token_mask()).
TokenMask = Union[np.ndarray, Callable[[list], Union[np.ndarray, None]]]


def token_mask(allowed: Sequence[int], vocab_size: int) -> np.ndarray:
    """The bitmask that allows exactly the ids in `allowed`."""
    ids = np.asarray(list(allowed), dtype=np.int64)
    if ids.size and not (0 <= ids.min() and ids.max() < vocab_size):
        raise ValueError(f"token_mask: ids must be in [0, {vocab_size})")
    words = np.zeros((vocab_size + 31) // 32, dtype=np.uint32)
    np.bitwise_or.at(words, ids // 32, np.left_shift(np.uint32(1), (ids % 32).astype(np.uint32)))
    return words


def sampling_params(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                    repetition_penalty: float = 1.0, presence_penalty: float = 0.0,
                    frequency_penalty: float = 0.0) -> Any:
    """The C++ SamplingParams, each value checked against the one table in params.py (None: default)."""
    def get(name, v, default):
        return check(name, default if v is None else v)

    return _core.SamplingParams(
        temperature=get("temperature", temperature, 0.0), top_k=get("top_k", top_k, 0),
        top_p=get("top_p", top_p, 1.0), min_p=get("min_p", min_p, 0.0),
        repetition_penalty=get("repetition_penalty", repetition_penalty, 1.0),
        presence_penalty=get("presence_penalty", presence_penalty, 0.0),
        frequency_penalty=get("frequency_penalty", frequency_penalty, 0.0))


def stop_strings(stop: Sequence[str] | str | None) -> list[str]:
    """`stop` as a list of strings (a single string is one stop string)."""
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if not all(isinstance(s, str) for s in stop):
        raise InvalidParameterType("stop must be a string or a list of strings", "stop")
    return list(stop)


class _Progress:
    """What a running generation has produced so far, and why it ended."""

    __slots__ = ("ids", "logprobs", "text_parts", "stop_reason", "prefilled", "generation_id", "interrupted",
                 "t_start", "t_first", "t_end")

    def __init__(self):
        self.ids: list[int] = []
        self.logprobs: list[tuple] = []  # (id, logprob, [(id, logprob), ...]) per id, when asked for
        self.text_parts: list[str] = []
        self.stop_reason: str | None = None
        self.prefilled = 0  # prompt tokens run through the model (the rest came from the cache)
        self.generation_id: int | None = None  # the C++ Generator's number for this generation
        self.interrupted = False
        self.t_start = self.t_first = self.t_end = None


class Generation:
    """One generation on a Model, from prompt token ids.

    Iterate it for text pieces (text=True: they join to the whole text) or for token ids. It runs
    lazily: the Model's lock is taken at the first item and held until the generation ends, is
    closed or is dropped; iterate and close it in one thread. Every parameter is checked when it
    is created. Afterwards: `stop_reason` ("eos", "stop", "grammar", "length", "context",
    "interrupted" or "cancelled"), `finish_reason` (OpenAI's "stop", "length" or "cancelled"), `ids`,
    `completion_tokens`, `text` and the timings.

    `json_schema`, `regex` or `grammar` (one of them) constrains the output (structured.py);
    `logprobs` (None: off; k in [0, 20]) records each token's log-probability and the k best
    (`logprobs`), from the distribution the sampler drew from, after the penalties and the mask
    and before temperature (the C++ Generator's set_logprobs);
    `logit_bias` ({id: bias in [-100, 100]}) is added to those logits after the penalties, before the mask;
    `cancel` (a threading.Event) is looked at between tokens; `interrupt()` may be called from
    another thread and stops even inside a long prefill.
    `speculative` ("ngram"), `draft_model`, `draft_len`, `ngram_min`, `ngram_max`: speculative
    decoding (speculative.py; `speculation` then holds the drafted and accepted counts).
    """

    def __init__(self, model, prompt_ids: Sequence[int], *, max_tokens: int, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: int | None = None,
                 stop: Sequence[str] | str | None = None, ignore_eos: bool = False,
                 token_mask: TokenMask | None = None, json_schema: Any = None, regex: str | None = None,
                 grammar: str | None = None, logprobs: int | None = None, logit_bias: dict | None = None,
                 cancel: threading.Event | None = None, text: bool = True, speculative: str | None = None,
                 draft_model: Any = None, draft_len: int | None = None, ngram_min: int | None = None,
                 ngram_max: int | None = None):
        self.model = model
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.prompt_tokens = len(self.prompt_ids)
        model._check_fits(self.prompt_tokens, max_tokens)  # ContextLengthError
        self.max_tokens = check("max_new_tokens", max_tokens)
        seed = resolve_seed(model._seed if seed is None else check("seed", seed))
        params = sampling_params(temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty,
                                 frequency_penalty)
        self.stop = [s for s in stop_strings(stop) if s]
        end_ids = [] if ignore_eos else sorted(model.tokenizer.stop_ids)
        constraint = structured.grammar_of(json_schema, regex, grammar)
        if constraint is not None:
            if token_mask is not None:
                raise ValueError("token_mask and a json_schema/regex/grammar constraint cannot be combined")
            token_mask = structured.GrammarMask(model, constraint)
        if logprobs is not None:
            logprobs = check("top_logprobs", logprobs)
        bias = check_logit_bias(logit_bias, model.config.vocab_size) if logit_bias else None
        # speculative.py: None, or the drafter and its counts (drafted, accepted) once it ran
        self.speculation = speculation.setup(model, speculative, draft_model, draft_len, ngram_min, ngram_max,
                                             dynamic_mask=callable(token_mask), logprobs=logprobs is not None)
        self._p = _Progress()
        ids = _token_ids(self._p, model, self.prompt_ids, params, self.max_tokens, end_ids, seed, token_mask,
                         cancel, logprobs, bias, self.speculation)
        self._iter = _text_pieces(self._p, ids, StreamDecoder(model.tokenizer, self.prompt_ids),
                                  StopMatcher(self.stop)) if text else ids

    ids = property(lambda self: list(self._p.ids))
    # With logprobs=k: (id, logprob, [(id, logprob) of the k best]) of each id in `ids`.
    logprobs = property(lambda self: list(self._p.logprobs))
    completion_tokens = property(lambda self: len(self._p.ids))
    stop_reason = property(lambda self: self._p.stop_reason)
    prefilled_tokens = property(lambda self: self._p.prefilled)
    text_parts = property(lambda self: self._p.text_parts)
    t_start = property(lambda self: self._p.t_start)
    t_first = property(lambda self: self._p.t_first)
    t_end = property(lambda self: self._p.t_end)

    @property
    def finish_reason(self) -> str | None:
        """OpenAI's finish_reason: "stop" (an end id or a stop string), "length" (max_tokens or the
        context end) or "cancelled"; None while running."""
        if self._p.t_end is None:
            return None
        return FINISH_REASON.get(self._p.stop_reason, "cancelled")

    @property
    def text(self) -> str:
        return "".join(self._p.text_parts)

    @property
    def prefill_seconds(self) -> float | None:
        p = self._p
        return None if p.t_first is None else p.t_first - p.t_start

    @property
    def decode_seconds(self) -> float | None:
        p = self._p
        return None if p.t_first is None or p.t_end is None else p.t_end - p.t_first

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()

    def interrupt(self) -> None:
        """Stop at the next check inside the C++ loop, even inside a long prefill (thread-safe;
        stop_reason "interrupted"). Does nothing once this generation has ended."""
        p = self._p
        p.interrupted = True
        if p.generation_id is not None:
            self.model._session.interrupt(p.generation_id)

    def run(self) -> str:
        """Generate to the end; returns the text."""
        try:
            for _ in self:
                pass
        finally:
            self.close()
        return self.text


def _token_ids(p: _Progress, model, prompt_ids: list[int], params, max_tokens: int, end_ids: list[int],
               seed: int, mask: TokenMask | None, cancel: threading.Event | None,
               logprobs: int | None = None, bias: tuple | None = None,
               spec: speculation.Speculation | None = None) -> Iterator[int]:
    """The generated ids, one C++ call each (a speculative step may give several), holding the
    Model's lock while it runs."""
    p.t_start = time.perf_counter()
    try:
        with model._lock.hold():
            g = model._session
            p.generation_id = g.generation_id + 1  # what start() will run: interrupt() can name it
            if p.interrupted:  # before it could be named
                p.stop_reason = "interrupted"
                return
            p.prefilled = g.start(prompt_ids, params, max_tokens, end_ids, seed)
            if logprobs is not None:
                g.set_logprobs(logprobs)
            if bias:
                g.set_logit_bias(*bias)
            if spec is not None:
                spec.start(seed)
            try:
                if mask is not None and not callable(mask):
                    g.set_mask(mask)
                while True:
                    if cancel is not None and cancel.is_set():
                        p.stop_reason = "cancelled"
                        return
                    if callable(mask) and g.stop_reason is None:  # (not once the last token is out)
                        m = mask(list(p.ids))
                        if m is structured.END:
                            p.stop_reason = "grammar"
                            return
                        g.set_mask(m)
                    got = g.next(1) if spec is None else spec.next(g)
                    if not got:
                        p.stop_reason = g.stop_reason
                        if p.stop_reason == "length" and getattr(mask, "complete", None) and mask.complete(p.ids):
                            p.stop_reason = "grammar"  # the last token allowed completed it
                        return
                    if p.t_first is None:
                        p.t_first = time.perf_counter()
                    if logprobs is not None:
                        p.logprobs.append(g.last_logprob())
                    for tok in got:  # one at a time: a consumer stopping at a stop string takes no more
                        p.ids.append(tok)
                        yield tok
            finally:
                if spec is not None:
                    spec.finish(g)
                if mask is not None:
                    g.set_mask(None)
                if logprobs is not None:
                    g.set_logprobs(-1)
                if bias:
                    g.set_logit_bias([], [])
    finally:
        p.t_end = time.perf_counter()


def _text_pieces(p: _Progress, ids: Iterator[int], dec: StreamDecoder, matcher: StopMatcher) -> Iterator[str]:
    """Text pieces of the ids, UTF-8-safe, ending before the first stop string."""
    hit = False
    try:
        for tok in ids:
            piece, hit = matcher.feed(dec.push(tok))
            if piece:
                p.text_parts.append(piece)
                yield piece
            if hit:
                break
        if p.stop_reason == "cancelled":
            return
        if not hit:
            piece, hit = matcher.feed(dec.flush())
            if not hit:
                piece += matcher.finish()
            if piece:
                p.text_parts.append(piece)
                yield piece
        if hit:
            p.stop_reason = "stop"
    finally:
        ids.close()


__all__ = ["Generation", "FINISH_REASON", "sampling_params", "stop_strings", "token_mask"]
