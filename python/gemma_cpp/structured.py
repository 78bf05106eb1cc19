"""Structured output: JSON-schema, regex and grammar constraints, through llguidance.

llguidance (PyPI `llguidance`, the `[structured]` extra; the engine llama.cpp, vLLM and SGLang
use) compiles a constraint against our SentencePiece vocabulary (Tokenizer.token_bytes) and, before
each token, gives the bitmask of the ids that keep the output valid. The C++ Generator applies that
mask to the logits before the sampler (greedy too: disallowed ids get -inf), so what comes out
always fits the constraint. When the constraint is complete and allows nothing more, the
generation ends there (stop_reason "grammar", finish_reason "stop") without another forward
pass; when it is complete but may go on (e.g. the regex `a+`), the end ids (EOS, <end_of_turn>)
are allowed too and the model chooses.

The constraint kinds (at most one per generation):
  json_schema  a JSON schema (dict or JSON text), compiled by llguidance (its supported subset:
               https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md). Output is
               JSON with ", " and ": " separators and no other whitespace, unless the schema's
               "x-guidance" object says otherwise (e.g. {"whitespace_flexible": true}).
  regex        a regular expression the whole output must match (Rust `regex` syntax).
  grammar      a grammar in llguidance's Lark syntax (https://github.com/guidance-ai/llguidance/
               blob/main/docs/syntax.md), or in llama.cpp's GBNF, which llguidance converts to Lark.

Works on any Model passed in; never imports model.py.
"""

from __future__ import annotations

import json
import threading
import weakref
from typing import Any

import numpy as np

from .params import InvalidRequestError

EXTRA = "structured"  # pip install 'gemma_cpp[structured]'
CONSTRAINTS = ("json_schema", "regex", "grammar")

# JSON output style unless the schema's "x-guidance" says otherwise: no free whitespace (a model
# could otherwise emit spaces and newlines until max_tokens), Python json.dumps' separators.
JSON_DEFAULTS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# Returned by a token-mask function (generation.py) to end the generation: the grammar is complete.
END = object()


class StructuredOutputUnavailable(ImportError):
    """A constraint was asked for but llguidance (the [structured] extra) is not installed."""


def _llg():
    try:
        import llguidance
    except ImportError:
        raise StructuredOutputUnavailable(
            "constrained output (json_schema, regex, grammar, response_format) needs llguidance: "
            f"pip install 'gemma_cpp[{EXTRA}]'") from None
    return llguidance


def grammar_of(json_schema: Any = None, regex: str | None = None, grammar: str | None = None, *,
               names: dict[str, str] | None = None) -> str | None:
    """The llguidance grammar of a constraint (None when none is given), checked: a bad schema,
    regex or grammar raises InvalidRequestError naming the parameter (`names` maps each kind to
    the caller's spelling of it, e.g. {"json_schema": "response_format"})."""
    given = {k: v for k, v in (("json_schema", json_schema), ("regex", regex), ("grammar", grammar))
             if v is not None}
    names = names or {}
    if not given:
        return None
    if len(given) > 1:
        shown = [names.get(k, k) for k in given]
        raise InvalidRequestError(f"give one constraint, not {' and '.join(shown)}", shown[1])
    kind, value = next(iter(given.items()))
    param = names.get(kind, kind)
    llg = _llg()
    if kind == "json_schema":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as e:
                raise InvalidRequestError(f"{param}: not valid JSON ({e})", param) from None
        if value is True:  # JSON schema's "anything"
            value = {}
        if not isinstance(value, dict):
            raise InvalidRequestError(f"{param} must be a JSON schema object, got {type(value).__name__}", param)
        try:
            g = llg.LLMatcher.grammar_from_json_schema(value, defaults=JSON_DEFAULTS)
        except (ValueError, TypeError) as e:
            raise InvalidRequestError(f"{param}: {e}", param) from None
    elif kind == "regex":
        if not isinstance(value, str):
            raise InvalidRequestError(f"{param} must be a string", param)
        g = llg.LLMatcher.grammar_from_regex(value)
    else:
        if not isinstance(value, str):
            raise InvalidRequestError(f"{param} must be a string (Lark or GBNF)", param)
        try:
            g = llg.grammar_from("grammar", value)
        except ValueError as e:
            raise InvalidRequestError(f"{param}: {e}", param) from None
    err = llg.LLMatcher.validate_grammar(g)
    if err:
        raise InvalidRequestError(f"{param}: {err.strip()}", param)
    return g


