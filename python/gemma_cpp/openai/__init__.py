"""The OpenAI layer: OpenAI-shaped requests and responses on a gemma_cpp Model.

- protocol.py: request parsing and validation (bounds from gemma_cpp/params.py) -> `Request`
- responses.py: response and stream-chunk objects; `create_completion` / `create_chat_completion`
  (the llama-cpp-python-style calls that `Model` offers as methods)
- server.py: the FastAPI app and `serve` (the [server] extra); not imported here, so this
  package loads without FastAPI
- guard.py: the server's request limits (body size, JSON depth) and its answer to unexpected
  exceptions (plain ASGI, no FastAPI import)

Import rule: nothing here imports gemma_cpp.model (the Model is passed in), so model.py can
import responses.py without a cycle; the server and the CLI sit on top.
"""

from ..params import InvalidRequestError
from .protocol import (IGNORED_FIELDS, Request, model_id, normalize_messages, parse_chat, parse_completion,
                       render_chat)
from .responses import ChunkMaker, create_chat_completion, create_completion, response, stream_chunks

__all__ = ["create_completion", "create_chat_completion", "InvalidRequestError", "IGNORED_FIELDS", "Request",
           "parse_completion", "parse_chat", "response", "stream_chunks", "ChunkMaker", "model_id",
           "normalize_messages", "render_chat"]
