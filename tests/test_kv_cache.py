"""The KV cache's element types (Model(kv_dtype=...)): memory, quality against the exact f32
cache, and the determinism rule for each."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_cpp import Model


def _ids(n: int, seed: int = 0) -> list[int]:
    return [2] + [int(t) for t in np.random.default_rng(seed).integers(4, 512, n - 1)]


def _log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_kv_bytes_per_token(make_gcpp):
    path = make_gcpp("g3")
    f32 = Model(path, kv_dtype="f32")
    cfg = f32.config
    assert f32.kv_dtype == "f32"
    assert f32.kv_bytes_per_token == 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4
    assert Model(path, kv_dtype="bf16").kv_bytes_per_token == f32.kv_bytes_per_token // 2
    assert Model(path, kv_dtype="f16").kv_bytes_per_token == f32.kv_bytes_per_token // 2
    int8 = Model(path, kv_dtype="int8")
    # one byte per value plus a float scale per head and position
    assert int8.kv_bytes_per_token == 2 * cfg.n_layers * cfg.n_kv_heads * (cfg.head_dim + 4)
    assert int8.clone().kv_dtype == "int8"


def test_kv_dtype_rejected_by_name(make_gcpp):
    with pytest.raises(ValueError, match="kv_dtype must be one of f32, f16, bf16, int8"):
        Model(make_gcpp("g3"), kv_dtype="q4")


# Measured on g3 (random weights, 300 tokens, 37x the sliding window): mean KL to the f32 cache
# f16 7e-8, bf16 5e-6, int8 4.6e-5 (11- and 8-bit mantissas, 7 bits of the head's max-abs); the
# thresholds leave ~10x. The real 270M's figures are in docs/quantization.md.
@pytest.mark.parametrize("kv_dtype,max_kl", [("f16", 1e-6), ("bf16", 5e-5), ("int8", 5e-4)])
def test_kv_quality_against_f32_cache(make_gcpp, kv_dtype, max_kl):
    path = make_gcpp("g3")
    ids = _ids(300)
    pf = _log_softmax(Model(path, kv_dtype="f32").logits(ids))
    pq = _log_softmax(Model(path, kv_dtype=kv_dtype).logits(ids))
    kl = (np.exp(pf) * (pf - pq)).sum(-1)
    assert 0 < kl.mean() < max_kl, kl.mean()
    assert np.array_equal(pf[0], pq[0]) or kl[0] < max_kl  # the first token attends to itself only


@pytest.mark.parametrize("kv_dtype", ["f16", "bf16", "int8"])
def test_kv_dtype_keeps_determinism(make_gcpp, kv_dtype):
    path = make_gcpp("g3", dtype="int8")
    ids = _ids(300)
    full = Model(path, n_threads=2, kv_dtype=kv_dtype).logits(ids)
    s = Model(path, n_threads=1, kv_dtype=kv_dtype)._session
    s.reset()
    s.eval(ids[:100])
    assert np.array_equal(s.eval(ids[100:270], all_logits=True), full[100:270])
    for t in range(270, 300):
        assert np.array_equal(s.eval([ids[t]], all_logits=True)[0], full[t])
