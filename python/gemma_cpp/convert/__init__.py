"""Checkpoint readers (Hugging Face directories, GGUF files) and the .gcpp writer."""

from __future__ import annotations

import os

from .. import variant
from ..gcpp_format import ModelSource, tensor_layout, write

from ._defaults import DEFAULT_DTYPE, DTYPES, GGUF_DEFAULT_DTYPE, SOURCE


def is_gguf(src: str) -> bool:
    return os.path.isfile(src) and src.endswith(".gguf")


def default_dtype(src: str) -> str:
    """--dtype when none is given: "source" for GGUF files (keep the file's precision, exactly),
    int8 for Hugging Face checkpoints."""
    return GGUF_DEFAULT_DTYPE if is_gguf(src) else DEFAULT_DTYPE


def read_source(src: str, *, dtype: str | None = None, embed_dtype: str | None = None) -> ModelSource:
    """A ModelSource for a Hugging Face checkpoint directory or a .gguf file."""
    dtype = dtype or default_dtype(src)
    for d in (dtype, embed_dtype):
        if d is not None and d not in DTYPES:
            raise ValueError(f"unknown weight dtype {d!r} (choose one of {', '.join(DTYPES)})")
    if dtype == "q4_k":  # a mix: read float values, then choose per tensor
        from . import mix

        return mix.apply(read_source(src, dtype="f32"), embed_dtype=embed_dtype)
    if is_gguf(src):
        from .gguf_reader import read_gguf

        source = read_gguf(src, dtype=dtype, embed_dtype=embed_dtype)
    else:
        from .hf import read_hf

        source = read_hf(src, dtype=dtype, embed_dtype=embed_dtype)
    # Base or instruction-tuned, judged from the source and kept in the file (see variant.py).
    source.provenance["variant"] = variant.detect(variant.names_from_provenance(source.provenance),
                                                  bool(source.chat_template))
    return source


def convert(src: str, out: str, *, dtype: str | None = None, embed_dtype: str | None = None,
            progress: bool = True, n_threads: int = 0) -> str:
    """Convert `src` (HF directory or .gguf) to the single-file model `out`; returns `out`.
    dtype None: default_dtype(src)."""
    source = read_source(src, dtype=dtype, embed_dtype=embed_dtype)
    write(source, out, progress=progress, n_threads=n_threads)
    return out


def dtype_summary(source: ModelSource) -> list[str]:
    """One line per distinct (source types -> stored dtype) choice: count and bytes."""
    from .. import _core

    groups: dict[str, list[int]] = {}
    for t in source.tensors:
        rows = t.shape[0] if len(t.shape) == 2 else 1
        g = groups.setdefault(t.note or t.dtype, [0, 0])
        g[0] += 1
        g[1] += _core.tensor_bytes(t.dtype, tensor_layout(t.dtype, t.shape), rows, t.shape[-1])
    return [f"{n:4d} x {what}: {b / 2**20:.1f} MiB" for what, (n, b) in sorted(groups.items())]


__all__ = ["convert", "read_source", "default_dtype", "dtype_summary", "DTYPES", "DEFAULT_DTYPE",
           "GGUF_DEFAULT_DTYPE", "SOURCE"]