# The llguidance tokenizer of each Tokenizer (building one reads every piece: ~2 s for Gemma 3's
# 262144 ids), shared by a Model's clones and kept as long as the Tokenizer lives.
_tokenizers: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


class _Vocab:
    """What llguidance's TokenizerWrapper reads: each id's bytes, the special ids, the end id,
    and a function from text to ids (SentencePiece's own tokenisation)."""

    def __init__(self, tokenizer, vocab_size: int):
        tokens, special = tokenizer.token_bytes()
        # A special piece is marked by a leading 0xFF byte (never valid UTF-8), llguidance's rule.
        special_set = set(special)
        tokens = [b"\xff" + t if i in special_set else t for i, t in enumerate(tokens)]
        tokens += [b""] * (vocab_size - len(tokens))  # logits rows past the SentencePiece model
        self.tokens = tokens
        self.special_token_ids = special
        self.eos_token_id = tokenizer.eos_ids[0] if tokenizer.eos_ids else tokenizer.end_of_turn_id
        self.bos_token_id = tokenizer.bos_id
        self._sp = tokenizer.sp

    def __call__(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._sp.encode(text)


def lltokenizer(tokenizer, vocab_size: int):
    """The llguidance LLTokenizer of `tokenizer` (cached): every end id (EOS, <end_of_turn>) is an
    end-of-sequence token, allowed where the constraint is complete."""
    llg = _llg()
    with _tokenizers_lock:
        got = _tokenizers.get(tokenizer)
        if got is None or got[0] != vocab_size:
            ends = sorted(tokenizer.stop_ids)
            lt = llg.LLTokenizer(llg.TokenizerWrapper(_Vocab(tokenizer, vocab_size)), n_vocab=vocab_size,
                                 eos_token=ends)
            got = _tokenizers[tokenizer] = (vocab_size, lt)
        return got[1]


class GrammarMask:
    """The allowed-token mask function of one generation (generation.TokenMask): called before each
    step with the ids generated so far, it feeds the new ones to an llguidance matcher and returns
    the mask of the next step, or END when the grammar is complete and allows no more tokens."""

    def __init__(self, model, grammar: str):
        llg = _llg()
        vocab = int(model.config.vocab_size)
        self.matcher = llg.LLMatcher(lltokenizer(model.tokenizer, vocab), grammar, log_level=0)
        if self.matcher.is_error():
            raise InvalidRequestError(f"constraint: {self.matcher.get_error()}", "constraint")
        self.words = np.zeros((vocab + 31) // 32, dtype=np.uint32)
        self.consumed = 0

    def __call__(self, ids: list):
        m = self.matcher
        if len(ids) > self.consumed:
            new = ids[self.consumed:]
            self.consumed = len(ids)
            if not m.consume_tokens(new):
                raise RuntimeError(f"structured output: the grammar refused a token: {m.get_error()}")
        if m.is_stopped():
            if m.is_error():
                raise RuntimeError(f"structured output: {m.get_error()}")
            return END
        m.unsafe_compute_mask_ptr(self.words.ctypes.data, self.words.nbytes)  # GIL released
        if m.is_error():
            raise RuntimeError(f"structured output: {m.get_error()}")
        return self.words

    def complete(self, ids: list) -> bool:
        """Whether `ids` complete the grammar so that no more tokens are allowed (the generation
        would end here anyway: a bounded output that used exactly max_tokens)."""
        return self(ids) is END


__all__ = ["CONSTRAINTS", "END", "EXTRA", "GrammarMask", "JSON_DEFAULTS", "StructuredOutputUnavailable",
           "grammar_of", "lltokenizer"]
