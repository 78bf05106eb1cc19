"""The determinism rule (DESIGN.md): the logits of a token depend only on the tokens before it,
bit for bit, whatever the prefill chunking, prefill vs decode, prefix-cache reuse, the call
history or the thread count. Checked for every weight dtype on a model with sliding-window
layers (their KV rings wrap) and across prefill chunks (256 tokens)."""

from __future__ import annotations

import numpy as np
import pytest

from gemma_cpp import Model

DTYPES = ["f32", "bf16", "int8", "int4"]


def _ids(n: int, seed: int = 0) -> list[int]:
    return [2] + [int(t) for t in np.random.default_rng(seed).integers(4, 512, n - 1)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_logits_independent_of_chunking_and_decode(make_gcpp, dtype):
    path = make_gcpp("g3", dtype=dtype)
    ids = _ids(300)  # > one 256-token prefill chunk; 37x the sliding window of 8
    full = Model(path, n_threads=2).logits(ids)
    for threads in (1, 2):
        m = Model(path, n_threads=threads)
        s = m._session
        for split in (1, 7, 255, 256, 290):
            s.reset()
            head = s.eval(ids[:split], all_logits=True)
            tail = s.eval(ids[split:], all_logits=True)
            assert np.array_equal(head, full[:split]), (threads, split)
            assert np.array_equal(tail, full[split:]), (threads, split)
        s.reset()
        s.eval(ids[:280], all_logits=False)
        for t in range(280, 300):  # decode: one token at a time
            assert np.array_equal(s.eval([ids[t]], all_logits=True)[0], full[t]), (threads, t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_greedy_output_independent_of_call_history(make_gcpp, dtype):
    m = Model(make_gcpp("g3", dtype=dtype), n_threads=2)
    prompt = _ids(40, seed=1)
    fresh = m.generate(prompt, max_new_tokens=20, ignore_eos=True)
    # Another prompt sharing a prefix (so the cache is partly reused), a long one, and itself again.
    for other in (prompt[:25] + _ids(30, seed=2), _ids(270, seed=3), prompt):
        m.generate(other, max_new_tokens=5, ignore_eos=True)
        assert m.generate(prompt, max_new_tokens=20, ignore_eos=True) == fresh
    assert Model(make_gcpp("g3", dtype=dtype), n_threads=1).generate(prompt, max_new_tokens=20,
                                                                      ignore_eos=True) == fresh
