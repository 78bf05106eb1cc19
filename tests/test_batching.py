"""Batched decoding in C++ (decode/batch_decoder.h): several sequences, each with its own KV cache
and position, advance in one forward pass whose matmuls take all their tokens at once. Each
sequence's logits must equal running it alone bit for bit (the determinism rule, DESIGN.md), for
every family (sliding-window rings that wrap included), weight dtype and thread count."""

from __future__ import annotations

import _thread

import numpy as np
import pytest

from gemma_cpp import Model, _core
from gemma_cpp.generation import sampling_params

GREEDY = sampling_params()


def _ids(n: int, seed: int) -> list[int]:
    return [2] + [int(t) for t in np.random.default_rng(seed).integers(4, 512, n - 1)]


def _gen(m: Model, threads: int = 1):
    return _core.Generator(m._core, m.max_seq_len, threads, 0, m.kv_dtype)


def _alone(m: Model, prompt: list[int], n: int, params=GREEDY, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """(token, logits it was sampled from) of each step, the sequence run by itself."""
    g = _gen(m)
    g.start(prompt, params, n, [], seed)
    out = []
    while True:
        got = g.next(1)
        if not got:
            return out
        out.append((got[0], g.last_logits()))


def _batched(m: Model, prompts, lengths, threads: int, params=GREEDY, seeds=None, join_at=None):
    """The same, with every sequence's pending token run in one BatchDecoder pass per step; the
    prompts listed in join_at={index: step} start late (joining a running batch)."""
    dec = _core.BatchDecoder(m._core, 3, threads)  # max_batch 3 < len(prompts): groups too
    gens = [_gen(m) for _ in prompts]
    out = [[] for _ in prompts]
    live = []
    join_at = join_at or {}
    for step in range(200):
        for i, p in enumerate(prompts):
            if join_at.get(i, 0) == step:
                gens[i].start(p, params, lengths[i], [], 0 if seeds is None else seeds[i])
                live.append(i)
        if not live and step > max(join_at.values(), default=0):
            break
        dec.forward_pending([gens[i] for i in live])
        for i in list(live):
            got = gens[i].next(1)
            if got:
                out[i].append((got[0], gens[i].last_logits()))
            else:
                live.remove(i)  # a finished sequence leaves the batch
    return out


def _same(a, b) -> None:
    assert [t for t, _ in a] == [t for t, _ in b]
    for step, ((_, la), (_, lb)) in enumerate(zip(a, b)):
        assert np.array_equal(la, lb), f"logits differ at step {step}"


@pytest.mark.parametrize("spec,dtype", [("g1_mqa", "f32"), ("g2", "int8"), ("g3", "f32"), ("g3", "int8"),
                                        ("g3", "int4"), ("g3_scaled", "int4")])
def test_batched_decode_equals_alone(make_gcpp, spec, dtype):
    m = Model(make_gcpp(spec, dtype=dtype), max_seq_len=128)
    # Mixed lengths (a one-token prompt; prompts past the sliding window of 8), and different
    # generation lengths, so that sequences leave the batch at different steps.
    prompts = [_ids(n, seed) for seed, n in enumerate([5, 1, 23, 40, 9])]
    lengths = [30, 12, 25, 18, 30]
    alone = [_alone(m, p, n) for p, n in zip(prompts, lengths)]
    for threads in (1, 2):
        for i, b in enumerate(_batched(m, prompts, lengths, threads, join_at={3: 4, 4: 11})):
            _same(b, alone[i])


def test_batched_sampling_keeps_each_sequence_stream(make_gcpp):
    """With temperature, each sequence draws from its own Generator's RNG: batched equals alone."""
    m = Model(make_gcpp("g3", dtype="int8"), max_seq_len=128)
    params = sampling_params(temperature=1.5, top_p=0.9, repetition_penalty=1.2)
    prompts = [_ids(n, 10 + n) for n in (3, 17, 8)]
    seeds = [7, 8, 9]
    alone = [_alone(m, p, 20, params, s) for p, s in zip(prompts, seeds)]
    for i, b in enumerate(_batched(m, prompts, [20] * 3, 2, params, seeds)):
        _same(b, alone[i])


@pytest.mark.parametrize("kv_dtype", ["f32", "int8"])
def test_batched_eval_several_tokens_per_sequence(make_gcpp, kv_dtype):
    """BatchDecoder.eval: a few tokens per sequence (as a speculative verifier needs), all positions."""
    path = make_gcpp("g3", dtype="int4")
    m = Model(path, max_seq_len=128, kv_dtype=kv_dtype)
    prefixes = [_ids(n, n) for n in (12, 3, 30)]
    news = [_ids(4, 50)[1:], _ids(7, 51)[1:], [9]]
    want = []
    for p, t in zip(prefixes, news):
        g = _gen(m)
        g.eval(p, False)
        want.append(g.eval(t, True))
    gens = [_gen(m) for _ in prefixes]
    for g, p in zip(gens, prefixes):
        g.eval(p, False)
    dec = _core.BatchDecoder(m._core, 16, 2)
    got = dec.eval(gens, news, all_logits=True)
    assert np.array_equal(got, np.concatenate(want))
    assert [g.n_past for g in gens] == [len(p) + len(t) for p, t in zip(prefixes, news)]
    for g, w in zip(gens, want):
        assert np.array_equal(g.last_logits(), w[-1])


def test_batch_errors_name_the_problem_and_change_nothing(make_gcpp):
    m = Model(make_gcpp("g3"), max_seq_len=16)
    other = Model(make_gcpp("g2"), max_seq_len=16)
    dec = _core.BatchDecoder(m._core, 4, 1)
    a, b = _gen(m), _gen(m)
    a.eval([2, 5], False)
    b.eval([2, 6, 7], False)
    cases = [
        ([a, b], [[5], [999999]], "sequence 1: token id 999999 is outside the vocabulary"),
        ([a, a], [[5], [6]], "sequence 1 is the same session as sequence 0"),
        ([a, _gen(other)], [[5], [6]], "sequence 1 belongs to another model"),
        ([a, b], [[5, 6, 7], [6, 7]], "more than max_tokens=4"),
        ([a, b], [[5], []], "sequence 1 has no tokens"),
        ([a, b], [[5], list(range(4, 18))], "exceed max_seq_len=16"),
        ([a], [[5], [6]], "1 generators but 2 token lists"),
    ]
    for gens, toks, msg in cases:
        with pytest.raises(ValueError, match=msg):
            dec.eval(gens, toks)
        assert (a.n_past, b.n_past) == (2, 3)
    with pytest.raises(ValueError, match="max_batch must be positive"):
        _core.BatchDecoder(m._core, 0, 1)


def test_interrupt_and_ctrl_c_inside_a_batched_step(make_gcpp):
    m = Model(make_gcpp("g3"), max_seq_len=64)
    prompts = [_ids(6, 1), _ids(9, 2), _ids(4, 3)]
    alone = [_alone(m, p, 10) for p in prompts]
    dec = _core.BatchDecoder(m._core, 4, 1)
    gens = [_gen(m) for _ in prompts]
    for g, p in zip(gens, prompts):
        g.start(p, GREEDY, 10, [], 0)
        g.next(1)
    # Ctrl-C between layers of the batched pass: KeyboardInterrupt, and no sequence commits its token.
    calls = []

    def hook():
        calls.append(1)
        if len(calls) == 2:
            _thread.interrupt_main()

    before = [g.n_past for g in gens]
    _core._set_interrupt_check_hook(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            dec.forward_pending(gens)
    finally:
        _core._set_interrupt_check_hook(None)
    assert [g.n_past for g in gens] == before
    # generation.interrupt(id): that sequence leaves the batch; the others go on, unchanged.
    gens[1].interrupt(gens[1].generation_id)
    assert dec.forward_pending(gens) == 2
    assert gens[1].next(1) == [] and gens[1].stop_reason == "interrupted"
    got = {0: [alone[0][0][0]], 2: [alone[2][0][0]]}
    for _ in range(9):
        for i in (0, 2):
            got[i] += gens[i].next(1)
        dec.forward_pending(gens)
    for i in (0, 2):
        assert got[i] == [t for t, _ in alone[i]]
