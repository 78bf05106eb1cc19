"""Model.generate on a list of prompts (gemma_cpp/batching.py): the results equal generating each
prompt alone, prompts join and leave the batch as they start and end, seeds map per prompt."""

from __future__ import annotations

import _thread

import numpy as np
import pytest

from gemma_cpp import ContextLengthError, InvalidRequestError, Model, _core
from gemma_cpp.batching import PREFILL_CHUNK
from gemma_cpp.generation import token_mask

TEXTS = ["the of and", "water boils at a temperature of one hundred", "in", "was for on that with as by at from"]


def _ids(n: int, seed: int) -> list[int]:
    return [2] + [int(t) for t in np.random.default_rng(seed).integers(4, 512, n - 1)]


@pytest.fixture(scope="module")
def model(make_gcpp):
    return Model(make_gcpp("g3", dtype="int8"), n_threads=2, max_seq_len=512)


def test_text_prompts_equal_alone(model):
    # Stop strings and EOS end prompts at different steps; batch_size 2 < 4 prompts: the last
    # two join as the first ones leave.
    kw = dict(max_new_tokens=24, stop=["s", "and"])
    alone = [model.generate(t, **kw) for t in TEXTS]
    assert model.generate(TEXTS, batch_size=2, **kw) == alone
    assert model.generate(TEXTS, **kw) == alone
    assert model.generate(TEXTS[:1], **kw) == alone[:1]


def test_token_prompts_and_long_prompts_equal_alone(model):
    # Two prompts longer than a prefill chunk: prefilled a chunk per step beside the others' decoding.
    prompts = [_ids(5, 1), _ids(PREFILL_CHUNK + 70, 2), _ids(1, 3), _ids(PREFILL_CHUNK + 200, 4)]
    alone = [model.generate(p, max_new_tokens=20, ignore_eos=True) for p in prompts]
    assert model.generate(prompts, max_new_tokens=20, ignore_eos=True, batch_size=3) == alone
    assert all(len(a) == 20 for a in alone)


def test_sampling_seeds_map_per_prompt(model):
    kw = dict(max_new_tokens=16, temperature=1.3, top_k=50)
    got = model.generate(TEXTS, seed=11, **kw)
    assert got == [model.generate(t, seed=11 + i, **kw) for i, t in enumerate(TEXTS)]
    seeds = [5, 5, 99, 2]
    assert model.generate(TEXTS, seed=seeds, **kw) == [model.generate(t, seed=s, **kw) for t, s in zip(TEXTS, seeds)]
    seeded = Model(model.path, n_threads=1, seed=7)  # the Model's seed is the base when a call gives none
    assert seeded.generate(TEXTS, **kw) == [seeded.generate(t, seed=7 + i, **kw) for i, t in enumerate(TEXTS)]


def test_processors_and_masks_per_prompt(model):
    kw = dict(max_new_tokens=12, repetition_penalty=1.3, presence_penalty=0.5, logit_bias={7: 3.0},
              token_mask=token_mask(range(4, 300), model.config.vocab_size))
    assert model.generate(TEXTS, **kw) == [model.generate(t, **kw) for t in TEXTS]


def test_bad_batches_raise_clear_errors(model):
    with pytest.raises(TypeError, match="only strings or only token id lists"):
        model.generate(["a", [2, 5]])
    with pytest.raises(ValueError, match="stream=True takes one prompt"):
        model.generate(TEXTS, stream=True)
    with pytest.raises(InvalidRequestError, match="a list of 2 seeds for 4 prompts"):
        model.generate(TEXTS, seed=[1, 2])
    with pytest.raises(InvalidRequestError, match="batch_size"):
        model.generate(TEXTS, batch_size=0)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        model.generate([[2, 5], []])
    with pytest.raises(ContextLengthError):
        model.generate([[2, 5], _ids(600, 1)], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate([[2, 5], [2, 10**6]])
    # The model (and its batch lanes) still work afterwards.
    assert model.generate([[2, 5], [2, 6]], max_new_tokens=3, ignore_eos=True) == [
        model.generate([2, 5], max_new_tokens=3, ignore_eos=True), model.generate([2, 6], max_new_tokens=3,
                                                                                  ignore_eos=True)]


def test_ctrl_c_stops_a_batched_generate(model):
    prompts = [_ids(8, s) for s in range(3)]
    calls = []

    def hook():
        calls.append(1)
        if len(calls) == 40:  # inside some batched step's layers
            _thread.interrupt_main()

    _core._set_interrupt_check_hook(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            model.generate(prompts, max_new_tokens=50, ignore_eos=True)
    finally:
        _core._set_interrupt_check_hook(None)
    want = [model.generate(p, max_new_tokens=6, ignore_eos=True) for p in prompts]
    assert model.generate(prompts, max_new_tokens=6, ignore_eos=True) == want


def test_create_completion_with_an_array_of_prompts(model):
    kw = dict(max_tokens=10, temperature=0.7, seed=4)
    out = model.create_completion(TEXTS[:3], **kw)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    for i, (t, c) in enumerate(zip(TEXTS, out["choices"])):
        alone = model.create_completion(t, **dict(kw, seed=4 + i))["choices"][0]
        assert c["text"] == alone["text"] and c["finish_reason"] == alone["finish_reason"]
    alone_usage = [model.create_completion(t, **dict(kw, seed=4 + i))["usage"] for i, t in enumerate(TEXTS[:3])]
    assert out["usage"]["completion_tokens"] == sum(u["completion_tokens"] for u in alone_usage)
    assert out["usage"]["prompt_tokens"] == sum(u["prompt_tokens"] for u in alone_usage)
    with pytest.raises(InvalidRequestError, match="stream=True takes one prompt"):
        model.create_completion(TEXTS, stream=True)
