"""The one table of generation-parameter bounds and defaults, shared by every front end.

`Model.generate`, `create_completion` / `create_chat_completion`, the CLI and the HTTP server
all validate through `check()`, so an invalid value gets the same exception and the same message
wherever it comes from (only the parameter's spelling differs: `max_new_tokens` in Python,
`max_tokens` in OpenAI requests, `--max-new-tokens` on the command line). The CLI turns the
error into exit status 2, the server into HTTP 400 with `param` set.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

# Most tokens generated when the caller does not say (CLI run/chat, Model.generate/chat, the
# server's chat endpoint): bounded, as llama-server and ollama bound theirs, so a base model that
# never emits EOS cannot run on for the whole context. OpenAI's /v1/completions keeps its own
# documented default of 16.
DEFAULT_MAX_TOKENS = 512
DEFAULT_COMPLETION_MAX_TOKENS = 16
# OpenAI's default temperature, used by the OpenAI-shaped calls and the server (Model.generate and
# the CLI default to greedy, 0).
DEFAULT_OPENAI_TEMPERATURE = 1.0

# KV cache element types (Model(kv_dtype=...), --kv-dtype); the first is the default.
KV_DTYPES = ("f32", "f16", "bf16", "int8")
# The default KV cache type: exact, so that the default engine matches transformers' float32
# logits to 1e-4 (tests/test_numerics.py; an f16 cache moves them ~1e-3). f16 halves the memory at
# mean KL 4.8e-7 on the real 270M, int8 takes 28% at 2.7e-4: docs/quantization.md has the table.
DEFAULT_KV_DTYPE = "f32"

SEED_LIMIT = 1 << 64  # seeds are unsigned 64-bit (the C++ Mersenne Twister's seed type)
INT32_MAX = (1 << 31) - 1  # counts the C++ core takes as int (top_k, token counts)
MAX_THREADS = 1024  # ThreadPool::kMaxThreads (the C++ pool's bound; a test checks they agree)


class InvalidRequestError(ValueError):
    """A parameter that is missing, of the wrong type or out of range.

    `param` names the parameter as the caller spelled it; `code` is OpenAI's error code where
    one fits (e.g. "context_length_exceeded"). The server answers these with HTTP 400.
    """

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ContextLengthError(ValueError):
    """The prompt (plus the tokens to generate) does not fit the model's context."""


class InvalidParameterType(InvalidRequestError, TypeError):
    """A parameter of the wrong type (also a TypeError, as Python callers expect)."""


