"""The .gcpp single-file model format: layout, writer and header reader.

Layout (all integers little-endian)::

    0   8 bytes   magic b"GEMMACPP"
    8   u32       format version (FORMAT_VERSION)
    12  u32       flags (0; reserved)
    16  u64       header length in bytes
    24  u64       data_start: offset of the data region (a multiple of ALIGN)
    32  ...       header: UTF-8 JSON (config, tokenizer, special ids, chat template,
                  provenance, tensor table)
    data_start    tensor and tokenizer blobs, each at a multiple of ALIGN from the file start

Every tensor entry records name, dtype, shape, offset (relative to data_start), nbytes and
layout: "rows" (row-major rows of quant.row_bytes(dtype, cols) bytes) or "rows16" (int8/int4
matrices: groups of 16 rows interleaved block by block, the kernels' "lane = row" order;
csrc/quant/quant.h). Files written before "rows16" existed hold only "rows" and still load;
a layout this version does not know gets a "re-convert" message. The reader checks
the magic, version and header (the types of every field; every blob 64-byte aligned, at or after
data_start, inside the file and overlapping no other) before the C++ side maps the file and
validates every tensor against the file size and the config, so a truncated, corrupt or foreign
file gets a clear error (docs/security.md).
"""

from __future__ import annotations

import json
import os
import stat
import struct
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterable

import numpy as np

MAGIC = b"GEMMACPP"
FORMAT_VERSION = 1
# Bumped whenever the writer's output for the same input changes (2: int8/int4 matrices in the
# rows16 kernel layout), so converted caches (the demo model, GGUF files run by the CLI) are
# redone rather than kept in an older, slower form. Readers do not look at it.
WRITER_REVISION = 2
ALIGN = 64
_FIXED = struct.Struct("<8sIIQQ")  # magic, version, flags, header_len, data_start
MAX_HEADER = 256 << 20  # a header larger than this is corrupt, not a model
LAYOUTS = ("rows", "rows16")


def tensor_layout(dtype: str, shape: tuple[int, ...] | list[int]) -> str:
    """The layout the writer gives a tensor: the kernel layout for int8/int4 matrices."""
    return "rows16" if dtype in ("int8", "int4") and len(shape) == 2 else "rows"


