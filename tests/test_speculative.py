"""Speculative decoding (csrc/decode/speculative.*, python/gemma_cpp/speculative.py): greedy output
token for token the same as plain greedy for every weight dtype, with n-gram and draft-model
drafting, over prompts longer than the sliding window and than the window's KV ring (so the
rollback cuts a wrapped ring); the same ends (max_new_tokens, EOS, stop strings, the context end,
interrupts, Ctrl-C) and streams; clear errors for what it does not support.
(Sampled output: test_speculative_sampling.py.)"""

from __future__ import annotations

import _thread
import json

import numpy as np
import pytest

from gemma_cpp import InvalidRequestError, Model, _core
from gemma_cpp.generation import Generation

DTYPES = ["f32", "bf16", "int8", "int4"]
MAX_SEQ = 300  # sliding layers keep a ring of window 8 + chunk 256 = 264 positions: 270+ wraps it


def _ids(n: int, seed: int) -> list[int]:
    return [2] + [int(t) for t in np.random.default_rng(seed).integers(4, 512, n - 1)]


def _prompts() -> list[list[int]]:
    base = _ids(12, 1)
    return [[2, 90], _ids(9, 2), _ids(40, 3), base + base[1:7] + base[1:4], _ids(272, 4)]


SETTINGS = [dict(), dict(repetition_penalty=1.3, frequency_penalty=0.4, presence_penalty=0.2)]


def _check_same_greedy(m: Model, prompts, spec: dict, n: int = 24) -> tuple[int, int]:
    drafted = accepted = 0
    for prompt in prompts:
        for kw in SETTINGS:
            plain = Generation(m, prompt, max_tokens=n, text=False, **kw)
            want = list(plain)
            g = Generation(m, prompt, max_tokens=n, text=False, **kw, **spec)
            assert list(g) == want, (len(prompt), kw, spec)
            assert g.stop_reason == plain.stop_reason
            drafted += g.speculation.drafted
            accepted += g.speculation.accepted
    return drafted, accepted


@pytest.mark.parametrize("dtype", DTYPES)
def test_greedy_speculation_equals_plain_greedy(make_gcpp, dtype):
    m = Model(make_gcpp("g3", dtype=dtype), n_threads=2, max_seq_len=MAX_SEQ)
    prompts = _prompts()
    drafted, accepted = _check_same_greedy(m, prompts, dict(speculative="ngram", draft_len=5, ngram_min=1))
    assert 0 < accepted < drafted  # both acceptance and rollback happened
    # A close draft (the same checkpoint at int4: mostly accepted) and an unrelated one (another
    # random checkpoint with the same tokenizer: mostly rejected).
    for draft_path in (make_gcpp("g3", dtype="int4"), make_gcpp("g3", seed=1)):
        draft = Model(draft_path, n_threads=1)
        drafted, accepted = _check_same_greedy(m, prompts, dict(draft_model=draft, draft_len=3))
        assert accepted < drafted and accepted > 0


def test_greedy_speculation_gemma2(make_gcpp):
    """Gemma 2: sliding window on alternate layers, attention and final soft-caps."""
    m = Model(make_gcpp("g2"), n_threads=1, max_seq_len=MAX_SEQ)
    drafted, accepted = _check_same_greedy(m, _prompts(), dict(speculative="ngram", draft_len=4, ngram_min=1))
    assert 0 < accepted < drafted
    _check_same_greedy(m, _prompts()[:3], dict(draft_model=Model(make_gcpp("g2", dtype="int4")), draft_len=4))


def test_rollback_of_a_wrapped_ring_leaves_the_right_cache(make_gcpp):
    """After speculating past the ring's capacity, the cache equals one built by plain decoding:
    the logits of more tokens are bit for bit the same."""
    path = make_gcpp("g3")
    m = Model(path, n_threads=1, max_seq_len=MAX_SEQ)
    prompt = _ids(270, 9)
    out = m.generate(prompt, max_new_tokens=20, ignore_eos=True, speculative="ngram", draft_len=8, ngram_min=1)
    assert len(m.cached_tokens) == len(prompt) + 19  # the last token is pending
    s = m._session
    tail = s.eval([out[-1], 7, 8], all_logits=True)
    ref = Model(path, n_threads=1, max_seq_len=MAX_SEQ).logits(prompt + out + [7, 8])[-3:]
    assert np.array_equal(tail, ref)


