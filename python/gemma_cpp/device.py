"""Where a Model runs: "cpu" (the default), or a CUDA GPU ("cuda" = "cuda:0", "cuda:N") when this
gemma_cpp was built with the CUDA backend (`pip install . -C cmake.define.GEMMA_CUDA=ON`;
docs/cuda.md). The C++ core checks again (backend/device.h); this module gives the errors their
Python classes: InvalidRequestError for a malformed device string, DeviceError for a device that
cannot be used here (not built with CUDA, no GPU or driver, an ordinal past the GPUs present)."""

from __future__ import annotations

import re

from . import _core
from .params import InvalidRequestError

DeviceError = _core.DeviceError  # a RuntimeError: the device exists as a name but not here

_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,4})?")


def parse_device(device) -> str:
    """The canonical name ("cpu", "cuda:N") of a device string; InvalidRequestError otherwise."""
    if not isinstance(device, str):
        raise InvalidRequestError(f"device must be a string (\"cpu\", \"cuda\" or \"cuda:N\"), got "
                                  f"{type(device).__name__}", "device")
    if not _DEVICE.fullmatch(device):
        raise InvalidRequestError(f"unknown device {device!r} (expected \"cpu\", \"cuda\" or \"cuda:N\")", "device")
    return "cuda:0" if device == "cuda" else device


def check_device(device) -> str:
    """parse_device, then DeviceError (with the reason and the way out) if it cannot be used here."""
    name = parse_device(device)
    _core.check_device(name)
    return name


def cuda_info() -> dict:
    """{'built': bool, 'gpus': [{index, name, memory_bytes, compute_capability, peak_bandwidth_gbs}],
    'status': 'available' or why not (e.g. 'not built with CUDA ...')}."""
    gpus = _core.cuda_devices()
    return {"built": _core.cuda_built(), "gpus": gpus,
            "status": "available" if gpus else _core.cuda_unavailable_reason()}
