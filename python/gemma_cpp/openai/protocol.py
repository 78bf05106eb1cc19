"""OpenAI's request side: a JSON body (or keyword arguments) -> a validated `Request`.

Every number goes through the shared bounds table (gemma_cpp/params.py), so a bad value gets
the same exception and message here as from `Model.generate` and the CLI; `InvalidRequestError`
names the offending field in `.param` (the server's HTTP 400 `param`). Fields we do not
implement are refused by name rather than ignored (see IGNORED_FIELDS for the exceptions).

Defaults follow OpenAI's API, not `Model.generate`: temperature 1.0, top_p 1.0, and a fresh
random seed for each call unless `seed` is given (pass temperature=0 for greedy output).
`n` (1-128) asks for n choices: choice i samples with seed + i (mod 2^64, params.choice_seed), so
choice 0 is the n=1 answer; greedy choices are all the same text (Request.runs).
presence_penalty and frequency_penalty are OpenAI's (in [-2, 2], over the generated tokens).
Extensions beyond OpenAI's parameters, named as llama.cpp names them: top_k, min_p,
repeat_penalty (or repetition_penalty), ignore_eos, and the constraints grammar (GBNF or Lark) and
json_schema (beside OpenAI's response_format), plus regex (docs/structured.md).

Works on any Model passed in; never imports model.py (gemma_cpp.model imports this layer).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .. import structured
from ..generation import Generation
from ..params import (DEFAULT_COMPLETION_MAX_TOKENS, DEFAULT_MAX_TOKENS, DEFAULT_OPENAI_TEMPERATURE,
                      InvalidRequestError, check, check_logit_bias, choice_seed, json_type_name, resolve_seed)
from ..tokenizer import ChatTemplateError


# ---------------------------------------------------------------------------- parameters
# Fields a request may carry. Everything else gets HTTP 400 naming the field: a field we do not
# implement (mirostat, typical_p, dry_*, n_predict, ...) would change the
# output, and answering 200 with unconstrained text would hide that. IGNORED_FIELDS are sent
# routinely by OpenAI clients and SDKs and do not change the text (listed in docs/server.md).
IGNORED_FIELDS = frozenset({"model", "user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_COMMON = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
           "repetition_penalty", "frequency_penalty", "presence_penalty", "seed", "stop", "stream",
           "stream_options", "n", "logprobs", "top_logprobs", "logit_bias", "ignore_eos", "response_format",
           "json_schema", "grammar", "regex"} | IGNORED_FIELDS
_COMPLETION = _COMMON | {"prompt", "echo", "suffix", "best_of"}
_CHAT = _COMMON | {"messages", "tools", "tool_choice", "functions", "function_call"}


@dataclass
class Request:
    """A validated request: the prompt's token ids and the generation settings."""

    kind: str  # "completion" or "chat"
    prompt_ids: list[int]
    prompt_text: str
    max_tokens: int
    sampling: dict[str, Any]
    seed: int
    stop: list[str]
    stream: bool
    include_usage: bool
    echo: bool
    ignore_eos: bool
    model_name: str
    constraint: dict[str, Any] = field(default_factory=dict)  # {"json_schema" | "regex" | "grammar": value}
    logprobs: int | None = None  # None: none; k: each token's logprob and the k best
    n: int = 1  # choices
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        """How many generations the n choices take: n, one after another (each reuses the prompt's
        cached keys and values), or 1 when greedy (temperature 0): every choice would be the same
        text, so the one run is answered n times, as OpenAI answers."""
        return 1 if self.sampling["temperature"] == 0 else self.n

    def generation(self, model, cancel: threading.Event | None = None, index: int = 0,
                   text: bool = True) -> Generation:
        """The generation of choice `index`, seeded with choice_seed(seed, index): seed + index."""
        return Generation(model, self.prompt_ids, max_tokens=self.max_tokens, seed=choice_seed(self.seed, index),
                          stop=self.stop, ignore_eos=self.ignore_eos, cancel=cancel, logprobs=self.logprobs,
                          **self.sampling, **self.constraint, text=text)


def _number(params, name, default, canonical=None):
    """params[name] checked against the shared bounds table (params.py), or `default`."""
    v = params.get(name)
    if v is None:
        return default
    return check(canonical or name, v, shown=name)


def _bool(params, name, default=False) -> bool:
    v = params.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidRequestError(f"'{name}' must be a boolean, got {json_type_name(v)}", name)
    return v