def test_ends_as_plain_generation(make_gcpp):
    m = Model(make_gcpp("g3"), n_threads=1, max_seq_len=MAX_SEQ)
    draft = Model(make_gcpp("g3", dtype="int4"), n_threads=1)
    prompt = _ids(20, 5)
    pen = dict(repetition_penalty=1.5)  # a greedy sequence of distinct tokens
    full = m.generate(prompt, max_new_tokens=30, ignore_eos=True, **pen)
    for spec in (dict(speculative="ngram", draft_len=8, ngram_min=1), dict(draft_model=draft, draft_len=6)):
        for n in (0, 1, 2, 3, 7):  # max_new_tokens: no token more, whatever the drafts
            g = Generation(m, prompt, max_tokens=n, ignore_eos=True, text=False, **pen, **spec)
            assert (list(g), g.stop_reason) == (full[:n], "length")
        # An end id: the k-th greedy token becomes one (as test_generation does).
        k = next(i for i in range(3, len(full)) if full[i] not in full[:i])
        m.tokenizer.eos_ids.append(full[k])
        try:
            g = Generation(m, prompt, max_tokens=30, text=False, **pen, **spec)
            assert (list(g), g.stop_reason) == (full[:k], "eos")
        finally:
            m.tokenizer.eos_ids.remove(full[k])
        # The context end: the same last token, the same reason.
        short = Model(m.path, n_threads=1, max_seq_len=len(prompt) + 6)
        plain = Generation(short, prompt, max_tokens=30, ignore_eos=True, text=False, **pen)
        g = Generation(short, prompt, max_tokens=30, ignore_eos=True, text=False, **pen, **spec)
        want = list(plain)
        assert (list(g), g.stop_reason) == (want, plain.stop_reason) == (full[:len(want)], "context")


def test_stop_strings_and_streams_as_plain(make_gcpp):
    m = Model(make_gcpp("g3"), n_threads=1)
    text = "hello world hello world hello"
    full = m.generate(text, max_new_tokens=40, ignore_eos=True, repetition_penalty=1.5)
    stop = full[6:9]
    assert stop and full.index(stop) >= 1
    want = list(m.generate(text, max_new_tokens=40, ignore_eos=True, repetition_penalty=1.5, stop=stop, stream=True))
    for spec in (dict(speculative="ngram", ngram_min=1), dict(draft_model=Model(make_gcpp("g3", dtype="int4")))):
        g = m.generate(text, max_new_tokens=40, ignore_eos=True, repetition_penalty=1.5, stop=stop, stream=True, **spec)
        assert list(g) == want and g.stop_reason == "stop" and g.speculation.drafted > 0
        assert g.speculation.accepted > 0 or g.speculation.mode == "ngram"
        assert g.text == full[:full.index(stop)]
        # The stream hands tokens on one at a time: nothing past the stop string is returned.
        plain = Generation(m, m.tokenize(text), max_tokens=40, ignore_eos=True, repetition_penalty=1.5, stop=stop)
        plain.run()
        assert g.ids == plain.ids
    # chat() takes the same options
    msgs = [{"role": "user", "content": "hello"}]
    with pytest.warns(UserWarning):
        want = m.chat(msgs, max_new_tokens=12, repetition_penalty=1.5)
    assert m.chat(msgs, max_new_tokens=12, repetition_penalty=1.5, speculative="ngram") == want


def test_interrupt_and_ctrl_c_keep_the_cache_consistent(make_gcpp):
    m = Model(make_gcpp("g3"), n_threads=1)
    draft = Model(make_gcpp("g3", dtype="int4"), n_threads=1)
    prompt = _ids(30, 6)
    full = m.generate(prompt, max_new_tokens=20, ignore_eos=True)
    for spec in (dict(speculative="ngram", ngram_min=1), dict(draft_model=draft)):
        g = Generation(m, prompt, max_tokens=20, ignore_eos=True, text=False, **spec)
        got = [next(g)]
        g.interrupt()
        got += list(g)
        assert g.stop_reason == "interrupted" and got == full[:len(got)] and len(got) < 20
        calls = []

        def hook():  # Ctrl-C at the 3rd check between tokens (the prefill is one chunk of 4 layers)
            calls.append(1)
            if len(calls) == 4 + 3:
                _thread.interrupt_main()

        _core._set_interrupt_check_hook(hook)
        try:
            with pytest.raises(KeyboardInterrupt):
                m.reset()
                m.generate(prompt, max_new_tokens=20, ignore_eos=True, **spec)
        finally:
            _core._set_interrupt_check_hook(None)
        assert len(calls) == 7
        assert m.generate(prompt, max_new_tokens=20, ignore_eos=True, **spec) == full


