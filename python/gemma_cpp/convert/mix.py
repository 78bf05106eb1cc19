"""`--dtype q4_k`: our 4-bit mix for full-precision sources (docs/quantization.md).

* matrices whose rows are whole 256-weight super-blocks: q4_k (4.5 bits/weight), quantised by our
  own search (csrc/quant/kquant.cpp: quantize_row_q4_k);
* other matrices (Gemma 3 270M: d_model 640 feeds q/k/v and gate/up): q5_0 (5.5 bits, the
  32-block scale search on [-16, 15]); rows not even whole 32-blocks: int8;
* the embedding / output matrix: int8 (8.5 bits; it is also every token's output layer, where a
  4-bit error shows in every logit, which is why llama.cpp keeps it at Q6_K/Q8_0 in its 4-bit
  mixes), or --embed-dtype.
"""

from __future__ import annotations

from ..gcpp_format import ModelSource

MIX = "q4_k"
_QK = 256


def apply(source: ModelSource, *, embed_dtype: str | None = None) -> ModelSource:
    """Set every matrix of `source` (read as f32) to the q4_k mix; returns it."""
    for t in source.tensors:
        if len(t.shape) != 2:
            continue
        t.raw = None  # quantise from the float values
        cols = t.shape[1]
        if t.name == "embed":
            t.dtype, why = embed_dtype or "int8", "embedding/output"
        elif cols % _QK == 0:
            t.dtype, why = "q4_k", "rows of whole 256-weight super-blocks"
        elif cols % 32 == 0:
            t.dtype, why = "q5_0", f"rows of {cols} are not whole 256-blocks"
        else:
            t.dtype, why = "int8", f"rows of {cols} are not whole 32-blocks"
        t.note = f"{t.dtype} ({why})"
    return source
