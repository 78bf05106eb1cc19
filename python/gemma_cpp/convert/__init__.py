"""Checkpoint readers (Hugging Face directories, GGUF files) and the .gcpp writer."""

from __future__ import annotations

import os

from ..gcpp_format import ModelSource, write

DTYPES = ("f32", "bf16", "f16", "int8", "int4")


def read_source(src: str, *, dtype: str = "bf16", embed_dtype: str | None = None) -> ModelSource:
    """A ModelSource for a Hugging Face checkpoint directory or a .gguf file."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown weight dtype {dtype!r} (choose one of {', '.join(DTYPES)})")
    if os.path.isfile(src) and src.endswith(".gguf"):
        from .gguf_reader import read_gguf

        return read_gguf(src, dtype=dtype, embed_dtype=embed_dtype)
    from .hf import read_hf

    return read_hf(src, dtype=dtype, embed_dtype=embed_dtype)


def convert(src: str, out: str, *, dtype: str = "bf16", embed_dtype: str | None = None,
            progress: bool = True, n_threads: int = 0) -> str:
    """Convert `src` (HF directory or .gguf) to the single-file model `out`; returns `out`."""
    source = read_source(src, dtype=dtype, embed_dtype=embed_dtype)
    write(source, out, progress=progress, n_threads=n_threads)
    return out


__all__ = ["convert", "read_source", "DTYPES"]
