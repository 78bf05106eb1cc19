"""A lean GGUF (v2/v3) file parser: metadata, tensor table, and tensors dequantised to float32.

Why not `gguf.GGUFReader`? It builds a numpy view for every element of every metadata array,
which takes ~20 s for the 262144-entry vocabulary of a Gemma 3 file. This parser reads the same
layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) in well under a second:
numeric arrays with one `np.frombuffer`, string arrays with a plain loop. The block formats
and their dequantisation still come from the `gguf` package (`gguf.GGML_QUANT_SIZES`,
`gguf.quants.dequantize`), so every tensor type that package can dequantise is supported.
tests/test_gguf.py checks this parser against `gguf.GGUFReader` on the files it writes.

Layout reminders: all integers little-endian; a tensor's dims are listed fastest-varying first
(ggml's `ne` order), so a [rows, cols] row-major matrix is stored with dims (cols, rows); the
tensor data section starts at the first multiple of `general.alignment` (default 32) after the
tensor table, and each tensor's offset is relative to that start.

Validation (what llama.cpp's gguf.cpp checks, and docs/security.md lists): every length and count
against the bytes left in the file, arrays nested at most MAX_NESTING deep, `general.alignment` a
power of two, each tensor offset a multiple of it, every tensor inside the file, and no two
tensors overlapping (sorted by offset). Sizes are computed with Python integers, so a hostile
shape cannot wrap around. Anything else is a GGUFError naming the file and key or tensor.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# metadata value types
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
       12: "<f8"}
_STRING, _ARRAY = 8, 9
MAX_NESTING = 8  # arrays of arrays: llama.cpp reads none; a hostile file must not recurse without end


class GGUFError(ValueError):
    """A GGUF file that is truncated, corrupt, of an unknown version or holds an unsupported tensor."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy (row-major) order: the reverse of the file's ne order
    ggml_type: int
    offset: int  # absolute offset of the data in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)


def ggml_type_name(t: int) -> str:
    from gguf import GGMLQuantizationType

    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return f"type {t}"


class _Cursor:
    def __init__(self, buf: np.ndarray, path: str):
        self.buf, self.pos, self.path = buf, 0, path
        self.mv = memoryview(buf)  # slicing a memoryview is much cheaper than slicing a memmap

    def unpack(self, fmt: str) -> tuple:
        try:
            vals = struct.unpack_from(fmt, self.mv, self.pos)
        except struct.error:
            raise GGUFError(f"{self.path}: truncated at byte {self.pos} while reading the header") from None
        self.pos += struct.calcsize(fmt)
        return vals

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise GGUFError(f"{self.path}: string of {n} bytes at byte {self.pos} runs past the end of the file")
        raw = bytes(self.mv[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # llama.cpp writes vocab entries as bytes; keep invalid UTF-8 visible rather than fail
            return raw.decode("utf-8", errors="surrogateescape")

    def value(self, vtype: int, key: str, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])[0]
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<IQ")
            if etype in _NP:
                dt = np.dtype(_NP[etype])
                end = self.pos + count * dt.itemsize
                if end > len(self.buf):
                    raise GGUFError(f"{self.path}: metadata array {key!r} runs past the end of the file")
                arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.pos).copy()
                self.pos = end
                return arr
            least = 8 if etype == _STRING else 12 if etype == _ARRAY else 1  # bytes per element, at least
            if count * least > len(self.buf) - self.pos:
                raise GGUFError(f"{self.path}: metadata array {key!r} claims {count} entries; corrupt file")
            if etype == _ARRAY and depth >= MAX_NESTING:
                raise GGUFError(f"{self.path}: metadata array {key!r} is nested more than {MAX_NESTING} deep; "
                                f"corrupt file")
            return [self.value(etype, key, depth + 1) for _ in range(count)]
        raise GGUFError(f"{self.path}: metadata key {key!r} has unknown value type {vtype}; corrupt file")


