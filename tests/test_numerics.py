"""The forward pass against transformers (float32, eager attention): every-position logits,
decode-step logits through the KV cache, and greedy tokens, for Gemma 1, 2 and 3.

Tolerance: 1e-4 x max|reference logit|. Both engines compute in float32 but sum in different
orders; with the tiny widths here rounding differences stay near 1e-6 relative (measured
~3e-6), so 1e-4 is tight enough to catch any real mistake (a wrong norm, rope layout or
scale moves logits by whole percent) while leaving room for summation order.
"""

from __future__ import annotations

import numpy as np
import pytest

from checkpoints import reference_greedy, reference_logits
from gemma_cpp import Model

REL_TOL = 1e-4


def _prompt(n: int, seed: int = 0, vocab: int = 512) -> list[int]:
    rng = np.random.default_rng(seed)
    return [2] + rng.integers(4, vocab, size=n - 1).tolist()


def assert_logits_close(ours: np.ndarray, ref: np.ndarray, rel: float = REL_TOL) -> None:
    assert ours.shape == ref.shape
    scale = float(np.abs(ref).max())
    err = float(np.abs(ours - ref).max())
    assert err <= rel * scale, f"max |ours - ref| = {err:.3g} > {rel:g} x {scale:.3g}"


@pytest.mark.parametrize("spec", ["g1_mqa", "g1_gqa", "g1_mha", "g2", "g3", "g3_scaled"])
def test_logits_every_position(spec, make_ckpt, make_gcpp, reference):
    ckpt = make_ckpt(spec)
    model = Model(make_gcpp(spec))
    ref = reference(ckpt)
    for n, seed in ((7, 1), (40, 2)):  # 40 > the sliding window (8) of the Gemma 2/3 configs
        ids = _prompt(n, seed)
        assert_logits_close(model.logits(ids), reference_logits(ref, ids))


@pytest.mark.parametrize("spec", ["g1_mqa", "g1_gqa", "g2", "g3", "g3_scaled"])
def test_greedy_32_tokens_and_decode_logits(spec, make_ckpt, make_gcpp, reference):
    """32 greedy tokens equal transformers' generate(); every decode step's logits match."""
    ckpt = make_ckpt(spec)
    model = Model(make_gcpp(spec))
    ref = reference(ckpt)
    for n in (12, 120):  # a prompt longer than 100 tokens too
        ids = _prompt(n, seed=n)
        expected = reference_greedy(ref, ids, 32)
        ours = model.generate(ids, max_new_tokens=32, ignore_eos=True)
        assert ours == expected
        # Decode path: prefill, then one token at a time through the KV cache.
        full_ref = reference_logits(ref, ids + expected)
        s = model._session
        s.reset()
        s.eval(ids)
        assert_logits_close(s.last_logits(), full_ref[len(ids) - 1])
        greedy = _core_params()
        for i, tok in enumerate(expected[:-1]):
            nxt = s.step(tok, greedy)
            assert_logits_close(s.last_logits(), full_ref[len(ids) + i])
            assert nxt == expected[i + 1]


def _core_params():
    from gemma_cpp import _core

    return _core.SamplingParams()


def test_decode_past_sliding_window_ring(make_ckpt, make_gcpp, reference):
    """Generation far past the window: sliding layers read their ring buffer across wrap-around."""
    spec = "g2"
    ckpt = make_ckpt(spec)
    # A small max_seq_len makes the ring (window + chunk) wrap many times.
    model = Model(make_gcpp(spec), max_seq_len=300)
    ref = reference(ckpt)
    ids = _prompt(5, seed=9)
    ours = model.generate(ids, max_new_tokens=290, ignore_eos=True)
    full = reference_logits(ref, ids + ours)
    ours_all = Model(make_gcpp(spec)).logits(ids + ours)
    assert_logits_close(ours_all, full)
    assert ours == [int(np.argmax(full[len(ids) - 1 + i])) for i in range(len(ours))]


def test_bf16_checkpoint_exact(make_ckpt, make_gcpp, reference):
    """A bf16 checkpoint converted to bf16 holds the same values transformers upcasts to f32."""
    ckpt = make_ckpt("g1_mqa", save_dtype="bfloat16")
    model = Model(make_gcpp("g1_mqa", dtype="bf16", save_dtype="bfloat16"))
    ref = reference(ckpt)
    ids = _prompt(30, seed=3)
    assert_logits_close(model.logits(ids), reference_logits(ref, ids))
    assert model.generate(ids, max_new_tokens=32, ignore_eos=True) == reference_greedy(ref, ids, 32)