@dataclass(frozen=True)
class Bound:
    kind: type  # int or float
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is excluded
    hi_open: bool = False

    def describe(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_fmt(self.lo)}, {_fmt(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_fmt(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {_fmt(self.hi)}"


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(v)


# Canonical names are the Python API's. The sampler (C++) enforces the same ranges again.
BOUNDS: dict[str, Bound] = {
    "max_new_tokens": Bound(int, lo=0, hi=INT32_MAX),
    # 0 = greedy; so small that 1/T overflows float is greedy too (T -> 0), in the C++ sampler
    "temperature": Bound(float, lo=0.0),
    "top_k": Bound(int, lo=0, hi=INT32_MAX),          # 0 = off
    "top_p": Bound(float, lo=0.0, hi=1.0, lo_open=True),  # 1 = off
    "min_p": Bound(float, lo=0.0, hi=1.0, hi_open=True),  # 0 = off
    "repetition_penalty": Bound(float, lo=0.0, lo_open=True),  # 1 = off
    "presence_penalty": Bound(float, lo=-2.0, hi=2.0),  # 0 = off; OpenAI's range
    "frequency_penalty": Bound(float, lo=-2.0, hi=2.0),  # 0 = off; OpenAI's range
    "batch_size": Bound(int, lo=1, hi=1024),          # generate([...]): sequences decoded at once
    "seed": Bound(int, lo=0, hi=SEED_LIMIT, hi_open=True),
    "n_threads": Bound(int, lo=1, hi=MAX_THREADS),   # Model(n_threads=...), Model.n_threads, --threads
    "top_logprobs": Bound(int, lo=0, hi=20),          # OpenAI's chat range
    "logit_bias": Bound(float, lo=-100.0, hi=100.0),  # each value; OpenAI's range
    "n": Bound(int, lo=1, hi=128),                    # choices per request; OpenAI's range
    # Speculative decoding (speculative.py). A verify runs draft_len + 1 tokens, at most one
    # prefill chunk (256), so the rejected ones can always be cut from the sliding-window rings
    # (window + chunk positions); past ~16 drafts acceptance is rarely high enough to pay.
    "draft_len": Bound(int, lo=1, hi=32),
    "ngram_min": Bound(int, lo=1, hi=16),   # prompt lookup: the shortest suffix looked up
    "ngram_max": Bound(int, lo=1, hi=16),   # and the longest (tried first)
}

# What each front calls a canonical parameter, where it differs.
OPENAI_NAMES = {"max_new_tokens": "max_tokens", "repetition_penalty": "repeat_penalty"}
CLI_NAMES = {k: "--" + k.replace("_", "-") for k in BOUNDS}
CLI_NAMES["n_threads"] = "--threads"


def bounds_json(name: str) -> dict[str, Any]:
    """BOUNDS[name] as JSON for a client that shows or checks the value (the server's chat page):
    {"integer", "min", "max", "min_exclusive", "max_exclusive"}, null where there is no bound."""
    b = BOUNDS[name]
    return {"integer": b.kind is int, "min": b.lo, "max": b.hi, "min_exclusive": b.lo_open,
            "max_exclusive": b.hi_open}


def json_type_name(v: Any) -> str:
    """How a value's type reads in an error message, in JSON's words ('an integer', 'null', ...)."""
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def check(name: str, value: Any, shown: str | None = None):
    """`value` validated against BOUNDS[name] and converted (int or float); raises
    InvalidRequestError (InvalidParameterType for a wrong type) naming `shown` (default `name`)."""
    b = BOUNDS[name]
    shown = shown or name
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if hasattr(value, "__index__") and not isinstance(value, bool):  # numpy integers
            value = int(value)
        elif hasattr(value, "__float__") and b.kind is float and not isinstance(value, (str, bytes, bool)):
            value = float(value)
        else:
            want = "an integer" if b.kind is int else "a number"
            raise InvalidParameterType(f"{shown} must be {want}, got {json_type_name(value)}", shown)
    if b.kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise InvalidParameterType(f"{shown} must be an integer, got {value!r}", shown)
            value = int(value)
    else:
        value = float(value)
        if math.isnan(value):
            raise InvalidRequestError(f"{shown} must be a number, got NaN", shown)
    ok = True
    if b.lo is not None:
        ok = value > b.lo if b.lo_open else value >= b.lo
    if ok and b.hi is not None:
        ok = value < b.hi if b.hi_open else value <= b.hi
    if not ok:
        raise InvalidRequestError(f"{shown} must be {b.describe()}, got {value!r}", shown)
    return value


def check_logit_bias(bias: Any, vocab_size: int, shown: str = "logit_bias") -> tuple[list[int], list[float]]:
    """OpenAI's logit_bias, {token id: bias} (ids as ints or, from JSON, as digit strings; each
    bias in [-100, 100]), as (ids, values); raises InvalidRequestError naming `shown`."""
    if not isinstance(bias, dict):
        raise InvalidParameterType(f"{shown} must be an object mapping token ids to numbers, got "
                                   f"{json_type_name(bias)}", shown)
    ids, vals = [], []
    for k, v in bias.items():
        try:
            i = int(k) if isinstance(k, str) and k.strip().lstrip("-").isdigit() else k.__index__()
        except (AttributeError, TypeError):
            raise InvalidRequestError(f"{shown}: keys must be token ids, got {k!r}", shown) from None
        if isinstance(k, bool) or not 0 <= i < vocab_size:
            raise InvalidRequestError(f"{shown}: token id {k!r} is outside the vocabulary [0, {vocab_size})", shown)
        ids.append(i)
        vals.append(check("logit_bias", v, shown=f"{shown}[{k!r}]"))
    return ids, vals


def choice_seed(seed: int, index: int) -> int:
    """The seed of choice `index` of a request for n choices: the request's seed + index (mod 2^64).
    Choice 0 is what the same request with n=1 gives, and each choice has its own draw."""
    return (seed + index) % SEED_LIMIT


def resolve_seed(seed: int | None) -> int:
    """The seed rule of every entry point: an explicit seed is used as given (reproducible);
    no seed draws a fresh random one, so repeated sampled calls differ (as in transformers and
    llama-cpp-python). Greedy decoding (temperature 0) never looks at the seed."""
    return random.getrandbits(64) if seed is None else seed


__all__ = ["BOUNDS", "Bound", "check", "resolve_seed", "json_type_name", "InvalidRequestError",
           "InvalidParameterType", "ContextLengthError", "DEFAULT_MAX_TOKENS", "DEFAULT_COMPLETION_MAX_TOKENS",
           "OPENAI_NAMES", "CLI_NAMES", "MAX_THREADS", "check_logit_bias", "bounds_json",
           "DEFAULT_OPENAI_TEMPERATURE", "choice_seed"]
