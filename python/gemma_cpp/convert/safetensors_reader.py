"""Lazy, zero-copy reading of .safetensors files as numpy arrays (bf16 included).

The safetensors package's numpy backend cannot represent bfloat16, which is how Gemma ships,
so we read the (simple, documented) header ourselves and memory-map the data with ml_dtypes.

The whole header is validated when the file is opened, with the rules of the reference library
(safetensors' `validate`): a JSON object of entries {dtype, shape, data_offsets}; each entry's
byte count is its shape times its dtype's size; sorted by offset, the entries tile the data
region exactly (the first begins at 0, each begins where the previous ends, the last ends at the
end of the file), so no offset lies before the data, outside the file or inside another tensor.
The format has no alignment rule (the reference writer packs tensors back to back); numpy reads
unaligned data correctly. Every violation is a SafetensorsError naming the file and tensor.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import ml_dtypes
import numpy as np

_DTYPES = {
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F64": np.dtype(np.float64),
}
# Byte sizes of every dtype the format defines: a file may hold tensors we do not read (they are
# then refused by name only if used), but its layout is checked whole.
_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
          "F8_E8M0": 1,
          "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8}
MAX_HEADER = 100 << 20  # the reference library's limit


class SafetensorsError(ValueError):
    """A .safetensors file whose header is corrupt, truncated or inconsistent."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class SafetensorsFile:
    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            raw = f.read(8)
            if len(raw) < 8:
                raise SafetensorsError(f"{path}: truncated safetensors file ({len(raw)} bytes)")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > MAX_HEADER:
                raise SafetensorsError(f"{path}: safetensors header length {n} exceeds the file size")
            try:
                header: Any = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SafetensorsError(f"{path}: corrupt safetensors header ({e})") from None
            except RecursionError:
                raise SafetensorsError(f"{path}: safetensors header JSON is nested too deeply") from None
        self._data_start = 8 + n
        self._size = size
        if not isinstance(header, dict):
            raise SafetensorsError(f"{path}: safetensors header must be a JSON object, got {type(header).__name__}")
        header.pop("__metadata__", None)
        self.entries: dict[str, dict[str, Any]] = header
        self._check_layout()

    def _check_layout(self) -> None:
        spans = []
        for name, e in self.entries.items():
            where = f"{self.path}: tensor {name!r}"
            if not isinstance(e, dict):
                raise SafetensorsError(f"{where}: entry must be an object, got {type(e).__name__}")
            dtype, shape, offsets = e.get("dtype"), e.get("shape"), e.get("data_offsets")
            if not isinstance(dtype, str) or dtype not in _SIZES:
                raise SafetensorsError(f"{where}: unknown dtype {dtype!r}")
            if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
                raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
            if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets)
                    or not 0 <= offsets[0] <= offsets[1]):
                raise SafetensorsError(f"{where}: data_offsets must be two integers 0 <= begin <= end, "
                                       f"got {offsets!r}")
            begin, end = offsets
            want = math.prod(shape) * _SIZES[dtype]  # Python ints: no overflow
            if end - begin != want:
                raise SafetensorsError(f"{where}: data range [{begin}, {end}) holds {end - begin} bytes, but "
                                       f"shape {shape} of {dtype} needs {want}")
            spans.append((begin, end, name))
        spans.sort()
        pos, prev = 0, None
        for begin, end, name in spans:
            if begin != pos:
                what = "overlaps" if begin < pos else "leaves a gap after"
                other = f"tensor {prev!r}" if prev is not None else "the start of the data"
                raise SafetensorsError(f"{self.path}: tensor {name!r} (bytes [{begin}, {end})) {what} {other} "
                                       f"(which ends at {pos}); the file is corrupt")
            pos, prev = end, name
        if self._data_start + pos != self._size:
            raise SafetensorsError(f"{self.path}: the tensors end at byte {self._data_start + pos} but the file "
                                   f"has {self._size}; the file is truncated or corrupt")

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        e = self.entries[name]
        dt = _DTYPES.get(e["dtype"])
        if dt is None:
            raise SafetensorsError(f"{self.path}: tensor {name!r} has dtype {e['dtype']}; "
                                   f"supported: {', '.join(_DTYPES)}")
        begin, end = e["data_offsets"]
        shape = self.shape(name)
        count = math.prod(shape)
        if count == 0:
            return np.zeros(shape, dt)
        arr = np.memmap(self.path, dtype=dt, mode="r", offset=self._data_start + begin, shape=(count,))
        return arr.reshape(shape)