def _common(params: dict, model, kind: str, default_max_tokens: int | None) -> dict:
    out: dict[str, Any] = {}
    out["n"] = _number(params, "n", 1)
    bo = params.get("best_of")
    if bo not in (None, 1):
        raise InvalidRequestError("only best_of=1 is supported", "best_of")
    out["logprobs"] = _logprobs(params, kind)
    name = "max_completion_tokens" if params.get("max_completion_tokens") is not None else "max_tokens"
    out["max_tokens"] = _number(params, name, default_max_tokens, "max_new_tokens")
    rp_name = "repetition_penalty" if params.get("repetition_penalty") is not None else "repeat_penalty"
    out["sampling"] = dict(temperature=_number(params, "temperature", DEFAULT_OPENAI_TEMPERATURE),
                           top_p=_number(params, "top_p", 1.0),
                           top_k=_number(params, "top_k", 0), min_p=_number(params, "min_p", 0.0),
                           repetition_penalty=_number(params, rp_name, 1.0, "repetition_penalty"),
                           presence_penalty=_number(params, "presence_penalty", 0.0),
                           frequency_penalty=_number(params, "frequency_penalty", 0.0))
    if params.get("logit_bias"):
        ids, vals = check_logit_bias(params["logit_bias"], model.config.vocab_size)
        out["sampling"]["logit_bias"] = dict(zip(ids, vals))
    out["seed"] = resolve_seed(_number(params, "seed", None))
    stop = params.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise InvalidRequestError("'stop' must be a string or an array of strings", "stop")
    out["stop"] = list(stop)
    out["stream"] = _bool(params, "stream")
    so = params.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise InvalidRequestError("'stream_options' must be an object", "stream_options")
    out["include_usage"] = bool((so or {}).get("include_usage", False))
    out["ignore_eos"] = _bool(params, "ignore_eos")
    mname = params.get("model")
    if mname is not None and not isinstance(mname, str):
        raise InvalidRequestError("'model' must be a string", "model")
    out["model_name"] = mname or model_id(model)
    out["constraint"] = constraint(params)
    return out


def constraint(params: dict) -> dict[str, Any]:
    """The output constraint of a request, checked: OpenAI's response_format ({"type": "text"},
    {"type": "json_object"} (any JSON object, or llama-server's "schema" in it) or {"type":
    "json_schema", "json_schema": {"schema": ...}}), or llama-server's json_schema / grammar
    fields, or regex. At most one; a bad one is an InvalidRequestError naming its field."""
    found: list[tuple[str, str, Any]] = []  # (field, kind, value)
    rf = params.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict):
            raise InvalidRequestError("'response_format' must be an object", "response_format")
        kind = rf.get("type")
        if kind == "json_object":
            schema = rf.get("schema")
            found.append(("response_format", "json_schema", {"type": "object"} if schema is None else schema))
        elif kind == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict):
                raise InvalidRequestError("response_format.json_schema must be an object holding the 'schema'",
                                          "response_format")
            schema = js.get("schema")
            found.append(("response_format", "json_schema", {} if schema is None else schema))
        elif kind != "text":
            raise InvalidRequestError(f"response_format.type must be 'text', 'json_object' or 'json_schema', "
                                      f"got {kind!r}", "response_format")
    for name in ("json_schema", "grammar", "regex"):
        v = params.get(name)
        if v is not None and v != "":  # llama-server clients send grammar: "" for none
            found.append((name, name, v))
    if not found:
        return {}
    if len(found) > 1:
        raise InvalidRequestError(f"give one output constraint, not both '{found[0][0]}' and '{found[1][0]}'",
                                  found[1][0])
    field_, kind, value = found[0]
    try:
        structured.grammar_of(**{kind: value}, names={kind: field_})
    except structured.StructuredOutputUnavailable as e:
        raise InvalidRequestError(str(e), field_) from None
    return {kind: value}


def _logprobs(params: dict, kind: str) -> int | None:
    """How many top alternatives to return with each token's logprob (None: no logprobs).
    Chat: logprobs true/false and top_logprobs in [0, 20]; completions: logprobs an integer
    in [0, 20] (OpenAI allows 5), and not with echo (the prompt's logprobs are not computed)."""
    lp = params.get("logprobs")
    if kind == "chat":
        on = _bool(params, "logprobs")
        top = _number(params, "top_logprobs", 0)
        if top and not on:
            raise InvalidRequestError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        return top if on else None
    if params.get("top_logprobs") is not None:
        raise InvalidRequestError("'top_logprobs' is a chat parameter; completions take 'logprobs': N",
                                  "top_logprobs")
    if lp is None:
        return None
    if isinstance(lp, bool):
        raise InvalidRequestError("'logprobs' must be an integer (how many alternatives per token) for "
                                  "completions", "logprobs")
    n = check("top_logprobs", lp, shown="logprobs")
    if params.get("echo"):
        raise InvalidRequestError("'logprobs' with 'echo' (the prompt's logprobs) is not supported", "logprobs")
    return n


def model_id(model) -> str:
    """The name a model goes by in responses: its file name without the extension."""
    return os.path.splitext(os.path.basename(model.path))[0]


