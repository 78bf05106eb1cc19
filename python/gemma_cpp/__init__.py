"""gemma_cpp: fast CPU inference for Google's Gemma models.

    from gemma_cpp import Model
    m = Model("gemma-2b-it.int8.gcpp")
    print(m.generate("The capital of France is", max_new_tokens=16))
"""

__version__ = "0.1.0"

from .device import DeviceError
from .gcpp_format import FormatError
from .model import BaseModelChatWarning, ContextLengthError, Model, ModelConfig
from .params import InvalidRequestError
from .tokenizer import ChatTemplateError


def system_info() -> dict:
    """What the C++ core runs on: the chosen ISA, the ISAs available, threads, and the CUDA GPUs
    ("gpus": [] and "cuda" saying why when there are none, e.g. not built with CUDA)."""
    from . import _core
    from .device import cuda_info

    cuda = cuda_info()
    return {
        "version": __version__,
        "isa": _core.active_isa(),
        "available_isas": _core.available_isas(),
        "threads": _core.default_threads(),
        "cuda_built": cuda["built"],
        "gpus": cuda["gpus"],
        "cuda": cuda["status"],
    }


def set_isa(name: str) -> None:
    """Force the kernels' instruction set: 'scalar', 'avx2', 'avx512', 'amx' (AVX-512 with
    AMX tiles for int8/int4 prefill) or 'neon' (if available)."""
    from . import _core

    _core.set_isa(name)


__all__ = ["Model", "ModelConfig", "DeviceError", "FormatError", "ContextLengthError", "ChatTemplateError", "InvalidRequestError",
           "BaseModelChatWarning", "system_info", "set_isa", "__version__"]