class FormatError(ValueError):
    """A .gcpp file that is truncated, corrupt, foreign or from an incompatible version."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Header:
    path: str
    version: int
    data_start: int
    meta: dict[str, Any]
    file_size: int

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def tensors(self) -> list[dict[str, Any]]:
        return self.meta["tensors"]

    def read_blob(self, entry: dict[str, Any]) -> bytes:
        off, n = _blob_range(self.path, "tokenizer", entry, self.data_start, self.file_size)
        with _open_regular(self.path) as f:
            f.seek(off)
            return f.read(n)


def _open_regular(path: str) -> BinaryIO:
    """`path` opened for reading if it is a regular file; a directory, FIFO, socket or device gets
    a FormatError (O_NONBLOCK: opening a FIFO must not wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {path}") from None
    except IsADirectoryError:
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        is_dir = fd is None or stat.S_ISDIR(os.fstat(fd).st_mode)
        if fd is not None:
            os.close(fd)
        if is_dir:
            raise FormatError(f"{path} is a directory; convert a checkpoint first with "
                              f"`gemma-convert {path} model.gcpp`")
        raise FormatError(f"{path}: not a regular file (a FIFO, socket or device); give a .gcpp file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _blob_range(path: str, what: str, entry: Any, data_start: int, size: int) -> tuple[int, int]:
    """(absolute offset, nbytes) of a blob entry, checked: ints, at/after data_start, 64-byte
    aligned, inside the file."""
    if not isinstance(entry, dict):
        raise FormatError(f"{path}: {what} entry must be an object, got {type(entry).__name__}")
    for key in ("offset", "nbytes"):
        if key not in entry:
            raise FormatError(f"{path}: {what} entry lacks '{key}'; the file is corrupt")
        if not _is_int(entry[key]):
            raise FormatError(f"{path}: {what} field '{key}' must be an integer, got {entry[key]!r}")
    rel, n = entry["offset"], entry["nbytes"]
    if rel < 0:
        raise FormatError(f"{path}: {what} offset {rel} lies before the data region; the file is corrupt")
    if n < 0:
        raise FormatError(f"{path}: {what} field 'nbytes' is negative ({n}); the file is corrupt")
    off = data_start + rel
    if off % ALIGN:
        raise FormatError(f"{path}: {what} offset {rel} is not {ALIGN}-byte aligned; the file is corrupt")
    if off + n > size:
        raise FormatError(f"{path}: {what} lies past the end of the file (needs {off + n} bytes, file has "
                          f"{size}); the file is truncated or corrupt")
    return off, n


_TENSOR_FIELDS = (("name", str), ("dtype", str), ("shape", list), ("offset", int), ("nbytes", int))


def _check_meta(path: str, meta: Any, data_start: int, size: int) -> None:
    """The header's structure: the types of its sections and of every tensor entry's fields, and
    the blob ranges (inside the file, aligned, not overlapping). Raises FormatError naming the field."""
    if not isinstance(meta, dict):
        raise FormatError(f"{path}: header must be a JSON object, got {type(meta).__name__}")
    for key, kind in (("config", dict), ("tensors", list), ("tokenizer", dict), ("special", dict)):
        if key not in meta:
            raise FormatError(f"{path}: header lacks '{key}'; the file is corrupt")
        if not isinstance(meta[key], kind):
            raise FormatError(f"{path}: header field '{key}' must be a JSON "
                              f"{'object' if kind is dict else 'array'}, got {type(meta[key]).__name__}")
    ct = meta.get("chat_template")
    if ct is not None and not isinstance(ct, str):
        raise FormatError(f"{path}: header field 'chat_template' must be a string, got {type(ct).__name__}")
    ranges = [(*_blob_range(path, "tokenizer", meta["tokenizer"], data_start, size), "the tokenizer")]
    for i, t in enumerate(meta["tensors"]):
        if not isinstance(t, dict):
            raise FormatError(f"{path}: tensors[{i}] must be an object, got {type(t).__name__}")
        for key, kind in _TENSOR_FIELDS:
            v = t.get(key)
            if not (_is_int(v) if kind is int else isinstance(v, kind)):
                raise FormatError(f"{path}: tensors[{i}] field '{key}' must be "
                                  f"{'an integer' if kind is int else 'a ' + kind.__name__}, got {v!r}")
        if not all(_is_int(d) for d in t["shape"]):
            raise FormatError(f"{path}: tensor {t['name']!r} field 'shape' must hold integers, got {t['shape']!r}")
        if t.get("layout", "rows") not in LAYOUTS:
            raise FormatError(f"{path}: tensor {t['name']!r} has layout {t.get('layout')!r} "
                              f"unknown to this version; re-convert the checkpoint")
        ranges.append((*_blob_range(path, f"tensor {t['name']!r}", t, data_start, size), f"tensor {t['name']!r}"))
    ranges.sort(key=lambda r: r[0])
    for (a_off, a_n, a), (b_off, b_n, b) in zip(ranges, ranges[1:]):
        if b_off < a_off + a_n:
            raise FormatError(f"{path}: {a} and {b} overlap (bytes {a_off}+{a_n} and {b_off}+{b_n}); "
                              f"the file is corrupt")


def read_header(path: str | os.PathLike) -> Header:
    path = os.fspath(path)
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        fixed = f.read(_FIXED.size)
        if len(fixed) < _FIXED.size or not fixed.startswith(MAGIC):
            hint = ""
            if fixed.startswith(b"GGUF"):
                hint = f"; it is a GGUF file: convert it with `gemma-convert {path} model.gcpp`"
            raise FormatError(f"{path}: not a .gcpp model file (bad magic){hint}")
        _, version, _flags, header_len, data_start = _FIXED.unpack(fixed)
        if version != FORMAT_VERSION:
            raise FormatError(f"{path}: format version {version} is not supported by this "
                              f"gemma_cpp (reads version {FORMAT_VERSION}); re-convert the checkpoint")
        if header_len > MAX_HEADER or _FIXED.size + header_len > size:
            raise FormatError(f"{path}: header length {header_len} exceeds the file size "
                              f"({size} bytes); the file is truncated or corrupt")
        if data_start % ALIGN or data_start < _FIXED.size + header_len or data_start > size:
            raise FormatError(f"{path}: bad data offset {data_start}; the file is corrupt")
        raw = f.read(header_len)
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: header is not valid JSON ({e}); the file is corrupt") from None
    except RecursionError:
        raise FormatError(f"{path}: header JSON is nested too deeply; the file is corrupt") from None
    _check_meta(path, meta, data_start, size)
    return Header(path=path, version=version, data_start=data_start, meta=meta, file_size=size)


@dataclass
class TensorSpec:
    """One tensor to write: `load()` returns its float32 values, called once, when written; or,
    for an exact import, `raw()` returns the stored bytes already in `dtype` ([rows, row_bytes]
    uint8), written as they are (`load` is then unused)."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # storage dtype: f32, bf16, f16, int8, int4, q5_0, q4_k, q6_k
    load: Callable[[], np.ndarray] | None
    raw: Callable[[], np.ndarray] | None = None
    note: str = ""  # where the dtype came from (printed by gemma-convert)


@dataclass
class ModelSource:
    """Everything a .gcpp file holds, from whichever reader (HF directory, GGUF)."""

    config: dict[str, Any]
    tokenizer_model: bytes  # serialized SentencePiece ModelProto
    special: dict[str, Any]  # bos, eos (list), pad, unk, start_of_turn, end_of_turn
    chat_template: str | None
    provenance: dict[str, Any]
    tensors: list[TensorSpec] = field(default_factory=list)


def write(source: ModelSource, out_path: str | os.PathLike, *, progress: bool = True,
          n_threads: int = 0) -> None:
    """Write `source` to `out_path` atomically (temp file + rename), streaming tensor by tensor."""
    from . import _core

    out_path = os.fspath(out_path)
    tensors_meta = []
    offset = 0
    tok_entry = {"offset": 0, "nbytes": len(source.tokenizer_model), "kind": "sentencepiece"}
    offset = _align(len(source.tokenizer_model))
    for spec in source.tensors:
        rows = spec.shape[0] if len(spec.shape) == 2 else 1
        layout = tensor_layout(spec.dtype, spec.shape)
        nbytes = _core.tensor_bytes(spec.dtype, layout, rows, spec.shape[-1])
        tensors_meta.append({"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape),
                             "offset": offset, "nbytes": nbytes, "layout": layout})
        offset = _align(offset + nbytes)
    meta = {
        "format_version": FORMAT_VERSION,
        "config": source.config,
        "tokenizer": tok_entry,
        "special": source.special,
        "chat_template": source.chat_template,
        "provenance": source.provenance,
        "tensors": tensors_meta,
    }
    header = json.dumps(meta, indent=None, separators=(",", ":")).encode("utf-8")
    data_start = _align(_FIXED.size + len(header))

    # A name of our own: two writers of the same output never clobber each other's temp file.
    tmp = f"{out_path}.{os.getpid()}-{threading.get_ident()}.partial"
    total = sum(t["nbytes"] for t in tensors_meta)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"writing {os.path.basename(out_path)}")
    try:
        with open(tmp, "wb") as f:
            f.write(_FIXED.pack(MAGIC, FORMAT_VERSION, 0, len(header), data_start))
            f.write(header)
            _pad_to(f, data_start)
            f.write(source.tokenizer_model)
            for spec, entry in zip(source.tensors, tensors_meta):
                _pad_to(f, data_start + entry["offset"])
                rows, cols = (spec.shape[0] if len(spec.shape) == 2 else 1), spec.shape[-1]
                if spec.raw is not None:
                    values = None
                    blob = np.ascontiguousarray(spec.raw(), dtype=np.uint8).reshape(-1)
                    expect = rows * _core.row_bytes(spec.dtype, cols)
                    if blob.nbytes != expect:
                        raise ValueError(f"tensor {spec.name}: {blob.nbytes} bytes of {spec.dtype}, "
                                         f"expected {expect} for shape {list(spec.shape)}")
                else:
                    values = np.ascontiguousarray(spec.load(), dtype=np.float32)
                    if tuple(values.shape) != tuple(spec.shape):
                        raise ValueError(f"tensor {spec.name}: reader produced shape {values.shape}, "
                                         f"expected {spec.shape}")
                    blob = _core.quantize(values.reshape(-1, cols), spec.dtype, n_threads)
                if entry["layout"] == "rows16":
                    blob = _core.interleave_rows16(blob, spec.dtype, rows, cols)
                assert blob.nbytes == entry["nbytes"], spec.name
                f.write(memoryview(blob))
                if bar is not None:
                    bar.update(entry["nbytes"])
                del values, blob
            _pad_to(f, data_start + offset)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        if bar is not None:
            bar.close()


def _pad_to(f: BinaryIO, pos: int) -> None:
    here = f.tell()
    if here > pos:
        raise AssertionError(f"writer overran offset {pos} (at {here})")
    f.write(b"\0" * (pos - here))


def tensor_table(header: Header) -> Iterable[tuple[str, str, list[int], int, int, str]]:
    """(name, dtype, shape, absolute offset, nbytes, layout) rows for the C++ loader."""
    for t in header.tensors:
        try:
            yield (str(t["name"]), str(t["dtype"]), [int(d) for d in t["shape"]],
                   header.data_start + int(t["offset"]), int(t["nbytes"]), str(t.get("layout", "rows")))
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{header.path}: malformed tensor entry {t!r} ({e})") from None
