"""Write a random-weight Gemma-1-shaped GGUF (arch "gemma") the way llama.cpp's
convert_hf_to_gguf.py lays out Gemma, streaming tensor by tensor so RAM stays small.

The weights are random (normal, std 0.02; RMSNorm weights stored as 1 + w as llama.cpp's
converter does), so the model is only good for speed measurements. The tokenizer is a
synthetic SentencePiece-style ("llama") vocabulary: Gemma's special ids (pad 0, eos 1,
bos 2, unk 3), the 256 byte tokens <0x00>..<0xFF>, then filler pieces up to `vocab`.

    python benchmarks/gguf_random.py out.gguf --layers 2
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import numpy as np

ALIGN = 32  # GGUF default alignment


@dataclass(frozen=True)
class GemmaShape:
    name: str
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    context: int = 8192
    eps: float = 1e-6
    rope_base: float = 10000.0

    def params(self) -> int:
        d, hd = self.d_model, self.head_dim
        per_layer = (d * self.n_heads * hd * 2 + d * self.n_kv_heads * hd * 2 + 3 * d * self.ffn_dim + 2 * d)
        return self.vocab * d + d + self.n_layers * per_layer


GEMMA1_2B = GemmaShape("gemma1-2b", vocab=256000, d_model=2048, n_layers=18, n_heads=8, n_kv_heads=1,
                       head_dim=256, ffn_dim=16384)
GEMMA1_7B = GemmaShape("gemma1-7b", vocab=256000, d_model=3072, n_layers=28, n_heads=16, n_kv_heads=16,
                       head_dim=256, ffn_dim=24576)
SHAPES = {"2b": GEMMA1_2B, "7b": GEMMA1_7B}


def tensor_plan(s: GemmaShape) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape [rows, cols], kind) in llama.cpp's order; kind 'norm' or 'weight'."""
    d = s.d_model
    plan = [("token_embd.weight", (s.vocab, d), "weight")]
    for i in range(s.n_layers):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (d,), "norm"),
            (b + "attn_q.weight", (s.n_heads * s.head_dim, d), "weight"),
            (b + "attn_k.weight", (s.n_kv_heads * s.head_dim, d), "weight"),
            (b + "attn_v.weight", (s.n_kv_heads * s.head_dim, d), "weight"),
            (b + "attn_output.weight", (d, s.n_heads * s.head_dim), "weight"),
            (b + "ffn_norm.weight", (d,), "norm"),
            (b + "ffn_gate.weight", (s.ffn_dim, d), "weight"),
            (b + "ffn_up.weight", (s.ffn_dim, d), "weight"),
            (b + "ffn_down.weight", (d, s.ffn_dim), "weight"),
        ]
    plan.append(("output_norm.weight", (d,), "norm"))
    return plan


def _vocab(n: int) -> tuple[list[str], list[float], list[int]]:
    # token types: 1 normal, 2 unknown, 3 control, 6 byte (llama.cpp's llama_token_type)
    toks = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [3, 3, 3, 2]
    toks += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    printable = [chr(c) for c in range(33, 127)]
    toks += ["\u2581"] + ["\u2581" + c for c in printable] + printable
    types += [1] * (1 + 2 * len(printable))
    if len(toks) > n:
        raise ValueError(f"vocab {n} too small for the synthetic tokenizer ({len(toks)} base pieces)")
    i = 0
    while len(toks) < n:
        toks.append(f"\u2581tok{i}")
        types.append(1)
        i += 1
    scores = [0.0] * 4 + [0.0] * 256 + [-float(j) for j in range(n - 260)]
    return toks, scores, types


def write_random_gemma_gguf(path: str, shape: GemmaShape = GEMMA1_2B, *, seed: int = 0, std: float = 0.02,
                            dtype: str = "f16", chunk_elems: int = 1 << 24, log=print) -> str:
    """Write `shape` with random weights to `path` (via a .partial file renamed at the end)."""
    import gguf

    np_dt = {"f16": np.float16, "f32": np.float32}[dtype]
    ftype = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}[dtype]
    tmp = path + ".partial"
    w = gguf.GGUFWriter(tmp, "gemma", use_temp_file=False)
    w.add_name(f"{shape.name} random weights (speed benchmark)")
    w.add_context_length(shape.context)
    w.add_embedding_length(shape.d_model)
    w.add_block_count(shape.n_layers)
    w.add_feed_forward_length(shape.ffn_dim)
    w.add_head_count(shape.n_heads)
    w.add_head_count_kv(shape.n_kv_heads)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_layer_norm_rms_eps(shape.eps)
    w.add_rope_freq_base(shape.rope_base)
    w.add_file_type(int(ftype))
    toks, scores, types = _vocab(shape.vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_pad_token_id(0)
    w.add_eos_token_id(1)
    w.add_bos_token_id(2)
    w.add_unk_token_id(3)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)

    plan = tensor_plan(shape)
    for name, shp, kind in plan:
        # norms are F32 as llama.cpp writes 1-D tensors; matrices in `dtype`
        dt = np.float32 if kind == "norm" else np_dt
        n = int(np.prod(shp))
        w.add_tensor_info(name, shp, np.dtype(dt), n * np.dtype(dt).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    rng = np.random.default_rng(seed)
    t0 = t_log = time.time()
    total = sum(int(np.prod(s)) for _, s, _ in plan)
    done = 0
    # Stream each tensor in chunks of rows (GGUFWriter.write_tensor_data needs the whole
    # tensor in memory; token_embd alone is 2 GB at f32). Same padding rules as the writer.
    for name, shp, kind in plan:
        fout.write(b"\0" * (-fout.tell() % ALIGN))
        if kind == "norm":
            (1.0 + std * rng.standard_normal(shp[0], dtype=np.float32)).astype(np.float32).tofile(fout)
            done += shp[0]
            continue
        rows, cols = shp
        step = max(1, chunk_elems // cols)
        for r0 in range(0, rows, step):
            r = min(step, rows - r0)
            x = rng.standard_normal((r, cols), dtype=np.float32)
            x *= std
            x.astype(np_dt).tofile(fout)
            done += r * cols
        if log and time.time() - t_log > 10:
            t_log = time.time()
            log(f"  {name}: {done / total:6.1%} written ({t_log - t0:.0f}s)")
    nbytes = fout.tell()
    fout.write(b"\0" * (-nbytes % ALIGN))
    fout.flush()
    os.fsync(fout.fileno())
    w.fout = None
    fout.close()
    os.replace(tmp, path)
    if log:
        log(f"  wrote {path} ({os.path.getsize(path) / 1e9:.2f} GB, {total / 1e9:.2f} B params, "
            f"{time.time() - t0:.0f}s)")
    return path


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="2b")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the real shape")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("f16", "f32"), default="f16")
    a = ap.parse_args()
    s = SHAPES[a.shape]
    if a.layers:
        s = replace(s, n_layers=a.layers)
    write_random_gemma_gguf(a.out, s, seed=a.seed, dtype=a.dtype)
