"""The chat page that `gemma-cpp serve` answers at `/` (docs/server.md, "The chat page").

Plain HTML, CSS and JavaScript in static/ beside this module (package data: no build step,
nothing loaded from another host). The page talks only to this server's OpenAI routes, which it
finds relative to its own address (so it also works behind a proxy under a path prefix).

Routes added to the app:
- `GET /` — the page (static/index.html);
- `GET /webchat/chat.js`, `/webchat/chat.css` — its script and style;
- `GET /webchat/config.json` — what the page must know before it can ask anything: whether an
  API key is needed, and the bounds and defaults of the controls it shows, from the one table in
  gemma_cpp/params.py (the page holds no numbers of its own). Open like /health: it says nothing
  about the model; the model's name and context come from /v1/models, behind the key.

Every file goes out with a Content-Security-Policy that allows scripts, styles and requests from
this server only, and no inline script: the page inserts model text as text, never as HTML, and
the policy is the second wall should that ever fail.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi.responses import JSONResponse, Response

from ..params import DEFAULT_MAX_TOKENS, DEFAULT_OPENAI_TEMPERATURE, OPENAI_NAMES, bounds_json
from .guard import error_body

FILES = {"index.html": "text/html; charset=utf-8", "chat.js": "text/javascript; charset=utf-8",
         "chat.css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


@functools.lru_cache(maxsize=None)
def asset(name: str) -> bytes:
    """The bytes of static/`name` (one of FILES), as installed with the package."""
    if name not in FILES:
        raise KeyError(name)
    return resources.files(__package__).joinpath("static", name).read_bytes()


def page_config(api_key_required: bool) -> dict:
    """The page's settings: `api_key_required`, and per control (OpenAI's parameter names) the
    bounds of params.BOUNDS (params.bounds_json) with the server's default."""
    def control(name: str, default: float) -> dict:
        return dict(bounds_json(name), name=OPENAI_NAMES.get(name, name), default=default)

    return {"api_key_required": bool(api_key_required),
            "params": {"temperature": control("temperature", DEFAULT_OPENAI_TEMPERATURE),
                       "max_tokens": control("max_new_tokens", DEFAULT_MAX_TOKENS)}}


def add_routes(app, *, api_key_required: bool) -> None:
    """Serve the page and its files on `app` (a FastAPI app)."""
    config = page_config(api_key_required)

    def file(name: str) -> Response:
        return Response(asset(name), media_type=FILES[name], headers=HEADERS)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index():
        return file("index.html")

    @app.api_route("/webchat/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def webchat_file(name: str):
        if name == "config.json":
            return JSONResponse(config, headers={"Cache-Control": "no-cache"})
        if name not in FILES or name == "index.html":
            return JSONResponse(error_body(f"Invalid URL (GET /webchat/{name})", code="not_found"), status_code=404)
        return file(name)


__all__ = ["add_routes", "asset", "page_config", "FILES", "CSP"]