def test_bf16_rounding_of_f32_checkpoint(make_ckpt, make_gcpp, reference):
    """f32 weights stored as bf16 by the converter (round to nearest even): the result must equal
    transformers run on the same weights rounded to bf16, to float32 precision."""
    import copy

    import torch

    ckpt = make_ckpt("g1_mqa")
    model = Model(make_gcpp("g1_mqa", dtype="bf16"))
    rounded = copy.deepcopy(reference(ckpt))
    with torch.no_grad():
        for name, p in rounded.named_parameters():
            if p.ndim == 2:  # the converter keeps norm vectors in f32
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    ids = _prompt(30, seed=4)
    assert_logits_close(model.logits(ids), reference_logits(rounded, ids))
    assert model.generate(ids, max_new_tokens=32, ignore_eos=True) == reference_greedy(rounded, ids, 32)


def test_sharded_checkpoint(make_ckpt, make_gcpp, reference, tmp_path):
    """A checkpoint saved in several shards + index converts to the same model."""
    import glob
    import os

    ckpt = make_ckpt("g1_gqa", max_shard_size="50KB")
    assert os.path.exists(os.path.join(ckpt, "model.safetensors.index.json"))
    assert len(glob.glob(os.path.join(ckpt, "model-*.safetensors"))) > 1
    model = Model(make_gcpp("g1_gqa", max_shard_size="50KB"))
    ids = _prompt(20, seed=5)
    assert_logits_close(model.logits(ids), reference_logits(reference(ckpt), ids))


@pytest.mark.slow
def test_gemma_2b_width(make_ckpt, make_gcpp, reference):
    """Two layers at the real Gemma-1 2B width: d=2048, 8 heads, MQA, head_dim 256, FFN 16384,
    vocab 256000. Saved as bf16 (what Google ships) and converted to bf16, so both engines use the
    same weight values; sqrt(2048) is not a round number, which pins the embedding scale."""
    spec = dict(family=1, vocab_size=256000, hidden_size=2048, intermediate_size=16384, num_hidden_layers=2,
                num_attention_heads=8, num_key_value_heads=1, head_dim=256, max_position_embeddings=8192)
    ckpt = make_ckpt(spec, save_dtype="bfloat16")
    model = Model(make_gcpp(spec, dtype="bf16", save_dtype="bfloat16"))
    ref = reference(ckpt)
    for seed, n in ((0, 5), (1, 9)):
        ids = _prompt(n, seed=seed, vocab=256000)
        assert_logits_close(model.logits(ids), reference_logits(ref, ids))


@pytest.mark.parametrize("prefix", ["language_model.model.", "model.language_model."])
def test_gemma3_multimodal_checkpoint_text_part(prefix, make_ckpt, reference, tmp_path):
    """Gemma3ForConditionalGeneration checkpoints nest the text model (hub files use
    'language_model.model.', transformers 5 writes 'model.language_model.') beside a vision tower
    that a text-only runtime skips."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    from gemma_cpp.convert import convert

    src = make_ckpt("g3")
    d = tmp_path / "mm"
    d.mkdir()
    shutil.copy(f"{src}/tokenizer.model", d / "tokenizer.model")
    text_cfg = json.load(open(f"{src}/config.json"))
    json.dump({"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
               "text_config": text_cfg, "vision_config": {"model_type": "siglip_vision_model"},
               "eos_token_id": [1, 106]}, open(d / "config.json", "w"))
    tensors = {prefix + k[len("model."):]: v for k, v in load_file(f"{src}/model.safetensors").items()}
    tensors["model.vision_tower.vision_model.embeddings.patch_embedding.weight" if prefix.startswith("model.")
            else "vision_tower.vision_model.embeddings.patch_embedding.weight"] = np.ones((4, 3), np.float32)
    tensors["multi_modal_projector.mm_input_projection_weight"] = np.ones((4, 4), np.float32)
    save_file(tensors, str(d / "model.safetensors"))
    out = str(tmp_path / "mm.gcpp")
    convert(str(d), out, dtype="f32", progress=False)
    model = Model(out)
    assert model.config.model_type == "gemma3_text"
    assert 106 in model.metadata["special"]["eos"]
    ids = _prompt(20, seed=11)
    assert_logits_close(model.logits(ids), reference_logits(reference(src), ids))
