#!/usr/bin/env python3
"""4-bit quality on random checkpoints: mean KL(f32 || 4-bit) of next-token distributions, our
`--dtype q4_k` mix against llama.cpp's Q4_0 rule computed in numpy (d = signed max-abs / -8 in f16,
q = round(x / d) + 8 clipped to [0, 15], stored as our int4, which has the same levels), both with
an int8 embedding and every other matrix at 4.5 bits/weight.

    PYTHONPATH=python python benchmarks/int4_quality.py [WORKDIR]

Needs torch + transformers (the tests' checkpoint maker). Results: docs/quantization.md.
"""

from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

SPECS = {
    "g3": dict(family=3, hidden_size=256, intermediate_size=512, num_attention_heads=2, num_key_value_heads=1,
               head_dim=128, num_hidden_layers=4, query_pre_attn_scalar=128),
    "g2": dict(family=2, hidden_size=256, intermediate_size=512, num_attention_heads=2, num_key_value_heads=1,
               head_dim=128, num_hidden_layers=4, query_pre_attn_scalar=128),
    "g1": dict(family=1, hidden_size=256, intermediate_size=768, num_attention_heads=2, num_key_value_heads=2,
               head_dim=128, num_hidden_layers=3),
}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def main() -> None:
    from checkpoints import make_checkpoint, train_tokenizer, write_q4_0_baseline

    from gemma_cpp import Model
    from gemma_cpp.convert import read_source
    from gemma_cpp.gcpp_format import write

    work = sys.argv[1] if len(sys.argv) > 1 else "/tmp/gemma_cpp_int4_quality"
    os.makedirs(work, exist_ok=True)
    tok = os.path.join(work, "tok", "tokenizer.model")
    if not os.path.exists(tok):
        tok = train_tokenizer(os.path.join(work, "tok"))
    rng = np.random.default_rng(0)
    print("| checkpoint | llama.cpp Q4_0 rule | ours q4_k | ratio |\n| --- | ---: | ---: | ---: |")
    for name, spec in SPECS.items():
        kw = dict(spec)
        family = kw.pop("family")
        ckpt = os.path.join(work, f"ckpt-{name}")
        if not os.path.exists(os.path.join(ckpt, "config.json")):
            make_checkpoint(ckpt, tok, family, **kw)
        paths = {k: os.path.join(ckpt, f"{k}.gcpp") for k in ("f32", "q4_k", "q4_0")}
        write(read_source(ckpt, dtype="f32"), paths["f32"], progress=False)
        write(read_source(ckpt, dtype="q4_k"), paths["q4_k"], progress=False)
        write_q4_0_baseline(ckpt, paths["q4_0"])
        ids = [2] + rng.integers(4, 500, 200).tolist()
        ref = log_softmax(Model(paths["f32"]).logits(ids))
        kl = {k: float((np.exp(ref) * (ref - log_softmax(Model(paths[k]).logits(ids)))).sum(-1).mean())
              for k in ("q4_0", "q4_k")}
        print(f"| {name} | {kl['q4_0']:.3g} | {kl['q4_k']:.3g} | {kl['q4_k'] / kl['q4_0']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
