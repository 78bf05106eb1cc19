"""An OpenAI-compatible HTTP server for a gemma_cpp model (FastAPI + uvicorn: the [server] extra).

    gemma-cpp serve model.gcpp --port 8080 --parallel 2

Routes: POST /v1/chat/completions, POST /v1/completions (stream or not), GET (and HEAD)
/v1/models, /v1/models/{id}, /health, and the chat page at / (webchat.py). Errors have OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`; request limits (body size, JSON depth) and the
answer to unexpected exceptions live in guard.py.

Concurrency (continuous batching, gemma_cpp/batching.py): one thread decodes up to N requests
together (N = --parallel), each on a lane of its own (a `Model.clone()`: its own KV cache; the
weights are mapped once and shared); every decode step reads the weights once for all of them.
A request joins the batch between steps when a lane is free (preferring the lane whose cache
already holds the longest prefix of its prompt, so multi-turn chats reuse their cache) or waits
in a first-come queue; its prompt is prefilled a chunk per step, so others keep streaming. The
event loop only relays text. A client that disconnects leaves the batch at the next step and
frees its lane.

The Model is passed in (`gemma-cpp serve` loads it: gemma_cpp/cli/serve.py); like the rest of
the OpenAI layer this module never imports model.py.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import os
import socket
import sys
import threading
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..batching import Batcher, BatchRequest, Cancelled
from ..params import InvalidRequestError
from . import protocol, responses, webchat
from .guard import DEFAULT_MAX_REQUEST_BYTES, Guard, JSONBodyError, error_body, parse_json

Model = Any  # a gemma_cpp.Model (passed in; this layer does not import model.py)


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


class BatchLoop:
    """The server's decode loop: one thread drives a Batcher (batching.py) over the model, so
    concurrent requests share each decode step's weight pass (continuous batching: a request
    joins between steps when one of the `max_batch` lanes is free, else waits first come, first
    served, and leaves when it ends). Requests come from the event loop (submit)."""

    def __init__(self, model: Model, max_batch: int):
        self.batcher = Batcher(model, max_batch)
        self._stop = False
        self.thread = threading.Thread(target=self._run, name="gemma-cpp-batch", daemon=True)
        self.thread.start()

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch

    @property
    def running(self) -> int:
        return len(self.batcher.active)

    def submit(self, req: BatchRequest) -> None:
        self.batcher.submit(req)

    def waiting(self) -> int:
        return self.batcher.waiting()

    def _run(self) -> None:
        b = self.batcher
        while not self._stop:
            if not b.wait_for_work(timeout=0.5):
                continue
            try:
                b.step()
            except BaseException as e:  # noqa: BLE001 - the batched pass failed: its requests get the error
                b.fail_active(e)

    def stop(self) -> None:
        """Ends the thread within half a second (requests still running are dropped)."""
        self._stop = True


class ServerState:
    def __init__(self, model: Model, parallel: int = 1, api_key: str | None = None, model_name: str | None = None):
        if not isinstance(parallel, int) or parallel < 1:
            raise ValueError(f"parallel must be a positive int, got {parallel!r}")
        self.model = model
        self.name = model_name or protocol.model_id(model)
        self.api_key = api_key
        if model.is_base_model:  # said once here, not again on each chat request (lanes: batching.py)
            from ..variant import base_chat_warning

            print(f"gemma-cpp serve: warning: {base_chat_warning(self.name)}", file=sys.stderr, flush=True)
            model._warned_base_chat = True
        self.batch = BatchLoop(model, parallel)
        self.created = int(os.path.getmtime(model.path))
        self.stats = collections.Counter()

    def check_auth(self, request: Request) -> JSONResponse | None:
        if not self.api_key:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            return None
        return _error(401, "Invalid or missing API key: send the header 'Authorization: Bearer KEY'.",
                      code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def events(self, req: protocol.Request, index: int = 0) -> AsyncIterator[tuple[str, Any]]:
        """Generate choice `index` in the batch: yields ("piece", (text, Generation, tokens so far))
        ... then ("done", Generation).

        Closing this iterator early (client gone, task cancelled) cancels the request: it leaves
        the batch at the next step (or is dropped from the queue), freeing its lane."""
        loop = asyncio.get_running_loop()
        self.stats["requests"] += 1
        cancel = threading.Event()
        queue: asyncio.Queue = asyncio.Queue()

        def emit(kind: str, value) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone (shutting down)
                cancel.set()

        breq = BatchRequest(req.prompt_ids, lambda lane: req.generation(lane, cancel, index, text=False),
                            cancel=cancel)

        def on_event(kind: str, value) -> None:
            # Called on the batch thread right after the token: the Generation's token count is
            # this piece's, which the route needs for streamed logprobs.
            if kind == "piece":
                value = (value, breq.gen, breq.gen.completion_tokens)
            emit(kind, value)

        breq.on_event = on_event
        self.batch.submit(breq)
        finished = False
        try:
            while True:
                kind, val = await queue.get()
                if kind == "error":
                    finished = not isinstance(val, Cancelled)
                    raise val
                if kind == "done":
                    finished = val.finish_reason != "cancelled"
                yield kind, val
                if kind == "done":
                    return
        finally:
            cancel.set()  # looked at between steps; no effect once the request has ended
            if not finished:
                self.stats["cancelled"] += 1


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _wait_disconnect(request: Request) -> None:
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return


def create_app(model: Model, *, parallel: int = 1, api_key: str | None = None,
               model_name: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """The ASGI app serving `model` with `parallel` slots (clones); request bodies past
    `max_request_bytes` get 413 (guard.py)."""
    state = ServerState(model, parallel, api_key, model_name)
    app = FastAPI(title="gemma_cpp", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gemma = state
    app.router.on_shutdown.append(state.batch.stop)  # the batch thread ends with the app
    app.add_middleware(Guard, max_request_bytes=max_request_bytes)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            msg = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            msg = f"Method {request.method} is not allowed for {request.url.path}"
        else:
            msg = str(exc.detail)
        return _error(exc.status_code, msg, code="not_found" if exc.status_code == 404 else None,
                      headers=getattr(exc, "headers", None))

    # Other exceptions: answered as JSON 500 by the Guard middleware, which keeps the connection.

    async def parse(request: Request, parser) -> protocol.Request:
        raw = await request.body()  # the Guard stops it at the size limit (413)
        try:
            body = parse_json(raw)
        except JSONBodyError as e:
            raise InvalidRequestError(str(e)) from None
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        req = await run_in_threadpool(parser, state.model, body)
        req.model_name = state.name
        return req

    async def complete(request: Request, parser):
        denied = state.check_auth(request)
        if denied is not None:
            return denied
        try:
            req = await parse(request, parser)
        except InvalidRequestError as e:
            return _error(400, e.message, param=e.param, code=e.code)
        except ValueError as e:  # any other bad value in the request
            return _error(400, str(e))
        if req.stream:
            return StreamingResponse(stream(req), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await whole(request, req)

    async def whole(request: Request, req: protocol.Request):
        async def consume():
            gens = []
            for i in range(req.runs):  # n > 1: one after another (a later one reuses the prompt's cache)
                agen = state.events(req, i)
                try:
                    async for kind, val in agen:
                        if kind == "done":
                            gens.append(val)
                finally:
                    await agen.aclose()
            return gens

        task = asyncio.ensure_future(consume())
        gone = asyncio.ensure_future(_wait_disconnect(request))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not task.done():  # the client went away: stop generating
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001
                pass
            return Response(status_code=499)
        try:
            gens = task.result()
        except InvalidRequestError as e:
            return _error(400, e.message, param=e.param, code=e.code)
        except ValueError as e:
            return _error(400, str(e))
        except Exception as e:  # noqa: BLE001 - e.g. non-finite logits from a broken model file
            return _error(500, f"{type(e).__name__}: {e}", "server_error")
        return JSONResponse(responses.response(req, gens))

    async def stream(req: protocol.Request):
        mk = responses.ChunkMaker(req)
        agen = None
        try:
            first = mk.first()
            if first is not None:
                yield _sse(first)
            for i in range(req.runs):  # n > 1: the choices one after another
                agen = state.events(req, i)
                async for kind, val in agen:
                    if kind == "piece":
                        yield _sse(mk.piece(*val))
                    else:
                        for c in mk.last(val):
                            yield _sse(c)
                await agen.aclose()
            yield "data: [DONE]\n\n"
        except Exception as e:  # noqa: BLE001 - headers are sent: report in the stream, as OpenAI does
            yield _sse(error_body(f"{type(e).__name__}: {e}", "server_error"))
            yield "data: [DONE]\n\n"
        finally:
            if agen is not None:
                await agen.aclose()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, protocol.parse_chat)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, protocol.parse_completion)

    def model_card() -> dict:  # "meta" as llama-server has it: extra facts, ignored by OpenAI clients
        return {"id": state.name, "object": "model", "created": state.created, "owned_by": "gemma_cpp",
                "meta": {"context_length": state.model.max_seq_len, "base_model": bool(state.model.is_base_model)}}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models(request: Request):
        denied = state.check_auth(request)
        if denied is not None:
            return denied
        return {"object": "list", "data": [model_card()]}

    @app.api_route("/v1/models/{model_id:path}", methods=["GET", "HEAD"])
    async def model(model_id: str, request: Request):
        denied = state.check_auth(request)
        if denied is not None:
            return denied
        if model_id != state.name:
            return _error(404, f"The model '{model_id}' does not exist (this server serves '{state.name}').",
                          param="model", code="model_not_found")
        return model_card()

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health():
        batch = state.batch
        return {"status": "ok", "model": state.name, "slots_total": batch.max_batch,
                "slots_idle": batch.max_batch - batch.running, "requests_waiting": batch.waiting(),
                "requests_total": state.stats["requests"], "requests_cancelled": state.stats["cancelled"],
                "decode_steps": batch.batcher.steps, "decode_tokens": batch.batcher.tokens}

    webchat.add_routes(app, api_key_required=bool(api_key))
    return app


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    return sock


def serve(model: Model, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          parallel: int = 1, log_level: str = "info", model_name: str | None = None,
          max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
    """Serve a loaded `model` (with `parallel` slots) until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    app = create_app(model, parallel=parallel, api_key=api_key, model_name=model_name,
                     max_request_bytes=max_request_bytes)
    sock = _bind(host, port)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if sock.family == socket.AF_INET6 else bound[0]
    name = app.state.gemma.name
    n_threads = model.n_threads
    print(f"gemma-cpp serve: model '{name}' at http://{shown}:{bound[1]}/v1, chat page at "
          f"http://{shown}:{bound[1]}/ (batches of up to {parallel} "
          f"request{'s' if parallel > 1 else ''}, {n_threads} thread{'s' if n_threads > 1 else ''}, context "
          f"{model.max_seq_len}, {model.kv_dtype} KV cache{', API key required' if api_key else ''})",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["create_app", "serve", "BatchLoop", "error_body"]
