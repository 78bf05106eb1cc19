"""Tiny random Gemma checkpoints and a small SentencePiece tokenizer, made by the tests.

The weights are drawn large enough that every layer changes the output (tied embeddings
with small weights make random models echo their input, which would let an engine that
skips layers pass); norm weights are non-zero so the (1 + w) rule is exercised.
"""

from __future__ import annotations

import json
import os
import random

import numpy as np

SPECIALS = ["<start_of_turn>", "<end_of_turn>"]

_WORDS = ("the of and to in is was for on that with as by at from his her an were are which this be "
          "water boils at a temperature degrees celsius fahrenheit model language gemma small fast cpu "
          "token matrix vector kernel cache memory thread answer question hello world chat user "
          "über café naïve 東京 日本語 😀 emoji numbers 12345 67890 3.14159").split()


def train_tokenizer(out_dir: str, vocab_size: int = 512) -> str:
    """Train a byte-fallback BPE SentencePiece model with Gemma's special ids; returns its path."""
    import sentencepiece as spm

    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(0)
    corpus = os.path.join(out_dir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        for _ in range(3000):
            f.write(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 16))) + "\n")
    prefix = os.path.join(out_dir, "tokenizer")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=SPECIALS, byte_fallback=True, split_digits=True,
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        character_coverage=1.0, minloglevel=2, num_threads=1)
    os.remove(corpus)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def _randomize(model, seed: int, proj_std: float = 0.25, embed_std: float = 0.1) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm weights: w in (1 + w) away from zero
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g) * embed_std)
            else:
                fan_in = p.shape[1]
                p.copy_(torch.randn(p.shape, generator=g) * proj_std * (64.0 / fan_in) ** 0.5)


def make_checkpoint(out_dir: str, tokenizer_path: str, family: int, *, seed: int = 0,
                    save_dtype: str = "float32", max_shard_size: str | None = None,
                    chat_template: str | None = None, **overrides) -> str:
    """Write a random Gemma `family` (1, 2, 3) checkpoint directory; returns it."""
    import shutil

    import torch
    import transformers as tf

    base = dict(vocab_size=512, hidden_size=80, intermediate_size=160, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=1, head_dim=24, max_position_embeddings=512,
                rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if family == 1:
        base.update(hidden_act="gelu_pytorch_tanh", rope_theta=10000.0)
        cls_cfg, cls_model = tf.GemmaConfig, tf.GemmaForCausalLM
    elif family == 2:
        base.update(hidden_activation="gelu_pytorch_tanh", sliding_window=8, query_pre_attn_scalar=20,
                    attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
        cls_cfg, cls_model = tf.Gemma2Config, tf.Gemma2ForCausalLM
    else:
        base.update(hidden_activation="gelu_pytorch_tanh", sliding_window=8, query_pre_attn_scalar=20)
        cls_cfg, cls_model = tf.Gemma3TextConfig, tf.Gemma3ForCausalLM
    base.update(overrides)
    torch.manual_seed(seed)
    config = cls_cfg(**base)
    config._attn_implementation = "eager"
    model = cls_model(config).eval()
    _randomize(model, seed)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[save_dtype]
    model = model.to(dtype)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out_dir, safe_serialization=True, **kwargs)
    shutil.copy(tokenizer_path, os.path.join(out_dir, "tokenizer.model"))
    if chat_template is not None:
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"chat_template": chat_template}, f)
    return out_dir


def load_reference(ckpt_dir: str):
    """The transformers model in float32 with eager attention: the numerical reference."""
    import torch
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_pretrained(ckpt_dir, dtype=torch.float32,
                                                    attn_implementation="eager")
    return model.eval()


def reference_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=False)
    return out.logits[0].float().numpy()


def reference_greedy(model, ids: list[int], n: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, min_new_tokens=n,
                             eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def q4_0_int4_bytes(x: np.ndarray) -> np.ndarray:
    """llama.cpp's Q4_0 rule (d = signed max-abs / -8 in f16, q = round(x / d) + 8 clipped to
    [0, 15]) laid out as our int4, which has the same levels and nibble order: the 4-bit baseline
    of tests/test_kquant.py and benchmarks/int4_quality.py."""
    rows, cols = x.shape
    b = x.reshape(rows, cols // 32, 32)
    mx = np.take_along_axis(b, np.abs(b).argmax(-1)[..., None], -1)[..., 0]
    d = (mx / -8).astype(np.float16)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = d.astype(np.float32)[..., None]
        q = np.clip(np.where(df != 0, np.round(b / df), 0) + 8, 0, 15).astype(np.uint8)
    return np.concatenate([d.view(np.uint8).reshape(rows, -1), (q[..., :16] | q[..., 16:] << 4).reshape(rows, -1)], 1)


def write_q4_0_baseline(ckpt: str, out: str) -> None:
    """The checkpoint as llama.cpp's Q4_0 would store it (q4_0_int4_bytes for every matrix, an int8
    embedding, norms in f32), written as a .gcpp: the 4-bit baseline of tests/test_kquant.py and
    benchmarks/int4_quality.py."""
    from gemma_cpp.convert import read_source
    from gemma_cpp.gcpp_format import write

    src = read_source(ckpt, dtype="f32")
    for t in src.tensors:
        if len(t.shape) == 2:
            t.dtype = "int8" if t.name == "embed" else "int4"
            if t.name != "embed":
                t.raw = (lambda t=t: q4_0_int4_bytes(np.asarray(t.load(), np.float32)))
    write(src, out, progress=False)
