"""Weight storage types the converter writes, and the defaults."""

# Storage dtypes of one tensor (csrc/kernels/dtype.h; docs/quantization.md).
STORAGE_DTYPES = ("f32", "bf16", "f16", "int8", "int4", "q5_0", "q4_k", "q6_k")
# What --dtype accepts: a storage dtype for every matrix, or "source": each tensor at its
# source precision, without rounding it again (GGUF: the file's own blocks, kept exactly where
# a .gcpp dtype holds them; Hugging Face: the checkpoint's float type); or "q4_k", our 4-bit mix
# (convert/mix.py: q4_k matrices, q5_0 where rows are not whole 256-blocks, int8 embedding).
DTYPES = ("f32", "bf16", "f16", "int8", "int4", "q4_k", "source")
SOURCE = "source"

# From full-precision checkpoints: int8 is near-lossless (Gemma 3 270M: mean KL 0.003 vs f32,
# 96% top-1 agreement; see docs/quantization.md) at half the bytes of bf16, so decode, which is
# memory bound, runs about twice as fast: the default users should get.
DEFAULT_DTYPE = "int8"
# From GGUF files: keep what the file holds (a Q4_K_M file stays Q4_K_M, exactly).
GGUF_DEFAULT_DTYPE = SOURCE
