"""gemma_cpp: fast CPU inference for Google's Gemma models.

    from gemma_cpp import Model
    m = Model("gemma-2b-it.int8.gcpp")
    print(m.generate("The capital of France is", max_new_tokens=16))
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads that spin while they wait collapse when another program shares the cores: on a
# busy 2-core machine decode fell from ~26 to ~1.5 tokens/s with spinning threads. Sleeping
# waits cost a few microseconds per parallel region instead. Must be set before libgomp loads
# (with the extension); a user's own OMP_WAIT_POLICY / GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from .gcpp_format import FormatError  # noqa: E402
from .model import BaseModelChatWarning, ContextLengthError, Model, ModelConfig  # noqa: E402
from .params import InvalidRequestError  # noqa: E402
from .tokenizer import ChatTemplateError  # noqa: E402


def system_info() -> dict:
    """What the C++ core runs on: the chosen ISA, the ISAs available, threads."""
    from . import _core

    return {
        "version": __version__,
        "isa": _core.active_isa(),
        "available_isas": _core.available_isas(),
        "threads": _core.default_threads(),
    }


def set_isa(name: str) -> None:
    """Force the kernels' instruction set: 'scalar', 'avx2', 'avx512' or 'neon' (if available)."""
    from . import _core

    _core.set_isa(name)


__all__ = ["Model", "ModelConfig", "FormatError", "ContextLengthError", "ChatTemplateError", "InvalidRequestError",
           "BaseModelChatWarning", "system_info", "set_isa", "__version__"]
