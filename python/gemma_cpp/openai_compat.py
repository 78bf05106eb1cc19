"""OpenAI-shaped completions on a `Model`, as llama-cpp-python's `Llama` offers them.

    from gemma_cpp import Model
    llm = Model("gemma-3-270m-it.gcpp")
    out = llm.create_chat_completion([{"role": "user", "content": "Hi!"}], max_tokens=64)
    print(out["choices"][0]["message"]["content"])
    for chunk in llm.create_completion("Once upon a time", max_tokens=32, stream=True):
        print(chunk["choices"][0]["text"], end="", flush=True)

The same code serves the HTTP server (`gemma_cpp.server`), so the Python results and the
server's JSON have one shape: OpenAI's `text_completion` / `chat.completion` objects (and
`chat.completion.chunk` objects when streaming), with `usage` and a `finish_reason` of
"stop" (EOS, <end_of_turn> or a stop string) or "length" (max_tokens or the context end), as the
C++ Generator reported it (generation.py).

Defaults follow OpenAI's API, not `Model.generate`: temperature 1.0, top_p 1.0, and a fresh
random seed for each call unless `seed` is given (pass temperature=0 for greedy output).
presence_penalty and frequency_penalty are OpenAI's (in [-2, 2], over the generated tokens).
Extensions beyond OpenAI's parameters, named as llama.cpp names them: top_k, min_p,
repeat_penalty (or repetition_penalty), ignore_eos.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

from .generation import Generation
from .params import (DEFAULT_COMPLETION_MAX_TOKENS, DEFAULT_MAX_TOKENS, ContextLengthError, InvalidRequestError,
                     check, json_type_name, resolve_seed)
from .tokenizer import ChatTemplateError


# The generation itself is gemma_cpp.generation's (one place for every front end); its
# `finish_reason` is OpenAI's. The name TextGeneration is kept for existing callers.
TextGeneration = Generation


# ---------------------------------------------------------------------------- parameters
# Fields a request may carry. Everything else gets HTTP 400 naming the field: a field we do not
# implement (grammar, json_schema, mirostat, typical_p, dry_*, n_predict, ...) would change the
# output, and answering 200 with unconstrained text would hide that. IGNORED_FIELDS are sent
# routinely by OpenAI clients and SDKs and do not change the text (listed in docs/server.md).
IGNORED_FIELDS = frozenset({"model", "user", "metadata", "store", "service_tier", "parallel_tool_calls"})
_COMMON = {"max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty",
           "repetition_penalty", "frequency_penalty", "presence_penalty", "seed", "stop", "stream",
           "stream_options", "n", "logprobs", "top_logprobs", "logit_bias", "ignore_eos"} | IGNORED_FIELDS
_COMPLETION = _COMMON | {"prompt", "echo", "suffix", "best_of"}
_CHAT = _COMMON | {"messages", "response_format", "tools", "tool_choice", "functions", "function_call"}


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
    extra: dict[str, Any] = field(default_factory=dict)

    def generation(self, model, cancel: threading.Event | None = None) -> TextGeneration:
        return TextGeneration(model, self.prompt_ids, max_tokens=self.max_tokens, seed=self.seed, stop=self.stop,
                              ignore_eos=self.ignore_eos, cancel=cancel, **self.sampling)


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
    n = params.get("n", 1)
    if n is not None and n != 1:
        raise InvalidRequestError("only n=1 is supported (one choice per request)", "n")
    bo = params.get("best_of")
    if bo not in (None, 1):
        raise InvalidRequestError("only best_of=1 is supported", "best_of")
    lp = params.get("logprobs")
    if lp not in (None, False, 0):
        raise InvalidRequestError("'logprobs' is not supported", "logprobs")
    if params.get("top_logprobs") not in (None, 0):
        raise InvalidRequestError("'top_logprobs' is not supported", "top_logprobs")
    if params.get("logit_bias"):
        raise InvalidRequestError("'logit_bias' is not supported", "logit_bias")
    name = "max_completion_tokens" if params.get("max_completion_tokens") is not None else "max_tokens"
    out["max_tokens"] = _number(params, name, default_max_tokens, "max_new_tokens")
    rp_name = "repetition_penalty" if params.get("repetition_penalty") is not None else "repeat_penalty"
    out["sampling"] = dict(temperature=_number(params, "temperature", 1.0), top_p=_number(params, "top_p", 1.0),
                           top_k=_number(params, "top_k", 0), min_p=_number(params, "min_p", 0.0),
                           repetition_penalty=_number(params, rp_name, 1.0, "repetition_penalty"),
                           presence_penalty=_number(params, "presence_penalty", 0.0),
                           frequency_penalty=_number(params, "frequency_penalty", 0.0))
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
    return out


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
        ids = model.tokenize(prompt, add_bos=True)
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
    rf = params.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise InvalidRequestError("only response_format {'type': 'text'} is supported (no JSON mode or "
                                  "json_schema yet)", "response_format")
    tc = params.get("tool_choice")
    if tc not in (None, "none", "auto"):
        raise InvalidRequestError("'tool_choice' is not supported (no tool calling)", "tool_choice")
    messages = normalize_messages(params.get("messages"))
    try:
        text = render_chat(model, messages)
    except ChatTemplateError as e:
        raise InvalidRequestError(str(e), e.param or "messages") from None
    ids = model.tokenize(text, add_bos=False)
    max_tokens = _check_fits(model, ids, c.pop("max_tokens"), "messages")
    return Request(kind="chat", prompt_ids=ids, prompt_text=text, max_tokens=max_tokens, echo=False, **c)


def _unknown(params: dict, known: set) -> None:
    extra = sorted(set(params) - known)
    if extra:
        raise InvalidRequestError(f"unsupported parameter '{extra[0]}': gemma_cpp does not implement it, and "
                                  f"ignoring it could change the output", extra[0])


# ---------------------------------------------------------------------------- response objects
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(gen: TextGeneration) -> dict[str, int]:
    return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
            "total_tokens": gen.prompt_tokens + gen.completion_tokens}


def _finish(gen: TextGeneration) -> str:
    return "length" if gen.finish_reason == "length" else "stop"  # (a cancelled one is never sent)


def response(req: Request, gen: TextGeneration, rid: str | None = None, created: int | None = None) -> dict:
    """The whole (non-streamed) response object for a finished generation."""
    rid = rid or new_id(req.kind)
    created = created or int(time.time())
    if req.kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": gen.text}, "logprobs": None,
                  "finish_reason": _finish(gen)}
        obj = "chat.completion"
    else:
        text = (req.prompt_text + gen.text) if req.echo else gen.text
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": _finish(gen)}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model_name, "choices": [choice],
            "usage": usage(gen)}


class ChunkMaker:
    """Builds the streamed chunk objects of one response, in OpenAI's shapes."""

    def __init__(self, req: Request):
        self.req = req
        self.id = new_id(req.kind)
        self.created = int(time.time())

    def _chunk(self, choices: list, usage_: dict | None = None, with_usage: bool = False) -> dict:
        obj = "chat.completion.chunk" if self.req.kind == "chat" else "text_completion"
        c = {"id": self.id, "object": obj, "created": self.created, "model": self.req.model_name,
             "choices": choices}
        if self.req.include_usage:
            c["usage"] = usage_ if with_usage else None
        return c

    def _choice(self, piece: str | None, finish: str | None, role: bool = False) -> dict:
        if self.req.kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if piece is not None:
                delta["content"] = piece
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"text": piece or "", "index": 0, "logprobs": None, "finish_reason": finish}

    def first(self) -> dict | None:
        """The opening chunk (chat: the assistant role; completions with echo: the prompt)."""
        if self.req.kind == "chat":
            return self._chunk([self._choice("", None, role=True)])
        if self.req.echo and self.req.prompt_text:
            return self._chunk([self._choice(self.req.prompt_text, None)])
        return None

    def piece(self, text: str) -> dict:
        return self._chunk([self._choice(text, None)])

    def last(self, gen: TextGeneration) -> list[dict]:
        """The closing chunk with finish_reason, then (with include_usage) the usage chunk."""
        if self.req.kind == "chat":
            out = [self._chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": _finish(gen)}])]
        else:
            out = [self._chunk([self._choice("", _finish(gen))])]
        if self.req.include_usage:
            out.append(self._chunk([], usage(gen), with_usage=True))
        return out


def stream_chunks(req: Request, gen: TextGeneration) -> Iterator[dict]:
    """The chunk objects of a streamed response, generating as they are consumed."""
    mk = ChunkMaker(req)
    try:
        first = mk.first()
        if first is not None:
            yield first
        for piece in gen:
            yield mk.piece(piece)
        yield from mk.last(gen)
    finally:
        gen.close()


# ---------------------------------------------------------------------------- Python API
def create_completion(model, prompt, /, **params):
    """Complete `prompt` (a string or a list of token ids), llama-cpp-python style.

    Parameters (all optional, OpenAI's names): max_tokens=16, temperature=1.0, top_p=1.0,
    presence_penalty=0.0, frequency_penalty=0.0, seed (default: random), stop (a string or list),
    stream=False, echo=False, n=1,
    stream_options={"include_usage": bool}, model (the name to report); extensions: top_k=0,
    min_p=0.0, repeat_penalty=1.0 (alias repetition_penalty), ignore_eos=False.
    Returns a `text_completion` dict, or with stream=True an iterator of chunk dicts.
    Bad or unsupported parameters raise InvalidRequestError (a ValueError naming `.param`).
    """
    req = parse_completion(model, dict(params, prompt=prompt), )
    return _run(model, req)


def create_chat_completion(model, messages, /, **params):
    """Answer the chat `messages` (OpenAI-style dicts), llama-cpp-python style.

    Takes create_completion's parameters, except that max_tokens defaults to 512
    (params.DEFAULT_MAX_TOKENS) and there is no echo. Returns a `chat.completion` dict, or with stream=True an
    iterator of `chat.completion.chunk` dicts.
    """
    req = parse_chat(model, dict(params, messages=messages), )
    return _run(model, req)


def _run(model, req: Request):
    try:
        gen = req.generation(model)
    except ContextLengthError as e:
        raise InvalidRequestError(str(e), "prompt", "context_length_exceeded") from None
    if req.stream:
        return stream_chunks(req, gen)
    try:
        gen.run()
    finally:
        gen.close()
    return response(req, gen)


__all__ = ["create_completion", "create_chat_completion", "InvalidRequestError", "TextGeneration",
           "parse_completion", "parse_chat", "response", "stream_chunks", "ChunkMaker", "model_id",
           "normalize_messages", "render_chat"]
