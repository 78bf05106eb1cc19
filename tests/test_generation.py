"""The C++ decode loop (csrc/decode/generator.*) through gemma_cpp.generation: why each generation
stops, the presence/frequency penalties against a numpy reference, the allowed-token mask,
interrupts, and the same tokens as the Python loop it replaced."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gemma_cpp import Model, _core
from gemma_cpp.generation import Generation, sampling_params, token_mask
from gemma_cpp.params import InvalidRequestError

PROMPT = [2, 90, 91, 17, 300]


@pytest.fixture(scope="module")
def model(make_gcpp):
    return Model(make_gcpp("g1_mqa"), n_threads=1)


def run(model, prompt=PROMPT, **kw) -> Generation:
    kw.setdefault("max_tokens", 12)
    gen = Generation(model, prompt, text=False, **kw)
    gen.run()
    return gen


# ---------------------------------------------------------------------------- stop reasons
def test_length(model):
    gen = run(model, ignore_eos=True)
    assert (gen.stop_reason, gen.finish_reason, gen.completion_tokens) == ("length", "length", 12)
    gen = run(model, max_tokens=0)
    assert (gen.stop_reason, gen.ids) == ("length", [])


def test_eos_is_not_returned(model):
    free = run(model, ignore_eos=True).ids
    k = next(i for i in range(1, len(free)) if free[i] not in free[:i])
    model.tokenizer.eos_ids.append(free[k])  # the k-th greedy token becomes an end id
    try:
        gen = run(model)
        assert (gen.stop_reason, gen.finish_reason, gen.ids) == ("eos", "stop", free[:k])
        assert run(model, ignore_eos=True).ids == free  # ignore_eos: no end ids
    finally:
        model.tokenizer.eos_ids.remove(free[k])


def test_context_end(make_gcpp):
    m = Model(make_gcpp("g1_mqa"), n_threads=1, max_seq_len=len(PROMPT) + 4)
    gen = run(m, ignore_eos=True, max_tokens=50)
    # The 5th token fits as output: only its successor would need a 10th position.
    assert (gen.stop_reason, gen.finish_reason, gen.completion_tokens) == ("context", "length", 5)


def test_stop_string_leaves_exactly_the_returned_tokens_in_the_cache(model):
    full = model.generate("Hello", max_new_tokens=40, ignore_eos=True)
    stop = full[8:11]
    ids = model.tokenize("Hello")
    gen = Generation(model, ids, max_tokens=40, ignore_eos=True, stop=stop)
    assert gen.run() == full[:full.index(stop)]
    assert (gen.stop_reason, gen.finish_reason) == ("stop", "stop")
    assert gen.completion_tokens < 40
    # One token per call: nothing past the stop string ran; the last returned token is pending.
    assert model.cached_tokens == ids + gen.ids[:-1]


def test_cancel_event(model):
    cancel = threading.Event()
    gen = Generation(model, PROMPT, max_tokens=20, ignore_eos=True, cancel=cancel, text=False)
    assert [next(gen), next(gen)]
    cancel.set()
    assert list(gen) == []
    assert (gen.stop_reason, gen.finish_reason, gen.completion_tokens) == ("cancelled", "cancelled", 2)


def test_interrupt_between_tokens(model):
    def mask(ids):  # runs before each step: interrupt before the 4th
        if len(ids) == 3:
            gen.interrupt()
        return None

    gen = Generation(model, PROMPT, max_tokens=20, ignore_eos=True, token_mask=mask, text=False)
    gen.run()
    assert (gen.stop_reason, gen.finish_reason, gen.completion_tokens) == ("interrupted", "cancelled", 3)
    assert model.generate(PROMPT, max_new_tokens=3, ignore_eos=True) == gen.ids  # usable, same tokens


def test_interrupt_names_its_own_generation(model):
    first = run(model, ignore_eos=True)
    first.interrupt()  # too late: it has ended, and must not stop the next generation
    assert run(model, ignore_eos=True).stop_reason == "length"
    early = Generation(model, PROMPT, max_tokens=5, text=False)
    early.interrupt()  # before it started: it never runs
    assert (list(early), early.stop_reason, early.prefilled_tokens) == ([], "interrupted", 0)


@pytest.fixture(scope="module")
def slow_model(make_gcpp):
    spec = dict(family=1, num_hidden_layers=12, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=4, head_dim=64, max_position_embeddings=4096)
    return Model(make_gcpp(spec))


def test_interrupt_inside_prefill(slow_model):
    """interrupt() (thread-safe) stops a long prefill between layers, without an exception."""
    ids = [2] + [5 + i % 400 for i in range(1500)]
    n_layers = slow_model.config.n_layers
    calls = []
    gen = Generation(slow_model, ids, max_tokens=5, text=False)

    def hook():  # at each check: interrupt at the 3rd layer of the 2nd chunk
        calls.append(1)
        if len(calls) == n_layers + 3:
            t = threading.Thread(target=gen.interrupt)  # from another thread, as a server would
            t.start()
            t.join()

    _core._set_interrupt_check_hook(hook)
    try:
        gen.run()
    finally:
        _core._set_interrupt_check_hook(None)
    assert (gen.stop_reason, gen.completion_tokens) == ("interrupted", 0)
    assert 0 < slow_model._session.n_past < len(ids)  # whole chunks only
    assert len(slow_model.generate([2, 5, 6], max_new_tokens=3, ignore_eos=True)) == 3


def test_ctrl_c_between_tokens(slow_model):
    import _thread

    n_layers = slow_model.config.n_layers
    calls = []

    def hook():  # n_layers checks in the prefill, then one before each token
        calls.append(1)
        if len(calls) == n_layers + 3:
            _thread.interrupt_main()

    got = []
    _core._set_interrupt_check_hook(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            for tok in slow_model.generate([2, 5, 6], max_new_tokens=10, ignore_eos=True, stream=True):
                got.append(tok)
    finally:
        _core._set_interrupt_check_hook(None)
    assert len(got) == 2 and slow_model._session.n_past == 4  # prompt + the first token fed
    assert slow_model.generate([2, 5, 6], max_new_tokens=2, ignore_eos=True) == got


# ---------------------------------------------------------------------------- penalties
def _reference_penalised(logits: np.ndarray, history: list[int], generated: list[int], rep: float,
                         presence: float, frequency: float) -> np.ndarray:
    """numpy: transformers' repetition penalty over prompt + generated, then OpenAI's presence and
    frequency penalties over the generated tokens only."""
    out = logits.astype(np.float32).copy()
    for t in set(history):
        out[t] = out[t] / np.float32(rep) if out[t] > 0 else out[t] * np.float32(rep)
    ids, counts = np.unique(np.asarray(generated, dtype=np.int64), return_counts=True)
    out[ids] -= np.float32(presence) + np.float32(frequency) * counts.astype(np.float32)
    return out


@pytest.mark.parametrize("rep,presence,frequency", [(1.0, 1.5, 0.0), (1.0, 0.0, 0.8), (1.05, 1.0, 1.0),
                                                    (1.0, -2.0, -0.5)])
def test_presence_and_frequency_penalties_match_numpy(model, rep, presence, frequency):
    kw = dict(max_new_tokens=24, ignore_eos=True)
    plain = model.generate(PROMPT, repetition_penalty=rep, **kw)
    out = model.generate(PROMPT, repetition_penalty=rep, presence_penalty=presence, frequency_penalty=frequency,
                         **kw)
    assert out != plain  # the penalties change the greedy output here: the check below can fail
    logits = model.logits(PROMPT + out)  # bit-identical to the decode's (the determinism rule)
    for i, tok in enumerate(out):
        ref = _reference_penalised(logits[len(PROMPT) + i - 1], PROMPT + out[:i], out[:i], rep, presence,
                                   frequency)
        assert tok == int(np.argmax(ref)), i


def test_penalty_bounds(model):
    for name in ("presence_penalty", "frequency_penalty"):
        for bad in (-2.01, 2.5, float("nan")):
            with pytest.raises(InvalidRequestError) as e:
                model.generate(PROMPT, **{name: bad})
            assert e.value.param == name
        model.generate(PROMPT, max_new_tokens=1, **{name: 2})  # the bounds themselves are valid
    with pytest.raises(ValueError, match="presence_penalty must be in \\[-2, 2\\]"):
        _core.SamplingParams(presence_penalty=3)  # C++ guards the same range


def test_openai_layer_takes_the_penalties(model):
    kw = dict(presence_penalty=1.2, frequency_penalty=0.3)
    text = model.generate("Hello", max_new_tokens=16, ignore_eos=True, **kw)
    out = model.create_completion("Hello", max_tokens=16, temperature=0, ignore_eos=True, **kw)
    assert out["choices"][0]["text"] == text


# ---------------------------------------------------------------------------- allowed-token mask
def test_mask_forces_the_output_into_the_allowed_ids(model):
    vocab = model.config.vocab_size
    allowed = {11, 57, 300, vocab - 1}
    mask = token_mask(allowed, vocab)
    assert mask.dtype == np.uint32 and mask.shape == ((vocab + 31) // 32,)
    free = model.generate(PROMPT, max_new_tokens=16, ignore_eos=True)
    assert not set(free) <= allowed
    for kw in (dict(), dict(temperature=1.5, seed=3), dict(temperature=1.0, top_k=2, seed=1)):
        out = model.generate(PROMPT, max_new_tokens=16, ignore_eos=True, token_mask=mask, **kw)
        assert len(out) == 16 and set(out) <= allowed, kw
    # Greedy under a mask is the argmax over the allowed ids.
    first = model.generate(PROMPT, max_new_tokens=1, token_mask=mask)[0]
    row = model.logits(PROMPT)[-1]
    assert first == max(allowed, key=lambda t: row[t])
    # The mask lasts for one generation only.
    assert model.generate(PROMPT, max_new_tokens=16, ignore_eos=True) == free


def test_mask_function_per_step(model):
    vocab = model.config.vocab_size
    even, odd = token_mask(range(0, vocab, 2), vocab), token_mask(range(1, vocab, 2), vocab)
    seen = []

    def mask(ids):
        seen.append(list(ids))
        return even if len(ids) % 2 == 0 else odd

    out = model.generate(PROMPT, max_new_tokens=9, ignore_eos=True, token_mask=mask)
    assert [t % 2 for t in out] == [i % 2 for i in range(9)]
    assert seen == [out[:i] for i in range(9)]  # called before each step with the ids so far


def test_bad_masks_are_clear_errors(model):
    vocab = model.config.vocab_size
    with pytest.raises(ValueError, match="allows no token"):
        model.generate(PROMPT, max_new_tokens=4, token_mask=np.zeros((vocab + 31) // 32, np.uint32))
    with pytest.raises(ValueError, match="32-bit words"):
        model.generate(PROMPT, max_new_tokens=4, token_mask=np.ones(2, np.uint32))
    with pytest.raises(ValueError, match="token_mask: ids must be in"):
        token_mask([vocab], vocab)
    assert len(model.generate(PROMPT, max_new_tokens=3, ignore_eos=True)) == 3  # no mask left behind


# ---------------------------------------------------------------------------- same tokens as before
def _python_loop(model, ids, n, params, seed):
    """The decode loop as Model._generate_ids ran it in Python before the C++ Generator."""
    s = model._session
    s.reset()
    s.seed(seed)
    s.eval(ids)
    out, tok = [], s.sample(params)
    for i in range(n):
        out.append(tok)
        if i + 1 == n or s.n_past >= s.max_seq_len:
            break
        tok = s.step(tok, params)
    return out


@pytest.mark.parametrize("spec", ["g1_mqa", "g2", "g3"])
def test_same_tokens_as_the_python_loop(make_gcpp, spec):
    m = Model(make_gcpp(spec), n_threads=1, max_seq_len=200)
    prompt = [2] + list(range(40, 70))
    settings = [dict(), dict(repetition_penalty=1.3), dict(temperature=0.9, seed=7),
                dict(temperature=1.2, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.1, seed=11)]
    for kw in settings:
        seed = kw.pop("seed", 0)
        expected = _python_loop(m, prompt, 60, sampling_params(**kw), seed)
        assert m.generate(prompt, max_new_tokens=60, ignore_eos=True, seed=seed, **kw) == expected, kw


# ---------------------------------------------------------------------------- the top-p / min-p cut
def _nucleus_rank(logits: np.ndarray, temperature: float, top_p: float, min_p: float) -> int:
    """How many best-first candidates a full sort keeps (numpy, float64)."""
    z = logits.astype(np.float64) / temperature
    order = np.lexsort((np.arange(z.size), -z))  # best first, ties by id (the sampler's order)
    w = np.exp(z[order] - z[order[0]])
    keep = z.size
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(w) / w.sum(), top_p) + 1)
    if min_p > 0.0:
        keep = min(keep, int(np.sum(w[:keep] >= min_p * w[0])))
    return keep, order


@pytest.mark.parametrize("temperature,top_p,min_p", [(1.0, 0.9, 0.0), (3.0, 0.995, 0.0), (2.0, 1.0, 0.5),
                                                     (4.0, 0.999, 0.2)])
def test_top_p_min_p_draws_come_from_the_full_sort_nucleus(model, temperature, top_p, min_p):
    """The sampler sorts only the best-first prefix that holds the cut, growing it (64, 512, ...)
    until it does (csrc/decode/sampler.cpp): every draw must lie in the nucleus a full sort
    keeps, and the draws must reach deep into it (high temperatures make nuclei of hundreds to
    thousands of tokens, so the prefix has to grow). One rank of slack at the boundary: float32
    weights in C++ against float64 here."""
    logits = model.logits(PROMPT)[-1]
    keep, order = _nucleus_rank(logits, temperature, top_p, min_p)
    rank = {int(t): r for r, t in enumerate(order[:keep + 1])}
    draws = [run(model, max_tokens=1, temperature=temperature, top_p=top_p, min_p=min_p, seed=s, ignore_eos=True).ids[0]
             for s in range(60)]
    assert all(int(t) in rank for t in draws), (keep, [t for t in draws if int(t) not in rank])
    if keep > 64:
        assert max(rank[int(t)] for t in draws) >= 64, keep  # drawn from beyond the first prefix
