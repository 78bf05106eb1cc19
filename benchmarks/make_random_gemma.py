#!/usr/bin/env python3
"""Write a full-size random-weight Gemma-1 Hugging Face checkpoint for benchmarks.

    python benchmarks/make_random_gemma.py --shape 2b OUT_DIR [--layers N]   (or 270m, 7b)

config.json (Gemma-1 2B or 7B shape, optionally fewer layers), one bf16 safetensors shard per
layer plus one for the embedding (written by hand: numpy safetensors cannot store bf16), a
model.safetensors.index.json and a tiny trained tokenizer.model (tests/checkpoints.py). Weights
are drawn from a 16M-value Gaussian pool at random offsets, so generation is fast and memory
stays at one tensor chunk; their values do not matter for speed (scaled 1/sqrt(fan_in) so
activations stay finite).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np

SHAPES = {
    # Gemma 3 270M's sizes in the Gemma 1 architecture (for speed: the same bytes and FLOPs a token).
    "270m": dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                 num_key_value_heads=1, head_dim=256),
    "2b": dict(hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
               num_key_value_heads=1, head_dim=256),
    "7b": dict(hidden_size=3072, intermediate_size=24576, num_hidden_layers=28, num_attention_heads=16,
               num_key_value_heads=16, head_dim=256),
}
POOL = 1 << 24


def _bf16_pool(rng) -> np.ndarray:
    x = rng.standard_normal(POOL).astype(np.float32)
    return (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation is fine for random values


def _scale_bf16(pool: np.ndarray, scale: float) -> np.ndarray:
    f = (pool.astype(np.uint32) << 16).view(np.float32) * np.float32(scale)
    return (f.view(np.uint32) >> 16).astype(np.uint16)


def write_shard(path: str, tensors: list[tuple[str, tuple[int, ...], float]], pool, rng) -> None:
    """tensors: (name, shape, std). Streams each tensor in pool-sized chunks."""
    header, off = {}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, std in tensors:
            n = int(np.prod(shape))
            if len(shape) == 1:  # norm weights: small, so (1 + w) ~ 1
                f.write(_scale_bf16(pool[:n], 0.1).tobytes())
                continue
            scaled = _scale_bf16(pool, std)
            done = 0
            while done < n:
                start = int(rng.integers(0, POOL // 2))
                m = min(n - done, POOL - start)
                f.write(scaled[start:start + m].tobytes())
                done += m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the real model")
    ap.add_argument("--vocab", type=int, default=256000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = dict(SHAPES[a.shape])
    if a.layers:
        cfg["num_hidden_layers"] = a.layers
    os.makedirs(a.out, exist_ok=True)
    config = dict(architectures=["GemmaForCausalLM"], model_type="gemma", vocab_size=a.vocab,
                  max_position_embeddings=8192, rms_norm_eps=1e-6, rope_theta=10000.0,
                  hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
                  bos_token_id=2, eos_token_id=1, pad_token_id=0, torch_dtype="bfloat16",
                  attention_bias=False, tie_word_embeddings=True, **cfg)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from checkpoints import train_tokenizer  # noqa: E402

    tok = train_tokenizer(os.path.join(a.out, "_tok"))
    os.replace(tok, os.path.join(a.out, "tokenizer.model"))
    import shutil

    shutil.rmtree(os.path.join(a.out, "_tok"), ignore_errors=True)

    rng = np.random.default_rng(a.seed)
    pool = _bf16_pool(rng)
    d, F = cfg["hidden_size"], cfg["intermediate_size"]
    H, KV, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    weight_map = {}
    shard = "model-embed.safetensors"
    write_shard(os.path.join(a.out, shard), [("model.embed_tokens.weight", (a.vocab, d), 0.03),
                                              ("model.norm.weight", (d,), 0)], pool, rng)
    weight_map.update({"model.embed_tokens.weight": shard, "model.norm.weight": shard})
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        ts = [(p + "input_layernorm.weight", (d,), 0), (p + "post_attention_layernorm.weight", (d,), 0),
              (p + "self_attn.q_proj.weight", (H * hd, d), d ** -0.5),
              (p + "self_attn.k_proj.weight", (KV * hd, d), d ** -0.5),
              (p + "self_attn.v_proj.weight", (KV * hd, d), d ** -0.5),
              (p + "self_attn.o_proj.weight", (d, H * hd), (H * hd) ** -0.5),
              (p + "mlp.gate_proj.weight", (F, d), d ** -0.5),
              (p + "mlp.up_proj.weight", (F, d), d ** -0.5),
              (p + "mlp.down_proj.weight", (d, F), F ** -0.5)]
        shard = f"model-layer{i:03d}.safetensors"
        write_shard(os.path.join(a.out, shard), ts, pool, rng)
        weight_map.update({n: shard for n, _, _ in ts})
        print(f"layer {i + 1}/{cfg['num_hidden_layers']}", flush=True)
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    n_params = a.vocab * d + cfg["num_hidden_layers"] * (d * (H + 2 * KV) * hd + H * hd * d + 3 * d * F)
    print(f"wrote {a.out}: {n_params / 1e9:.2f} B parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
