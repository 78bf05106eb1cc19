"""An OpenAI-compatible HTTP server for a gemma_cpp model (FastAPI + uvicorn: the [server] extra).

    gemma-cpp serve model.gcpp --port 8080 --parallel 2

Routes: POST /v1/chat/completions, POST /v1/completions (stream or not), GET (and HEAD)
/v1/models, /v1/models/{id}, /health. Errors have OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`; request limits (body size, JSON depth) and the
answer to unexpected exceptions live in guard.py.

Concurrency: the server holds N slots (N = --parallel), each a `Model.clone()` with its own KV
cache; the weights are mapped once and shared. A request takes a free slot (preferring the slot
whose cache already holds the longest prefix of its prompt, so multi-turn chats reuse their
cache) or waits in a first-come queue for one. Generation runs in a thread of its own; the
event loop only relays text. A client that disconnects stops its generation at the next token
(or the next layer, inside a long prompt's prefill) and frees its slot.

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

from ..generation import Generation
from ..params import InvalidRequestError
from . import protocol, responses
from .guard import DEFAULT_MAX_REQUEST_BYTES, Guard, JSONBodyError, error_body, parse_json

Model = Any  # a gemma_cpp.Model (passed in; this layer does not import model.py)


def _error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
           code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class SlotPool:
    """N model clones handed out to requests; requests wait first-come for a free one."""

    def __init__(self, models: list[Model]):
        self.models = models
        self.idle = list(models)
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    @property
    def waiting(self) -> int:
        return sum(1 for f in self.waiters if not f.done())

    def _pick(self, ids: list[int]) -> Model:
        def cached(m: Model) -> int:
            return _common_prefix(m.cached_tokens, ids)

        best = max(range(len(self.idle)), key=lambda i: cached(self.idle[i]))
        return self.idle.pop(best)

    async def acquire(self, ids: list[int]) -> Model:
        if self.idle and not self.waiting:
            return self._pick(ids)
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self, model: Model) -> None:
        """Give a slot back (in the event loop's thread)."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(model)
                return
        self.idle.append(model)


class ServerState:
    def __init__(self, model: Model, parallel: int = 1, api_key: str | None = None, model_name: str | None = None):
        if not isinstance(parallel, int) or parallel < 1:
            raise ValueError(f"parallel must be a positive int, got {parallel!r}")
        self.model = model
        self.name = model_name or protocol.model_id(model)
        self.api_key = api_key
        self.pool = SlotPool([model] + [model.clone() for _ in range(parallel - 1)])
        if model.is_base_model:  # said once here, not again on each chat request
            from ..variant import base_chat_warning

            print(f"gemma-cpp serve: warning: {base_chat_warning(self.name)}", file=sys.stderr, flush=True)
            for m in self.pool.models:
                m._warned_base_chat = True
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

    def _finished(self, model: Model, cancelled: bool) -> None:
        if cancelled:
            self.stats["cancelled"] += 1
        self.pool.release(model)

    async def events(self, req: protocol.Request, index: int = 0) -> AsyncIterator[tuple[str, Any]]:
        """Generate choice `index` in a worker thread: yields ("piece", (text, Generation, tokens so
        far)) ... then ("done", Generation).

        Closing this iterator early (client gone, task cancelled) stops the generation at the
        next check of the C++ loop (between tokens, or between layers of the prefill); the worker
        then frees its slot."""
        loop = asyncio.get_running_loop()
        model = await self.pool.acquire(req.prompt_ids)
        self.stats["requests"] += 1
        cancel = threading.Event()
        running: list[Generation] = []  # the worker's generation, once it has one
        queue: asyncio.Queue = asyncio.Queue()

        def emit(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone (shutting down)
                cancel.set()

        def work() -> None:
            gen = None
            try:
                gen = req.generation(model, cancel, index)
                running.append(gen)
                for piece in gen:
                    emit(("piece", (piece, gen, gen.completion_tokens)))
                emit(("done", gen))
            except BaseException as e:  # noqa: BLE001 - handed to the request
                emit(("error", e))
            finally:
                if gen is not None:
                    gen.close()
                cancelled = gen is None or gen.finish_reason == "cancelled"
                try:
                    loop.call_soon_threadsafe(self._finished, model, cancelled)
                except RuntimeError:
                    pass

        try:
            threading.Thread(target=work, name="gemma-cpp-slot", daemon=True).start()
        except BaseException:
            self.pool.release(model)
            raise
        try:
            while True:
                kind, val = await queue.get()
                if kind == "error":
                    raise val
                yield kind, val
                if kind == "done":
                    return
        finally:
            cancel.set()  # looked at between tokens; no effect once the generation has ended
            for gen in running:
                gen.interrupt()  # stops a long prefill too; names this generation only


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

    def model_card() -> dict:
        return {"id": state.name, "object": "model", "created": state.created, "owned_by": "gemma_cpp"}

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
        pool = state.pool
        return {"status": "ok", "model": state.name, "slots_total": len(pool.models), "slots_idle": len(pool.idle),
                "requests_waiting": pool.waiting, "requests_total": state.stats["requests"],
                "requests_cancelled": state.stats["cancelled"]}

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
    print(f"gemma-cpp serve: model '{name}' at http://{shown}:{bound[1]}/v1 ({parallel} slot"
          f"{'s' if parallel > 1 else ''}, {n_threads} thread{'s' if n_threads > 1 else ''} each, context "
          f"{model.max_seq_len}, {model.kv_dtype} KV cache{', API key required' if api_key else ''})",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])


__all__ = ["create_app", "serve", "SlotPool", "error_body"]
