"""Lazy, zero-copy reading of .safetensors files as numpy arrays (bf16 included).

The safetensors package's numpy backend cannot represent bfloat16, which is how Gemma ships,
so we read the (simple, documented) header ourselves and memory-map the data with ml_dtypes.
"""

from __future__ import annotations

import json
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


class SafetensorsFile:
    def __init__(self, path: str):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ValueError(f"{path}: truncated safetensors file")
            (n,) = struct.unpack("<Q", raw)
            if n > size - 8 or n > 100 << 20:
                raise ValueError(f"{path}: safetensors header length {n} exceeds the file size")
            try:
                header: dict[str, Any] = json.loads(f.read(n))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
        self._data_start = 8 + n
        self._size = size
        header.pop("__metadata__", None)
        self.entries = header

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.entries[name]["shape"])

    def get(self, name: str) -> np.ndarray:
        e = self.entries[name]
        dt = _DTYPES.get(e["dtype"])
        if dt is None:
            raise ValueError(f"{self.path}: tensor {name!r} has dtype {e['dtype']}; "
                             f"supported: {', '.join(_DTYPES)}")
        begin, end = (int(x) for x in e["data_offsets"])
        shape = self.shape(name)
        count = int(np.prod(shape)) if shape else 1
        if end - begin != count * dt.itemsize or self._data_start + end > self._size:
            raise ValueError(f"{self.path}: tensor {name!r} data range [{begin}, {end}) does not "
                             f"match its shape {list(shape)} or lies past the end of the file")
        arr = np.memmap(self.path, dtype=dt, mode="r", offset=self._data_start + begin, shape=(count,))
        return arr.reshape(shape)
