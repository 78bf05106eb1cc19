"""OpenAI's response side: `text_completion` / `chat.completion` objects, the streamed
`chat.completion.chunk` objects, and llama-cpp-python's `create_completion` /
`create_chat_completion` on a Model.

    from gemma_cpp import Model
    llm = Model("gemma-3-270m-it.gcpp")
    out = llm.create_chat_completion([{"role": "user", "content": "Hi!"}], max_tokens=64)
    print(out["choices"][0]["message"]["content"])
    for chunk in llm.create_completion("Once upon a time", max_tokens=32, stream=True):
        print(chunk["choices"][0]["text"], end="", flush=True)

The same code serves the HTTP server (gemma_cpp.openai.server), so the Python results and the
server's JSON have one shape, with `usage` and a `finish_reason` of "stop" (EOS, <end_of_turn>
or a stop string) or "length" (max_tokens or the context end), as the C++ Generator reported it
(generation.py).

Works on any Model passed in; never imports model.py (gemma_cpp.model imports this module for
its create_*completion methods).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Iterator

from ..batching import is_prompt_list, run_batch
from ..generation import Generation
from ..params import SEED_LIMIT, ContextLengthError, InvalidRequestError, check
from .protocol import Request, parse_chat, parse_completion


# ---------------------------------------------------------------------------- response objects
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(gens: Generation | list[Generation]) -> dict[str, int]:
    """OpenAI's usage of a response: the prompt once, and the tokens of every choice."""
    gens = gens if isinstance(gens, list) else [gens]
    done = sum(g.completion_tokens for g in gens)
    return {"prompt_tokens": gens[0].prompt_tokens, "completion_tokens": done,
            "total_tokens": gens[0].prompt_tokens + done}


def choices(req: Request, gens: list[Generation]) -> list[Generation]:
    """The generation of each of the n choices: the runs, or the one greedy run n times."""
    return gens if len(gens) == req.n else gens[:1] * req.n


def _finish(gen: Generation) -> str:
    return "length" if gen.finish_reason == "length" else "stop"  # (a cancelled one is never sent)


# ---------------------------------------------------------------------------- logprobs
def _entry(tb: list, tid: int, lp: float) -> dict:
    b = tb[tid]
    return {"token": b.decode("utf-8", errors="replace"), "logprob": lp, "bytes": list(b)}


def logprobs_object(req: Request, model, entries: list, offset: int = 0) -> dict | None:
    """OpenAI's `logprobs` of a choice (or chunk) for `entries` (Generation.logprobs items).
    Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": None};
    completions: {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"},
    text_offset counting characters from `offset`. None when logprobs were not asked for."""
    if req.logprobs is None:
        return None
    tb, _ = model.tokenizer.token_bytes()
    if req.kind == "chat":
        return {"content": [dict(_entry(tb, tid, lp), top_logprobs=[_entry(tb, i, v) for i, v in top])
                            for tid, lp, top in entries], "refusal": None}
    tokens, offsets = [], []
    for tid, _, _ in entries:
        offsets.append(offset)
        tokens.append(tb[tid].decode("utf-8", errors="replace"))
        offset += len(tokens[-1])
    return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [{tb[i].decode("utf-8", errors="replace"): v for i, v in top} for _, _, top in entries],
            "text_offset": offsets}


def _choice(req: Request, gen: Generation, index: int) -> dict:
    lp = logprobs_object(req, gen.model, gen.logprobs)
    if req.kind == "chat":
        return {"index": index, "message": {"role": "assistant", "content": gen.text}, "logprobs": lp,
                "finish_reason": _finish(gen)}
    text = (req.prompt_text + gen.text) if req.echo else gen.text
    return {"text": text, "index": index, "logprobs": lp, "finish_reason": _finish(gen)}


