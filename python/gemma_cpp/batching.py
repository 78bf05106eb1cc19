"""Batched generation: several generations decoded together, one weight pass per step.

Decode on a CPU is bound by memory bandwidth: each token reads every weight once. A `Batcher`
keeps up to `max_batch` generations running, each on a lane of its own (a Model clone: shared
weights, its own KV cache), and advances them together: each step runs the pending token of
every running generation through one batched forward pass (`_core.BatchDecoder`: the matmuls
take all B tokens at once, attention runs per sequence against its own cache), then each one
samples its next token exactly as it would alone. A generation's tokens and logits do not depend
on the batch it shares steps with (tests/test_batching.py), so greedy output is what generating
each prompt alone gives, and a sampled one is too for the same seed.

Continuous batching: requests join between steps (when a lane is free; the others wait first
come, first served) and leave when they end (end id, stop string, max tokens, cancel), freeing
their lane for the next. A new request's prompt is prefilled by itself, at most `PREFILL_CHUNK`
tokens a step, so a long prompt does not stall the others' streams; a lane whose cache already
holds a prefix of the prompt is preferred, and that prefix is not run again.

Used by `Model.generate([p1, p2, ...])` (driven in the caller's thread) and by the server
(gemma_cpp/openai/server.py: one thread drives the batch; requests come from the event loop).
Each request is a `Generation` (generation.py) on its lane, iterated one token per step; its
text (StreamDecoder, stop strings) is assembled here, one token at a time.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable

from . import _core
from .generation import Generation, stop_strings
from .params import SEED_LIMIT, InvalidRequestError, check
from .tokenizer import StopMatcher, StreamDecoder

PREFILL_CHUNK = 256  # prompt tokens a request prefills per step (the C++ Session's chunk)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchRequest:
    """One generation in a Batcher: `make(lane)` builds its Generation once it has a lane.

    on_event(kind, value), called from the thread driving the batch: ("piece", text) for each text
    piece (or ("id", token id) with text=False), then ("done", Generation) or ("error", exception).
    `cancel` (a threading.Event) is looked at between steps, also while the request waits."""

    def __init__(self, prompt_ids: list[int], make: Callable[[Any], Generation], *, text: bool = True,
                 on_event: Callable[[str, Any], None] | None = None, cancel: threading.Event | None = None):
        self.prompt_ids = [int(t) for t in prompt_ids]
        self.make = make
        self.text = text
        self.on_event = on_event or (lambda kind, value: None)
        self.cancel = cancel or threading.Event()
        self.gen: Generation | None = None
        self.error: BaseException | None = None
        self.done = False
        self._ids = None  # the Generation's id iterator, one model token per next()
        self._lane = None
        self._prefilled = 0  # prompt tokens in the lane's cache before the Generation starts
        self._started = False
        self._dec = self._stop = None

    @property
    def decoding(self) -> bool:
        return self._started and not self.done

    # -- the driving thread only --
    def _attach(self, lane) -> None:
        self._lane = lane
        self.gen = self.make(lane)
        self._ids = iter(self.gen)
        if self.text:
            self._dec = StreamDecoder(lane.tokenizer, self.prompt_ids)
            self._stop = StopMatcher(self.gen.stop)
        # Reuse the longest prefix the lane's cache holds (Generator.start would too), then
        # prefill the rest a chunk per step; start() runs the last piece and samples.
        s = lane._session
        common = _common_prefix(list(s.tokens), self.prompt_ids[:-1])
        if common and s.can_truncate(common):
            s.truncate(common)
        else:
            s.reset()
            common = 0
        self._prefilled = common

    def _prefill_step(self) -> None:
        if self.cancel.is_set():  # before its Generation started: nothing to report but that
            self._fail(Cancelled())
            return
        rest = len(self.prompt_ids) - self._prefilled
        if rest > PREFILL_CHUNK:
            chunk = self.prompt_ids[self._prefilled:self._prefilled + PREFILL_CHUNK]
            self._lane._session.eval(chunk, all_logits=False)
            self._prefilled += len(chunk)
            return
        self._started = True
        self._advance()  # start(): the remaining prompt tokens, then the first sampled token

    def _advance(self) -> None:
        """One model token: sample it (its forward already ran in the batch) and pass on its text."""
        try:
            tok = next(self._ids)
        except StopIteration:
            self._finish(hit=False)
            return
        if not self.text:
            self.on_event("id", tok)
            return
        piece, hit = self._stop.feed(self._dec.push(tok))
        if piece:
            self.gen._p.text_parts.append(piece)
            self.on_event("piece", piece)
        if hit:
            self._ids.close()  # ends the Generation (its lane is free again)
            self._finish(hit=True)

    def _finish(self, hit: bool) -> None:
        p = self.gen._p
        if self.text and not hit and p.stop_reason != "cancelled":
            piece, hit = self._stop.feed(self._dec.flush())
            if not hit:
                piece += self._stop.finish()
            if piece:
                p.text_parts.append(piece)
                self.on_event("piece", piece)
        if hit:
            p.stop_reason = "stop"
        self.done = True
        self.on_event("done", self.gen)

    def _fail(self, e: BaseException) -> None:
        if self._ids is not None:
            self._ids.close()
        self.error = e
        self.done = True
        self.on_event("error", e)

    def _close(self) -> None:
        """Ends the Generation where it stands (stop_reason stays None: the caller gave up)."""
        if self._ids is not None:
            self._ids.close()
        self.done = True


class Batcher:
    """Runs up to `max_batch` generations of `model` together (see the module's doc).

    One thread calls step() (Model.generate, or the server's batch thread); submit(), waiting()
    and wait_for_work() may be called from any thread."""

    def __init__(self, model, max_batch: int, n_threads: int | None = None):
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        self.model = model
        self.max_batch = max_batch
        self.decoder = _core.BatchDecoder(model._core, max_batch, n_threads or model.n_threads)
        self.lanes: list = []   # every lane made so far (Model clones, made as needed)
        self.idle: list = []
        self.active: list[BatchRequest] = []
        self._waiting: collections.deque[BatchRequest] = collections.deque()
        self._cv = threading.Condition()
        self.steps = 0   # batched decode passes run
        self.tokens = 0  # tokens they ran (tokens / steps: the mean batch)

    def set_max_batch(self, max_batch: int) -> None:
        """Runs at most max_batch requests at once from the next step on (between steps only)."""
        if max_batch > self.decoder.max_batch:
            self.decoder = _core.BatchDecoder(self.model._core, max_batch, self.decoder.n_threads)
        self.max_batch = max_batch

    def _new_lane(self):
        m = self.model
        lane = type(m)(m.path, n_threads=m.n_threads, max_seq_len=m.max_seq_len, seed=m._seed,
                       kv_dtype=m.kv_dtype, _share=m)
        lane._warned_base_chat = True  # warned once, by the model (or the server's start)
        self.lanes.append(lane)
        return lane

    def submit(self, req: BatchRequest) -> None:
        """Queue a request (any thread); it joins the batch at a step with a free lane."""
        with self._cv:
            self._waiting.append(req)
            self._cv.notify_all()

    def waiting(self) -> int:
        with self._cv:
            return len(self._waiting)

    def wait_for_work(self, timeout: float | None = None) -> bool:
        """Blocks until a request is running or waiting (or timeout); returns whether one is."""
        with self._cv:
            return self._cv.wait_for(lambda: self.active or self._waiting, timeout)

    def _admit(self) -> None:
        while len(self.active) < self.max_batch:
            with self._cv:
                if not self._waiting:
                    return
                req = self._waiting.popleft()
            if req.cancel.is_set():
                req.done = True
                req.on_event("error", Cancelled())
                continue
            if not self.idle:
                self.idle.append(self._new_lane())
            best = max(range(len(self.idle)),
                       key=lambda i: _common_prefix(list(self.idle[i]._session.tokens), req.prompt_ids))
            lane = self.idle.pop(best)
            try:
                req._attach(lane)
            except Exception as e:  # noqa: BLE001 - a bad request (e.g. its grammar) fails alone
                self.idle.append(lane)
                req._fail(e)
                continue
            self.active.append(req)

    def step(self) -> None:
        """Admit waiting requests, run one batched decode step, advance every running request by one
        token (and each prefilling one by a chunk); finished ones leave and free their lane.
        KeyboardInterrupt (Ctrl-C inside the batched pass) propagates with nothing committed."""
        self._admit()
        decoding = [r for r in self.active if r.decoding]
        if decoding:
            ran = self.decoder.forward_pending([r._lane._session for r in decoding])
            self.steps += ran > 0
            self.tokens += ran
        for r in list(self.active):
            try:
                if r.decoding:
                    r._advance()
                else:
                    r._prefill_step()
            except Exception as e:  # noqa: BLE001 - that request fails; the others go on
                r._fail(e)
            if r.done:
                self.active.remove(r)
                self.idle.append(r._lane)

    def fail_active(self, e: BaseException) -> None:
        """Every running request fails with `e` (the batched pass itself failed) and leaves."""
        for r in self.active:
            r._fail(e)
            self.idle.append(r._lane)
        self.active.clear()

    def close(self) -> None:
        """Ends every running and waiting request (their Generations close)."""
        for r in self.active:
            r._close()
            self.idle.append(r._lane)
        self.active.clear()
        with self._cv:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for r in waiting:
            r.done = True


class Cancelled(Exception):
    """A request cancelled before its generation started (reported as its "error" event)."""


# ---------------------------------------------------------------------------- Model.generate([...])
DEFAULT_BATCH_SIZE = 8  # generate([...])'s sequences at once (each has a lane: a KV cache and scratch)


def is_prompt_list(prompt) -> bool:
    """Whether generate's prompt is a list of prompts (strings, or token id sequences), not one."""
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, (list, tuple)):
        return False
    return any(isinstance(p, str) or (hasattr(p, "__len__") and not isinstance(p, (bytes, bytearray)))
               for p in prompt)


def _seeds(n: int, seed, model_seed) -> list:
    """Prompt i's seed: seed[i] from a list; else (seed or the Model's) + i; None: random each."""
    if isinstance(seed, (list, tuple)):
        if len(seed) != n:
            raise InvalidRequestError(f"seed: a list of {len(seed)} seeds for {n} prompts", "seed")
        return [check("seed", s) for s in seed]
    base = model_seed if seed is None else check("seed", seed)
    return [None] * n if base is None else [(base + i) % SEED_LIMIT for i in range(n)]


def generate_batch(model, prompts, *, batch_size: int | None = None, stream: bool = False, seed=None,
                   max_new_tokens: int, add_bos: bool = True, stop=None, logprobs: bool = False,
                   top_logprobs: int = 0, **params) -> list:
    """Model.generate on a list of prompts (see its doc): the list of results, in order."""
    if stream:
        raise ValueError("stream=True takes one prompt; a list of prompts returns a list of results")
    if params.get("speculative") is not None or params.get("draft_model") is not None:
        raise ValueError("speculative decoding takes one prompt; a list of prompts is decoded in batches")
    texts = [isinstance(p, str) for p in prompts]
    if any(texts) and not all(texts):
        raise TypeError("generate: a list of prompts must hold only strings or only token id lists")
    as_text = bool(texts) and texts[0]
    stop = stop_strings(stop)
    if stop and not as_text:
        raise ValueError("stop strings apply to text prompts; with token ids, check the ids yourself")
    top_logprobs = check("top_logprobs", top_logprobs)
    if top_logprobs and not logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs=True", "top_logprobs")
    size = DEFAULT_BATCH_SIZE if batch_size is None else check("batch_size", batch_size)
    ids = [model.tokenize(p, add_bos=add_bos) if as_text else model._check_ids(p) for p in prompts]
    for i, p in enumerate(ids):
        if not p:
            raise ValueError(f"generate: prompt {i} is empty (give text or at least one token id)")
    seeds = _seeds(len(ids), seed, model._seed)
    kw = dict(params, max_tokens=check("max_new_tokens", max_new_tokens), stop=stop,
              logprobs=top_logprobs if logprobs else None, text=False)

    def make(i: int):
        return lambda lane: Generation(lane, ids[i], seed=seeds[i], **kw)

    gens = run_batch(model, [(ids[i], make(i)) for i in range(len(ids))], text=as_text, batch_size=size)
    return [g.text if as_text else g.ids for g in gens]


def run_batch(model, requests: list, *, text: bool, batch_size: int = DEFAULT_BATCH_SIZE) -> list[Generation]:
    """Runs (prompt ids, make(lane) -> Generation) pairs to the end in batches of up to batch_size,
    in this thread, holding the Model's lock; returns the finished Generations in order. The first
    request that fails (a bad parameter, a prompt too long) ends the run and its error is raised.
    The batch's lanes stay with the Model for the next call."""
    results: list = [None] * len(requests)
    failed: list[BaseException] = []

    def on_event(i: int):
        def ev(kind: str, value) -> None:
            if kind == "done":
                results[i] = value
            elif kind == "error":
                failed.append(value)
        return ev

    with model._lock.hold():
        b = model.__dict__.get("_batcher")
        if b is None:
            b = model._batcher = Batcher(model, batch_size)
        b.set_max_batch(min(batch_size, max(1, len(requests))))
        if b.decoder.n_threads != model.n_threads:
            b.decoder.n_threads = model.n_threads
        try:
            for i, (ids, make) in enumerate(requests):
                b.submit(BatchRequest(ids, make, text=text, on_event=on_event(i)))
            while (b.active or b.waiting()) and not failed:
                b.step()
        finally:
            b.close()
    if failed:
        raise failed[0]
    return results


__all__ = ["Batcher", "BatchRequest", "Cancelled", "PREFILL_CHUNK", "generate_batch", "is_prompt_list", "run_batch"]