def _check_fits(model, ids: list[int], max_tokens: int | None, param: str) -> int:
    ctx = model.max_seq_len
    if len(ids) >= ctx:
        raise InvalidRequestError(
            f"This model's maximum context length is {ctx} tokens, but the prompt has {len(ids)} tokens "
            f"(leave room for at least one generated token).", param, "context_length_exceeded")
    room = ctx - len(ids)
    # Generation also ends at the context's end (finish_reason "length").
    return room if max_tokens is None else min(max_tokens, room)


def parse_completion(model, params: dict) -> Request:
    """Validate /v1/completions parameters (a JSON body or keyword arguments) into a Request."""
    _unknown(params, _COMPLETION)
    c = _common(params, model, "completion", DEFAULT_COMPLETION_MAX_TOKENS)
    if params.get("suffix"):
        raise InvalidRequestError("'suffix' is not supported", "suffix")
    prompt = params.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        text = prompt
        ids = _tokenize(model, prompt, True, "prompt")
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                     for t in prompt):
        vocab = model.config.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(f"token id {bad[0]} is outside the vocabulary [0, {vocab})", "prompt")
        ids = list(prompt)
        text = model.detokenize(ids)
    elif prompt is None:
        raise InvalidRequestError("'prompt' is required", "prompt")
    elif isinstance(prompt, list) and len(prompt) > 1:
        raise InvalidRequestError("only one prompt per request is supported", "prompt")
    else:
        raise InvalidRequestError("'prompt' must be a string, an array with one string, or an array of token ids",
                                  "prompt")
    if not ids:
        raise InvalidRequestError("'prompt' is empty", "prompt")
    max_tokens = _check_fits(model, ids, c.pop("max_tokens"), "prompt")
    return Request(kind="completion", prompt_ids=ids, prompt_text=text, max_tokens=max_tokens,
                   echo=_bool(params, "echo"), **c)


def _tokenize(model, text: str, add_bos: bool, param: str) -> list[int]:
    try:
        return model.tokenize(text, add_bos=add_bos)
    except ValueError as e:  # e.g. a lone surrogate ("\ud800" is valid JSON, not valid text)
        raise InvalidRequestError(f"'{param}': {e}", param) from None


def _message_text(m: dict, i: int) -> str:
    content = m.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                kind = p.get("type") if isinstance(p, dict) else json_type_name(p)
                raise InvalidRequestError(f"messages[{i}].content: only text parts are supported, got {kind!r}",
                                          f"messages[{i}].content")
            parts.append(p["text"])
        return "".join(parts)
    raise InvalidRequestError(f"messages[{i}].content must be a string or an array of text parts",
                              f"messages[{i}].content")


def normalize_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI chat messages -> [{'role', 'content'}]: text parts joined, 'developer' read as
    'system'. Which roles are allowed, and where, is the chat template's rule (fold_system)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequestError(f"messages[{i}] must be an object", f"messages[{i}]")
        role = m.get("role")
        if role == "developer":  # OpenAI's newer name for the system role
            role = "system"
        out.append({"role": role, "content": _message_text(m, i)})
    return out


def render_chat(model, messages: list[dict[str, str]]) -> str:
    """The chat prompt text (Model.apply_chat_template: one rule for system messages everywhere)."""
    return model.apply_chat_template(messages)


def parse_chat(model, params: dict) -> Request:
    """Validate /v1/chat/completions parameters into a Request."""
    _unknown(params, _CHAT)
    c = _common(params, model, "chat", DEFAULT_MAX_TOKENS)
    for name in ("tools", "functions"):
        if params.get(name):
            raise InvalidRequestError(f"'{name}' (tool calling) is not supported", name)
    tc = params.get("tool_choice")
    if tc not in (None, "none", "auto"):
        raise InvalidRequestError("'tool_choice' is not supported (no tool calling)", "tool_choice")
    messages = normalize_messages(params.get("messages"))
    try:
        text = render_chat(model, messages)
    except ChatTemplateError as e:
        raise InvalidRequestError(str(e), e.param or "messages") from None
    ids = _tokenize(model, text, False, "messages")
    max_tokens = _check_fits(model, ids, c.pop("max_tokens"), "messages")
    return Request(kind="chat", prompt_ids=ids, prompt_text=text, max_tokens=max_tokens, echo=False, **c)


def _unknown(params: dict, known: set) -> None:
    extra = sorted(set(params) - known)
    if extra:
        raise InvalidRequestError(f"unsupported parameter '{extra[0]}': gemma_cpp does not implement it, and "
                                  f"ignoring it could change the output", extra[0])


__all__ = ["IGNORED_FIELDS", "InvalidRequestError", "Request", "constraint", "model_id", "normalize_messages", "parse_chat",
           "parse_completion", "render_chat"]