def response(req: Request, gens: Generation | list[Generation], rid: str | None = None,
             created: int | None = None) -> dict:
    """The whole (non-streamed) response object for the finished generation(s) of a request
    (req.runs of them: see choices())."""
    gens = choices(req, gens if isinstance(gens, list) else [gens])
    obj = "chat.completion" if req.kind == "chat" else "text_completion"
    return {"id": rid or new_id(req.kind), "object": obj, "created": created or int(time.time()),
            "model": req.model_name, "choices": [_choice(req, g, i) for i, g in enumerate(gens)],
            "usage": usage(gens)}


class ChunkMaker:
    """Builds the streamed chunk objects of one response, in OpenAI's shapes. With n > 1 the
    choices stream one after another (each chunk names its choice's `index`): first(), then per
    run piece() ... last(gen); last() of the final run adds the copies of a greedy run and the
    usage chunk."""

    def __init__(self, req: Request):
        self.req = req
        self.id = new_id(req.kind)
        self.created = int(time.time())
        self.index = 0  # the choice being streamed
        self.done: list[Generation] = []  # the finished runs
        self.sent_logprobs = 0  # tokens whose logprobs went out in earlier chunks (of this choice)
        self.offset = 0  # completions' text_offset of the next token

    def _chunk(self, choices: list, usage_: dict | None = None, with_usage: bool = False) -> dict:
        obj = "chat.completion.chunk" if self.req.kind == "chat" else "text_completion"
        c = {"id": self.id, "object": obj, "created": self.created, "model": self.req.model_name,
             "choices": choices}
        if self.req.include_usage:
            c["usage"] = usage_ if with_usage else None
        return c

    def _logprobs(self, gen: Generation | None, upto: int | None = None) -> dict | None:
        """The logprobs of the tokens generated since the last chunk that carried some (up to the
        first `upto` tokens: what the generation had when it produced the piece)."""
        if gen is None or self.req.logprobs is None:
            return None
        new = gen.logprobs[self.sent_logprobs:upto]
        if not new:
            return None
        self.sent_logprobs += len(new)
        out = logprobs_object(self.req, gen.model, new, self.offset)
        if self.req.kind != "chat":
            self.offset = out["text_offset"][-1] + len(out["tokens"][-1])
        return out

    def _choice(self, piece: str | None, finish: str | None, role: bool = False,
                gen: Generation | None = None, upto: int | None = None) -> dict:
        lp = self._logprobs(gen, upto)
        if self.req.kind == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if piece is not None:
                delta["content"] = piece
            return {"index": self.index, "delta": delta, "logprobs": lp, "finish_reason": finish}
        return {"text": piece or "", "index": self.index, "logprobs": lp, "finish_reason": finish}

    def first(self) -> dict | None:
        """The opening chunk (chat: the assistant role; completions with echo: the prompt)."""
        if self.req.kind == "chat":
            return self._chunk([self._choice("", None, role=True)])
        if self.req.echo and self.req.prompt_text:
            return self._chunk([self._choice(self.req.prompt_text, None)])
        return None

    def piece(self, text: str, gen: Generation | None = None, upto: int | None = None) -> dict:
        """A chunk of text; given the running `gen`, with the logprobs of its tokens so far (of its
        first `upto` tokens, when another thread may be adding more)."""
        return self._chunk([self._choice(text, None, gen=gen, upto=upto)])

    def last(self, gen: Generation) -> list[dict]:
        """The closing chunk of the current choice with finish_reason (and the logprobs not sent
        yet); then the next choice's opening chunk, or after the final run the copies of a greedy
        run and (with include_usage) the usage chunk."""
        out = [self._chunk([self._choice(None if self.req.kind == "chat" else "", _finish(gen), gen=gen)])]
        self.done.append(gen)
        while self.index + 1 < self.req.n:
            self.index += 1
            self.sent_logprobs = self.offset = 0
            if len(self.done) < self.req.runs:  # another run follows: open its choice
                out += [c for c in [self.first()] if c is not None]
                return out
            out += [c for c in [self.first(), self.piece(gen.text, gen)] if c is not None]  # a copy
            out.append(self._chunk([self._choice(None if self.req.kind == "chat" else "", _finish(gen))]))
        if self.req.include_usage:
            out.append(self._chunk([], usage(choices(self.req, self.done)), with_usage=True))
        return out