def test_errors(make_gcpp, tokenizer_path, workdir):
    m = Model(make_gcpp("g3"), n_threads=1)

    def err(param, **kw):
        with pytest.raises(InvalidRequestError) as e:
            m.generate([2, 5], max_new_tokens=3, **kw)
        assert e.value.param == param, e.value
        return str(e.value)

    assert "one of ngram, draft" in err("speculative", speculative="medusa")
    assert "draft_len must be in [1, 32]" in err("draft_len", speculative="ngram", draft_len=0)
    err("draft_len", speculative="ngram", draft_len=33)
    err("draft_len", draft_len=4)  # without speculation
    assert "must not exceed" in err("ngram_min", speculative="ngram", ngram_min=3, ngram_max=2)
    err("ngram_min", speculative="ngram", ngram_min=0)
    err("draft_model", speculative="draft")
    err("ngram_max", draft_model=m, ngram_max=3)
    assert "logprobs" in err("speculative", speculative="ngram", logprobs=True)
    assert "token_mask function" in err("speculative", speculative="ngram", token_mask=lambda ids: None)
    with pytest.raises(TypeError, match="draft_model must be a gemma_cpp.Model"):
        m.generate([2, 5], max_new_tokens=3, draft_model="model.gcpp")
    with pytest.raises(InvalidRequestError, match="not a list of prompts"):
        m.generate([[2, 5], [2, 6]], max_new_tokens=3, speculative="ngram")
    # A draft with another vocabulary.
    other = Model(make_gcpp("g3", vocab_size=520), n_threads=1)
    assert "does not share the vocabulary" in err("draft_model", draft_model=other)
    assert "vocab_size 520 != 512" in err("draft_model", draft_model=other)
    # A fixed token mask is fine: it applies at every verified position.
    allowed = [5, 6, 7, 9]
    mask = np.zeros(16, dtype=np.uint32)
    for i in allowed:
        mask[i // 32] |= np.uint32(1 << (i % 32))
    want = m.generate([2, 5], max_new_tokens=8, token_mask=mask, ignore_eos=True)
    assert m.generate([2, 5], max_new_tokens=8, token_mask=mask, ignore_eos=True, speculative="ngram",
                      ngram_min=1) == want
    assert set(want) <= set(allowed)


def test_cli_run_and_bench(make_gcpp):
    from test_cli import cli

    path, draft = make_gcpp("g3"), make_gcpp("g3", dtype="int4")
    base = ["run", path, "hello world hello world", "-n", "16", "-t", "1"]
    plain = cli(*base)
    assert plain.returncode == 0, plain.stderr
    r = cli(*base, "--speculative", "ngram", "--ngram-min", "1", "--draft-len", "5", "-v")
    assert (r.returncode, r.stdout) == (0, plain.stdout), r.stderr
    assert "drafted tokens accepted" in r.stderr
    out = json.loads(cli(*base, "--draft", draft, "--json").stdout)
    assert out["text"] == plain.stdout.rstrip("\n")
    assert out["speculation"]["mode"] == "draft" and out["speculation"]["drafted"] >= out["speculation"]["accepted"]
    r = cli(*base, "--draft-len", "4")
    assert r.returncode == 2 and "--draft-len needs --speculative ngram or --draft MODEL" in r.stderr, r.stderr
    r = cli("bench", path, "-p", "8", "-n", "16", "-t", "1", "-r", "2", "--draft", draft, "--json")
    assert r.returncode == 0, r.stderr
    rows = {x["test"]: x for x in json.loads(r.stdout)}
    assert set(rows) == {"pp8", "tg16", "tg16+draft"}
    assert 0 < rows["tg16+draft"]["acceptance"] <= 1 and rows["tg16+draft"]["tps_mean"] > 0
