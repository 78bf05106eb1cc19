"""Write the fuzzers' seed corpus: small valid files of each kind, made the way the tests make
theirs (tests/checkpoints.py, tests/test_gguf.py), one directory per target (targets.py).

    python tests/fuzz/seeds.py OUT_DIR      # OUT_DIR/{gguf,safetensors,gcpp,config}/...

The models are tiny (d_model 32, 2 layers, a 512-piece tokenizer) so that a fuzzer runs
hundreds of inputs a second; tests/test_fuzz.py writes the same corpus into its scratch space.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: checkpoints.py, test_gguf.py

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, head_dim=16, max_position_embeddings=64)


def write_seeds(out: str, tokenizer_path: str | None = None) -> dict[str, list[str]]:
    """Seed files under out/<target>/; returns {target: [paths]}."""
    from checkpoints import make_checkpoint, train_tokenizer
    from test_gguf import write_gguf_like_llamacpp

    from gemma_cpp.convert import convert

    work = os.path.join(out, "_work")
    os.makedirs(work, exist_ok=True)
    tok = tokenizer_path or train_tokenizer(os.path.join(work, "tokenizer"))
    seeds: dict[str, list[str]] = {t: [] for t in ("gguf", "safetensors", "gcpp", "config")}

    def seed(target: str, name: str, src: str) -> None:
        os.makedirs(os.path.join(out, target), exist_ok=True)
        dst = os.path.join(out, target, name)
        shutil.copyfile(src, dst)
        seeds[target].append(dst)

    for family, extra in ((1, {}), (3, dict(sliding_window=8, sliding_window_pattern=2,
                                             query_pre_attn_scalar=16))):
        ckpt = make_checkpoint(os.path.join(work, f"g{family}"), tok, family, **SMALL, **extra)
        seed("safetensors", f"g{family}.safetensors", os.path.join(ckpt, "model.safetensors"))
        seed("config", f"g{family}.json", os.path.join(ckpt, "config.json"))
        for dtype in ("int8", "f32") if family == 1 else ("q4_k",):
            gcpp = convert(ckpt, os.path.join(work, f"g{family}.{dtype}.gcpp"), dtype=dtype, progress=False)
            seed("gcpp", f"g{family}.{dtype}.gcpp", gcpp)
        for ftype in ("F32", "Q8_0"):
            path = os.path.join(work, f"g{family}.{ftype}.gguf")
            write_gguf_like_llamacpp(ckpt, path, ftype)
            seed("gguf", f"g{family}.{ftype}.gguf", path)
    g2 = os.path.join(work, "gemma2.json")  # a Gemma 2 config too: soft-caps, query scalar
    with open(g2, "w") as f:
        json.dump({"model_type": "gemma2", "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "head_dim": 16, "intermediate_size": 64, "vocab_size": 512,
                   "sliding_window": 8, "query_pre_attn_scalar": 16, "attn_logit_softcapping": 50.0,
                   "final_logit_softcapping": 30.0}, f)
    seed("config", "gemma2.json", g2)
    shutil.rmtree(work)
    return seeds


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/fuzz/seeds.py OUT_DIR")
    for target, paths in write_seeds(sys.argv[1]).items():
        print(f"{target}: {len(paths)} seeds, {sum(os.path.getsize(p) for p in paths)} bytes")