def stream_chunks(req: Request, gen: Generation) -> Iterator[dict]:
    """The chunk objects of a streamed response, generating as they are consumed (`gen` is the
    first choice's generation; with n > 1 the others run on its Model after it)."""
    mk = ChunkMaker(req)
    first = mk.first()
    if first is not None:
        yield first
    for i in range(req.runs):
        if i:
            gen = req.generation(gen.model, index=i)
        try:
            for piece in gen:
                yield mk.piece(piece, gen)
            yield from mk.last(gen)
        finally:
            gen.close()


# ---------------------------------------------------------------------------- Python API
def create_completion(model, prompt, /, **params):
    """Complete `prompt` (a string or a list of token ids), llama-cpp-python style.

    Parameters (all optional, OpenAI's names): max_tokens=16, temperature=1.0, top_p=1.0,
    presence_penalty=0.0, frequency_penalty=0.0, seed (default: random), stop (a string or list),
    stream=False, echo=False, n=1 (choices, 1-128: choice i samples with seed + i, one after another
    on this Model reusing the prompt's cache; with temperature 0 one run answered n times),
    stream_options={"include_usage": bool}, logprobs (chat: True with top_logprobs=0..20;
    completions: an int 0..20, the alternatives per token), logit_bias={token id: -100..100},
    model (the name to report); extensions: top_k=0,
    min_p=0.0, repeat_penalty=1.0 (alias repetition_penalty), ignore_eos=False; output constraints
    (one at most; docs/structured.md): response_format={"type": "json_object"} or {"type":
    "json_schema", "json_schema": {"schema": {...}}}, json_schema={...}, regex="...", grammar="..."
    (Lark or GBNF).
    Returns a `text_completion` dict, or with stream=True an iterator of chunk dicts.
    A list of several prompts (strings, or token id lists: OpenAI's array of prompts) is decoded
    as a batch (docs/batching.md) and answered with one choice per prompt (`index` i), prompt i
    sampling with seed + i; not with stream=True.
    Bad or unsupported parameters raise InvalidRequestError (a ValueError naming `.param`).
    """
    if is_prompt_list(prompt) and len(prompt) > 1:
        return _complete_batch(model, list(prompt), params)
    req = parse_completion(model, dict(params, prompt=prompt), )
    return _run(model, req)


def _complete_batch(model, prompts: list, params: dict) -> dict:
    if params.get("stream"):
        raise InvalidRequestError("stream=True takes one prompt; an array of prompts is answered whole", "stream")
    seed = params.get("seed")
    reqs = []
    for i, p in enumerate(prompts):
        kw = dict(params, prompt=p)
        if seed is not None:
            kw["seed"] = (check("seed", seed) + i) % SEED_LIMIT
        reqs.append(parse_completion(model, kw))
    gens = run_batch(model, [(r.prompt_ids, lambda lane, r=r: r.generation(lane, text=False)) for r in reqs],
                     text=True)
    rid, created = new_id("completion"), int(time.time())
    out = response(reqs[0], gens[0], rid, created)
    out["choices"] = []
    for i, (r, g) in enumerate(zip(reqs, gens)):
        choice = response(r, g, rid, created)["choices"][0]
        choice["index"] = i
        out["choices"].append(choice)
    out["usage"] = {k: sum(usage(g)[k] for g in gens) for k in out["usage"]}
    return out


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
    gens = []
    for i in range(req.runs):  # one after another: each reuses the prompt's cached keys and values
        if i:
            gen = req.generation(model, index=i)
        try:
            gen.run()
        finally:
            gen.close()
        gens.append(gen)
    return response(req, gens)


__all__ = ["ChunkMaker", "choices", "create_chat_completion", "create_completion", "new_id", "response",
           "stream_chunks", "usage"]
