"""Checkpoint readers (Hugging Face directories, GGUF files) and the .gcpp writer."""

from __future__ import annotations

import os

from .. import variant
from ..gcpp_format import ModelSource, write

from ._defaults import DEFAULT_DTYPE, DTYPES


def read_source(src: str, *, dtype: str = DEFAULT_DTYPE, embed_dtype: str | None = None) -> ModelSource:
    """A ModelSource for a Hugging Face checkpoint directory or a .gguf file."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown weight dtype {dtype!r} (choose one of {', '.join(DTYPES)})")
    if os.path.isfile(src) and src.endswith(".gguf"):
        from .gguf_reader import read_gguf

        source = read_gguf(src, dtype=dtype, embed_dtype=embed_dtype)
    else:
        from .hf import read_hf

        source = read_hf(src, dtype=dtype, embed_dtype=embed_dtype)
    # Base or instruction-tuned, judged from the source and kept in the file (see variant.py).
    source.provenance["variant"] = variant.detect(variant.names_from_provenance(source.provenance),
                                                  bool(source.chat_template))
    return source


def convert(src: str, out: str, *, dtype: str = DEFAULT_DTYPE, embed_dtype: str | None = None,
            progress: bool = True, n_threads: int = 0) -> str:
    """Convert `src` (HF directory or .gguf) to the single-file model `out`; returns `out`."""
    source = read_source(src, dtype=dtype, embed_dtype=embed_dtype)
    write(source, out, progress=progress, n_threads=n_threads)
    return out


__all__ = ["convert", "read_source", "DTYPES", "DEFAULT_DTYPE"]
