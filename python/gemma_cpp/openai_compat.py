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
"stop" (EOS, <end_of_turn> or a stop string) or "length" (max_tokens or the context end).

Defaults follow OpenAI's API, not `Model.generate`: temperature 1.0, top_p 1.0, and a fresh
random seed for each call unless `seed` is given (pass temperature=0 for greedy output).
Extensions beyond OpenAI's parameters, named as llama.cpp names them: top_k, min_p,
repeat_penalty (or repetition_penalty), ignore_eos.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .model import ContextLengthError
from .params import (DEFAULT_COMPLETION_MAX_TOKENS, DEFAULT_MAX_TOKENS, InvalidParameterType,
                     InvalidRequestError, check, resolve_seed)
from .tokenizer import ChatTemplateError, StopMatcher, StreamDecoder


# ---------------------------------------------------------------------------- generation core
class _Progress:
    """What a running generation has produced so far (kept apart from TextGeneration so that the
    generator running it does not refer back to its TextGeneration: dropping one then frees the
    Model at once, without waiting for the garbage collector to break a cycle)."""

    __slots__ = ("completion_tokens", "finish_reason", "text_parts", "t_start", "t_first", "t_end")

    def __init__(self):
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.text_parts: list[str] = []
        self.t_start = self.t_first = self.t_end = None


class TextGeneration:
    """Generates text from prompt token ids, counting tokens and recording why it ended.

    Iterate it for text pieces (which join to the whole text); afterwards `finish_reason`
    ("stop" or "length", or "cancelled" when `cancel` was set), `completion_tokens` and the
    timings are filled in. Iterate and close it in one thread: the Model's lock is held
    while it runs. `close()` (or dropping it) stops it early and frees the model.
    """

    def __init__(self, model, prompt_ids: Sequence[int], *, max_tokens: int, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop: Sequence[str] | None = None, ignore_eos: bool = False,
                 cancel: threading.Event | None = None):
        self.model = model
        self.prompt_ids = list(prompt_ids)
        self.prompt_tokens = len(self.prompt_ids)
        self.max_tokens = max_tokens
        self.stop = [s for s in (stop or []) if s]
        self.cancel = cancel
        self._p = _Progress()
        # Validates every parameter now (before anything streams); runs on first next().
        self._ids = model.generate(self.prompt_ids, max_new_tokens=max_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, min_p=min_p,
                                   repetition_penalty=repetition_penalty, seed=seed, stream=True,
                                   ignore_eos=ignore_eos)
        self._iter = _generate_text(self._p, self._ids, StreamDecoder(model.tokenizer, self.prompt_ids),
                                    StopMatcher(self.stop), cancel,
                                    min(max_tokens, model.max_seq_len - self.prompt_tokens))

    completion_tokens = property(lambda self: self._p.completion_tokens)
    finish_reason = property(lambda self: self._p.finish_reason)
    text_parts = property(lambda self: self._p.text_parts)
    t_start = property(lambda self: self._p.t_start)
    t_first = property(lambda self: self._p.t_first)
    t_end = property(lambda self: self._p.t_end)

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

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    def close(self) -> None:
        self._iter.close()
        self._ids.close()

    def run(self) -> str:
        """Generate to the end; returns the text."""
        for _ in self:
            pass
        return self.text


def _generate_text(p: _Progress, ids: Iterator[int], dec: StreamDecoder, matcher: StopMatcher,
                   cancel: threading.Event | None, limit: int) -> Iterator[str]:
    """The text pieces of a generation, recording progress in `p`. `limit` is where it ends
    for length (max_tokens, or the room left in the context)."""
    p.t_start = time.perf_counter()
    hit = False
    try:
        for tok in ids:
            if p.t_first is None:
                p.t_first = time.perf_counter()
            p.completion_tokens += 1
            piece, hit = matcher.feed(dec.push(tok))
            if piece:
                p.text_parts.append(piece)
                yield piece
            if hit:
                break
            if cancel is not None and cancel.is_set():
                p.finish_reason = "cancelled"
                return
        if not hit:
            piece, hit = matcher.feed(dec.flush())
            if not hit:
                piece += matcher.finish()
            if piece:
                p.text_parts.append(piece)
                yield piece
        p.finish_reason = "length" if not hit and p.completion_tokens >= limit else "stop"
    finally:
        p.t_end = time.perf_counter()
        if p.finish_reason is None:
            p.finish_reason = "cancelled"
        ids.close()


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


def _jtype(v) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a number", list: "an array",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def _bool(params, name, default=False) -> bool:
    v = params.get(name)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise InvalidRequestError(f"'{name}' must be a boolean, got {_jtype(v)}", name)
    return v


def _common(params: dict, model, kind: str, default_max_tokens: int | None) -> dict:
    out: dict[str, Any] = {}
    n = params.get("n", 1)
    if n is not None and n != 1:
        raise InvalidRequestError("only n=1 is supported (one choice per request)", "n")
    bo = params.get("best_of")
    if bo not in (None, 1):
        raise InvalidRequestError("only best_of=1 is supported", "best_of")
    for name in ("frequency_penalty", "presence_penalty"):
        v = params.get(name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InvalidParameterType(f"{name} must be a number, got {_jtype(v)}", name)
        if v not in (None, 0):
            raise InvalidRequestError(f"'{name}' is not supported (use repeat_penalty)", name)
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
                           repetition_penalty=_number(params, rp_name, 1.0, "repetition_penalty"))
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
                kind = p.get("type") if isinstance(p, dict) else _jtype(p)
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
    return "length" if gen.finish_reason == "length" else "stop"


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
    seed (default: random), stop (a string or list), stream=False, echo=False, n=1,
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
