"""`gemma-cpp serve [MODEL]`: load the model and serve it over the OpenAI-compatible HTTP API
(gemma_cpp/openai/server.py; the [server] extra)."""

from __future__ import annotations

import os

from .common import PROG, CLIError
from .models import default_model, resolve_model
from ..openai.guard import DEFAULT_MAX_REQUEST_BYTES  # no FastAPI needed for it
from .options import add_model, add_runtime, nonneg, positive


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server",
                       description="Serve MODEL over an OpenAI-compatible HTTP API (/v1/chat/completions, "
                                   "/v1/completions, /v1/models, /health). --parallel N decodes up to N requests "
                                   "together (continuous batching: one weight pass per step for all of them; "
                                   "each has its own KV cache); others wait in a queue. Needs the [server] "
                                   "extra (FastAPI, uvicorn).")
    add_model(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=nonneg, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--api-key", default=os.environ.get("GEMMA_CPP_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $GEMMA_CPP_API_KEY, else no key)")
    p.add_argument("--parallel", "-np", type=positive, default=1,
                   help="requests decoded together, the largest batch (default 1)")
    p.add_argument("--alias", default=None, help="model id to report (default: the file name)")
    p.add_argument("--max-request-bytes", type=positive, default=DEFAULT_MAX_REQUEST_BYTES,
                   help=f"largest request body accepted; larger ones get HTTP 413 "
                        f"(default {DEFAULT_MAX_REQUEST_BYTES} = 8 MB)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_runtime(p, ctx_help="context length of each request's KV cache (default: the model's)")
    p.set_defaults(func=main)


def main(args, parser) -> int:
    try:
        from ..openai import server
    except ImportError as e:
        raise CLIError(f"`{PROG} serve` needs FastAPI and uvicorn: pip install 'gemma_cpp[server]' ({e})") from None
    from .. import _core
    from ..model import Model

    path = resolve_model(args.model or default_model())
    # One thread runs every request's steps (a batch), so it gets all the threads.
    n_threads = args.threads if args.threads is not None else _core.default_threads()
    model = Model(path, n_threads=n_threads, max_seq_len=args.ctx, kv_dtype=args.kv_dtype, device=args.device)
    server.serve(model, host=args.host, port=args.port, api_key=args.api_key, parallel=args.parallel,
                 log_level=args.log_level, model_name=args.alias, max_request_bytes=args.max_request_bytes)
    return 0
