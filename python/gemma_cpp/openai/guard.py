"""The server's outer guard (an ASGI middleware) and its request-body rules.

- A request body larger than `max_request_bytes` (default 8 MB; `gemma-cpp serve
  --max-request-bytes`) gets HTTP 413 as soon as its Content-Length, or the bytes received so
  far, pass the limit: the body is never held whole in memory.
- JSON nested deeper than MAX_JSON_DEPTH gets HTTP 400 (`parse_json`).
- Any exception a route lets through gets an OpenAI-shaped JSON error (500) *answered*, not
  re-raised: Starlette's own handler for Exception sends its response and then re-raises, and the
  server then drops the connection, so the client's next request on that keep-alive connection
  failed with ECONNRESET. Once a response has started (a stream), an error can only end it.

docs/security.md lists these limits with the loader's.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

DEFAULT_MAX_REQUEST_BYTES = 8 << 20
MAX_JSON_DEPTH = 64  # arrays/objects inside each other; real requests need a handful


class BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"The request body is larger than this server's limit of {limit} bytes "
                         f"(gemma-cpp serve --max-request-bytes).")


class JSONBodyError(ValueError):
    """A body that is not acceptable JSON (malformed, or nested too deeply)."""


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _depth(obj: Any) -> int:
    """How deeply arrays/objects nest in `obj` (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = o.values()
        elif not isinstance(o, list):
            continue
        deepest = max(deepest, d)
        if d > MAX_JSON_DEPTH:
            break
        stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return deepest


def parse_json(raw: bytes) -> Any:
    """The request body as JSON; JSONBodyError for malformed or too deeply nested JSON."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise JSONBodyError(f"We could not parse the JSON body of your request ({e}).") from None
    except RecursionError:  # Python's own parser gives up near 1000 levels
        body = None
    else:
        if _depth(body) <= MAX_JSON_DEPTH:
            return body
    raise JSONBodyError(f"The JSON body of your request nests arrays/objects more than {MAX_JSON_DEPTH} deep.")


class Guard:
    """ASGI middleware: the body-size limit and a JSON answer for every unhandled exception."""

    def __init__(self, app, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        if isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int) or max_request_bytes < 1:
            raise ValueError(f"max_request_bytes must be a positive int, got {max_request_bytes!r}")
        self.app = app
        self.limit = max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False  # the server rejects a malformed length itself
                if too_big:
                    return await self._answer(send, 413, str(BodyTooLarge(self.limit)), close=True)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await self._answer(send, 413, str(e), close=True)
        except Exception as e:  # noqa: BLE001 - answered as JSON, the connection kept
            if started:
                raise  # mid-response: nothing valid can be sent any more
            traceback.print_exc(file=sys.stderr)
            await self._answer(send, 500, f"internal error: {type(e).__name__}: {e}", type_="server_error")

    @staticmethod
    async def _answer(send, status: int, message: str, type_: str = "invalid_request_error",
                      close: bool = False) -> None:
        body = json.dumps(error_body(message, type_)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:  # the unread rest of the body would otherwise be read as the next request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


__all__ = ["Guard", "parse_json", "JSONBodyError", "BodyTooLarge", "DEFAULT_MAX_REQUEST_BYTES",
           "MAX_JSON_DEPTH", "error_body"]