class GGUFFile:
    """Parsed header of a GGUF file; tensor data is read (memory-mapped) on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        self.file_size = os.path.getsize(self.path)
        if self.file_size < 24:
            raise GGUFError(f"{self.path}: {self.file_size} bytes is too short for a GGUF file")
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(self._map, self.path)
        magic = bytes(self._map[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
        cur.pos = 4
        (self.version,) = cur.unpack("<I")
        if self.version not in (2, 3):
            if self.version == 1:
                raise GGUFError(f"{self.path}: GGUF version 1 (pre-2023) is not supported; "
                                f"re-create the file with a current llama.cpp")
            if struct.pack("<I", self.version)[::-1] in (b"\0\0\0\2", b"\0\0\0\3"):
                raise GGUFError(f"{self.path}: big-endian GGUF files are not supported")
            raise GGUFError(f"{self.path}: unknown GGUF version {self.version} (supported: 2, 3)")
        n_tensors, n_kv = cur.unpack("<QQ")
        if n_tensors > self.file_size or n_kv > self.file_size:
            raise GGUFError(f"{self.path}: header claims {n_tensors} tensors and {n_kv} metadata keys; "
                            f"corrupt file")
        self.metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, int] = {}
        for _ in range(n_kv):
            key = cur.string()
            (vtype,) = cur.unpack("<I")
            self.metadata[key] = cur.value(vtype, key)
            self.metadata_types[key] = vtype
        raw_tensors = []
        for _ in range(n_tensors):
            name = cur.string()
            (n_dims,) = cur.unpack("<I")
            if n_dims > 8:
                raise GGUFError(f"{self.path}: tensor {name!r} has {n_dims} dims; corrupt file")
            ne = cur.unpack(f"<{n_dims}Q")
            gtype, offset = cur.unpack("<IQ")
            raw_tensors.append((name, ne, gtype, offset))
        align = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if isinstance(align, np.generic):
            align = align.item()
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
            raise GGUFError(f"{self.path}: general.alignment={align!r} is not a power of two")
        self.alignment = align
        self.data_start = (cur.pos + align - 1) // align * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, gtype, offset in raw_tensors:
            shape = tuple(int(d) for d in reversed(ne))
            nbytes = _nbytes(self.path, name, shape, gtype)
            if offset % align:
                raise GGUFError(f"{self.path}: tensor {name!r} offset {offset} is not a multiple of the "
                                f"alignment {align}; corrupt file")
            start = self.data_start + int(offset)
            if start + nbytes > self.file_size:
                raise GGUFError(f"{self.path}: tensor {name!r} ({nbytes} bytes at {start}) lies past the end "
                                f"of the file ({self.file_size} bytes); the file is truncated")
            if name in self.tensors:
                raise GGUFError(f"{self.path}: tensor {name!r} appears twice")
            self.tensors[name] = TensorInfo(name, shape, gtype, start, nbytes)
        spans = sorted((t.offset, t.nbytes, t.name) for t in self.tensors.values())
        for (a_off, a_n, a), (b_off, b_n, b) in zip(spans, spans[1:]):
            if b_off < a_off + a_n:
                raise GGUFError(f"{self.path}: tensors {a!r} (bytes {a_off}+{a_n}) and {b!r} (bytes {b_off}+{b_n}) "
                                f"overlap; corrupt file")

    # ------------------------------------------------------------------ metadata
    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        if key not in self.metadata:
            raise GGUFError(f"{self.path}: required metadata key {key!r} is missing")
        return self.metadata[key]

    # ------------------------------------------------------------------ tensors
    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view, shaped [rows, bytes per row]."""
        info = self.tensors[name]
        flat = self._map[info.offset:info.offset + info.nbytes]
        rows = int(np.prod(info.shape[:-1], dtype=np.int64))  # 1 for a 1-D tensor
        return flat.reshape(rows, info.nbytes // rows)

    def dequantize(self, name: str, chunk_rows: int = 16384) -> np.ndarray:
        """The tensor as float32 in numpy order (shape = reversed ne), dequantised in row chunks."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        info = self.tensors[name]
        qtype = GGMLQuantizationType(info.ggml_type)
        raw2 = self.raw(name)
        cols = info.shape[-1]
        out = np.empty((raw2.shape[0], cols), dtype=np.float32)
        try:
            for r0 in range(0, raw2.shape[0], chunk_rows):
                part = np.ascontiguousarray(raw2[r0:r0 + chunk_rows])
                vals = dequantize(part, qtype)
                out[r0:r0 + part.shape[0]] = np.asarray(vals, dtype=np.float32).reshape(part.shape[0], cols)
        except NotImplementedError:
            raise GGUFError(f"{self.path}: tensor {name!r} is stored as {qtype.name}, which the installed "
                            f"gguf package cannot dequantise (upgrade gguf, or re-quantise the file)") from None
        return out.reshape(info.shape)

    def close(self) -> None:
        mm = getattr(self._map, "_mmap", None)
        self._map = None
        if mm is not None:
            mm.close()


def _nbytes(path: str, name: str, shape: tuple[int, ...], gtype: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        qtype = GGMLQuantizationType(gtype)
    except ValueError:
        raise GGUFError(f"{path}: tensor {name!r} has unknown ggml type {gtype}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise GGUFError(f"{path}: tensor {name!r} has ggml type {qtype.name} with no known block size")
    block, type_size = GGML_QUANT_SIZES[qtype]
    if not shape or any(d <= 0 for d in shape):
        raise GGUFError(f"{path}: tensor {name!r} has invalid shape {list(shape)}")
    if shape[-1] % block:
        raise GGUFError(f"{path}: tensor {name!r} ({qtype.name}) has rows of {shape[-1]} values, "
                        f"not a multiple of the block size {block}")
    n = math.prod(shape)  # Python ints: a hostile shape cannot wrap around
    return n // block * type_size


def supports(gtype: int) -> bool:
    """Whether the installed gguf package can dequantise tensors of this ggml type."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize

    try:
        qtype = GGMLQuantizationType(gtype)
        block, type_size = GGML_QUANT_SIZES[qtype]
        dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
        return True
    except (ValueError, KeyError, NotImplementedError):
        return False
