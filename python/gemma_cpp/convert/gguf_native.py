"""Exact import of GGUF tensors: each ggml block type onto a .gcpp dtype that holds its levels.

`--dtype source` (the default for GGUF files) keeps every tensor at its source precision without
rounding it again. A tensor's GGUF blocks either go to the file byte for byte (q5_0, q4_k, q6_k,
f32, f16, bf16) or are re-laid out losslessly into our 32-block formats, whose rows keep the
scales first (docs/quantization.md):

    Q8_0 (f16 d + 32 int8)        -> int8  same d, same q (Q8_0's -128 included: the kernels allow it)
    Q4_0 (f16 d + 16 nibble bytes) -> int4  same d, same nibbles (identical nibble order)
    Q5_0 / Q4_0 inside a fused tensor with Q8_0 parts -> int8  (levels q - 16 / q - 8 fit int8)

With "source", fused tensors (q/k/v -> qkv, gate/up -> gate_up) whose parts have different types
are stored as row slices `qkv#0`, `qkv#1`, ... (docs/format.md), each part exact. Types with no
exact container here (Q2_K, Q3_K, IQ*, TQ*, MXFP4) become bf16 — not exact, but finer
than the source's 2-6 bit levels — and the converter says so. With an explicit --dtype, parts
go to that dtype, copied exactly where it holds their levels (exact_into) and re-quantised from
their float values otherwise.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .gguf_file import GGUFFile

# ggml type name -> (our dtype, exact)
NATIVE = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "int8", "Q4_0": "int4", "Q5_0": "q5_0", "Q4_1": "q4_1", "Q5_1": "q5_1",
          "Q4_K": "q4_k", "Q5_K": "q5_k", "Q6_K": "q6_k"}
_INT8_EXACT = {"Q4_0", "Q5_0", "Q8_0"}
_FLOAT = {"F32", "F16", "BF16"}


def choose(gtype: str) -> tuple[str, bool]:
    """The .gcpp dtype for a tensor of ggml type `gtype`, and whether it holds it exactly."""
    if gtype in NATIVE:
        return NATIVE[gtype], True
    return "bf16", False


def exact_into(types: list[str], dtype: str) -> bool:
    """Whether parts of these ggml types can all be stored in `dtype` without rounding."""
    kinds = set(types)
    if all(NATIVE.get(t) == dtype for t in kinds):
        return True
    return (dtype == "int8" and kinds <= _INT8_EXACT) or (dtype == "f32" and kinds <= _FLOAT)


def _blocks(g: GGUFFile, name: str, rows: int | None, nbytes: int) -> np.ndarray:
    raw = g.raw(name)
    if rows is not None:
        raw = raw[:rows]
    return np.ascontiguousarray(raw).reshape(raw.shape[0], -1, nbytes)


def _int8_levels(gtype: str, blk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f16 d as uint8 pairs [.., 2], levels int8 [.., 32]) of Q8_0 / Q4_0 / Q5_0 blocks."""
    d = blk[..., :2]
    if gtype == "Q8_0":
        return d, blk[..., 2:].view(np.int8)
    if gtype == "Q4_0":
        qs = blk[..., 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.int8) - np.int8(8)
        return d, q
    assert gtype == "Q5_0"
    qh = blk[..., 2:6].copy().view("<u4")  # [.., 1]
    qs = blk[..., 6:]
    lo = np.concatenate([qs & 15, qs >> 4], axis=-1)
    hi = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    return d, (lo | (hi << 4)).astype(np.int8) - np.int8(16)


_BLOCK_BYTES = {"Q8_0": 34, "Q4_0": 18, "Q5_0": 22}


def raw_rows(g: GGUFFile, name: str, dtype: str, rows: int | None = None) -> np.ndarray:
    """GGUF tensor `name` (its first `rows` rows) in .gcpp dtype `dtype`, exactly, as uint8
    [rows, row_bytes]. `dtype` must be what choose() gave for this type (exact)."""
    info = g.tensors[name]
    gtype = info.type_name
    if dtype == "f32" and gtype in _FLOAT:  # f16/bf16 widen to f32 exactly
        vals = g.dequantize(name)
        vals = vals if rows is None else vals[:rows]
        return np.ascontiguousarray(vals, dtype=np.float32).view(np.uint8).reshape(vals.shape[0], -1)
    if dtype in ("q5_0", "q4_1", "q5_1", "q4_k", "q5_k", "q6_k", "f16", "bf16"):
        assert NATIVE[gtype] == dtype, (gtype, dtype)
        raw = g.raw(name)
        return np.ascontiguousarray(raw if rows is None else raw[:rows])
    blk = _blocks(g, name, rows, _BLOCK_BYTES[gtype])
    n, nb = blk.shape[:2]
    if dtype == "int4":  # Q4_0: the same nibbles; our rows are [nb scales][nb x 16 quant bytes]
        assert gtype == "Q4_0"
        return np.concatenate([blk[..., :2].reshape(n, -1), blk[..., 2:].reshape(n, -1)], axis=1)
    assert dtype == "int8", dtype
    d, q = _int8_levels(gtype, blk)
    return np.concatenate([d.reshape(n, -1), q.view(np.uint8).reshape(n, -1)], axis=1)


def loader(g: GGUFFile, names: list[str], dtype: str, rows: int | None) -> Callable[[], np.ndarray]:
    """load() -> the fused tensor's rows in `dtype` (parts stacked in order), exactly."""
    def load() -> np.ndarray:
        parts = [raw_rows(g, n, dtype, rows) for n in names]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return load
