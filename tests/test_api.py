"""The Python API: tokenizer and chat template against transformers, streaming, sampling,
stop strings, chat KV reuse, threads, the GIL and Ctrl-C."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from gemma_cpp import Model
from gemma_cpp.tokenizer import GEMMA_CHAT_TEMPLATE

TEXTS = ["Hello world", "  two  spaces\tand a tab", "über café 東京 😀 12345 3.14159",
         "a<end_of_turn>b<start_of_turn>user\nhi", "\n\nwater boils", ""]


@pytest.fixture(scope="module")
def model(make_gcpp):
    return Model(make_gcpp("g1_mqa"))


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_path, tmp_path_factory):
    import transformers as tf

    d = tmp_path_factory.mktemp("hf_tok")
    shutil.copy(tokenizer_path, d / "tokenizer.model")
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "chat_template": GEMMA_CHAT_TEMPLATE, "bos_token": "<bos>",
        "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}))
    return tf.AutoTokenizer.from_pretrained(str(d))


def test_tokenizer_matches_transformers(model, hf_tokenizer):
    for text in TEXTS:
        assert model.tokenize(text, add_bos=False) == hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = model.tokenize(text)
        assert ids[0] == 2
        assert model.detokenize(ids) == text


CONVERSATIONS = [
    [{"role": "user", "content": "Hello there  "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! 😀\n"},
     {"role": "user", "content": " What is 12345?"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
def test_chat_template_matches_transformers(model, hf_tokenizer, messages):
    ours = model.apply_chat_template(messages)
    theirs = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == theirs
    ids = hf_tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    assert model.tokenize(ours, add_bos=False) == list(ids)


def test_chat_template_rejects_bad_roles(model):
    from gemma_cpp import ChatTemplateError

    with pytest.raises(ChatTemplateError, match="alternate"):
        model.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    # One system-message rule: a leading system message opens the first user turn.
    assert model.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]) \
        == model.apply_chat_template([{"role": "user", "content": "Be brief.\n\nHi"}])
    assert model.apply_chat_template([{"role": "system", "content": "Be brief."}]) \
        == model.apply_chat_template([{"role": "user", "content": "Be brief."}])
    with pytest.raises(ChatTemplateError, match="only supported as the first message"):
        model.apply_chat_template([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]: role 'tool' is not supported"):
        model.apply_chat_template([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}])


def test_stream_equals_non_stream(model):
    for prompt, kw in (("über café 東京", {}), ("Hello", dict(temperature=0.9, seed=3))):
        full = model.generate(prompt, max_new_tokens=40, ignore_eos=True, **kw)
        pieces = list(model.generate(prompt, max_new_tokens=40, ignore_eos=True, stream=True, **kw))
        assert "".join(pieces) == full
        assert all(isinstance(p, str) and p for p in pieces)
        ids = model.tokenize(prompt)
        gen = model.generate(ids, max_new_tokens=40, ignore_eos=True, **kw)
        assert list(model.generate(ids, max_new_tokens=40, ignore_eos=True, stream=True, **kw)) == gen
        assert model.detokenize(ids[-1:] + gen).endswith(full) and len(gen) == 40


def test_stream_is_utf8_safe(model):
    """Byte-fallback tokens of a multi-byte character never surface as U+FFFD halves."""
    rng = np.random.default_rng(0)
    byte_ids = [i for i in range(model.config.vocab_size) if model.tokenizer.id_to_piece(i).startswith("<0x")]
    assert byte_ids
    # Force generation through bytes by sampling hot: many draws hit byte tokens.
    for seed in range(5):
        pieces = list(model.generate("😀", max_new_tokens=30, temperature=5.0, seed=seed, stream=True,
                                     ignore_eos=True))
        joined = "".join(pieces)
        assert joined == model.generate("😀", max_new_tokens=30, temperature=5.0, seed=seed, ignore_eos=True)
    del rng


def test_seed_determinism(model):
    kw = dict(max_new_tokens=24, temperature=1.0, top_k=50, top_p=0.95, min_p=0.01, ignore_eos=True)
    a = model.generate([2, 50, 60], seed=7, **kw)
    b = model.generate([2, 50, 60], seed=7, **kw)
    c = model.generate([2, 50, 60], seed=8, **kw)
    assert a == b
    assert a != c


def test_top_k_1_is_greedy(model):
    greedy = model.generate([2, 70, 80], max_new_tokens=16, ignore_eos=True)
    assert model.generate([2, 70, 80], max_new_tokens=16, temperature=1.0, top_k=1, seed=5,
                          ignore_eos=True) == greedy


def test_repetition_penalty_matches_transformers(make_ckpt, make_gcpp, reference):
    """Greedy with repetition_penalty equals transformers' generate(repetition_penalty=...)."""
    import torch

    spec = "g2"  # this random model repeats itself, so the penalty changes its output
    m = Model(make_gcpp(spec))
    ref = reference(make_ckpt(spec))
    ids = [2, 70, 80, 90]
    plain = m.generate(ids, max_new_tokens=24, ignore_eos=True)
    penal = m.generate(ids, max_new_tokens=24, ignore_eos=True, repetition_penalty=1.5)
    with torch.no_grad():
        out = ref.generate(torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False,
                           repetition_penalty=1.5, eos_token_id=None, pad_token_id=0)
    assert penal == out[0, len(ids):].tolist()
    assert penal != plain


def test_stop_strings(model):
    full = model.generate("Hello", max_new_tokens=40, ignore_eos=True)
    assert len(full) > 6
    stop = full[3:6]
    cut = full[:full.index(stop)]
    assert model.generate("Hello", max_new_tokens=40, ignore_eos=True, stop=[stop]) == cut
    assert "".join(model.generate("Hello", max_new_tokens=40, ignore_eos=True, stop=stop, stream=True)) == cut


def test_eos_stops_generation(model):
    """Make EOS the argmax: generation must stop before yielding it."""
    ids = [2, 90, 91]
    out = model.generate(ids, max_new_tokens=50, ignore_eos=True)
    first = out[0]
    # With first token treated as a stop id, nothing is generated.
    model.tokenizer.eos_ids.append(first)
    try:
        assert model.generate(ids, max_new_tokens=50) == []
    finally:
        model.tokenizer.eos_ids.remove(first)


def test_chat_reuses_kv_cache(model):
    calls: list[int] = []
    real = model._session

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def eval(self, ids, all_logits=False):
            calls.append(len(ids))
            return real.eval(ids, all_logits)

    msgs = [{"role": "user", "content": "Hello there"}]
    fresh = model.clone()
    model._session = Spy()
    try:
        a1 = model.chat(msgs, max_new_tokens=12)
        msgs2 = msgs + [{"role": "assistant", "content": a1}, {"role": "user", "content": "And then?"}]
        a2 = model.chat(msgs2, max_new_tokens=12)
    finally:
        model._session = real
    full2 = len(model.tokenize(model.apply_chat_template(msgs2), add_bos=False))
    assert calls[1] < full2 - 10, (calls, full2)  # only the new turn was processed
    assert a2 == fresh.chat(msgs2, max_new_tokens=12)  # same answer as without reuse


def test_logits_api(model):
    ids = [2, 10, 20, 30]
    out = model.logits(ids)
    assert out.shape == (4, model.config.vocab_size) and out.dtype == np.float32
    np.testing.assert_array_equal(out, model.logits(np.array(ids)))
    np.testing.assert_allclose(model.logits("Hello")[-1], model.logits(model.tokenize("Hello"))[-1])


def test_concurrent_calls_are_serialised(model):
    prompts = [[2, 10 + i, 20 + i] for i in range(4)]
    expected = [model.generate(p, max_new_tokens=20, ignore_eos=True) for p in prompts]
    results: dict[int, list[int]] = {}

    def work(i, m):
        results[i] = m.generate(prompts[i], max_new_tokens=20, ignore_eos=True)

    threads = [threading.Thread(target=work, args=(i, model)) for i in range(4)]
    threads += [threading.Thread(target=work, args=(i + 4, model.clone())) for i in range(4)]
    prompts += prompts
    expected += expected
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(8)] == expected


@pytest.fixture(scope="module")
def slow_model(make_gcpp):
    """Deep and long enough that one prefill takes a noticeable time."""
    spec = dict(family=1, num_hidden_layers=12, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                num_key_value_heads=4, head_dim=64, max_position_embeddings=4096)
    return Model(make_gcpp(spec))


def test_gil_released_during_compute(slow_model):
    ids = [2] + [5 + i % 400 for i in range(1000)]
    done = threading.Event()
    started = threading.Event()

    def work():
        started.set()
        slow_model.logits(ids)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    spins = 0
    while not done.is_set():
        spins += 1
        time.sleep(0)
    t.join()
    assert spins > 100, "the main thread could not run Python while the model computed"


def test_ctrl_c_interrupts_prefill(slow_model):
    """Ctrl-C arriving in the middle of a long prefill stops it there. The signal is raised from
    inside the prefill (a test hook run at each of the C++ interrupt checks, one per layer), at the
    3rd layer of the 2nd chunk: no timer racing the computation."""
    import _thread

    from gemma_cpp import _core

    ids = [2] + [5 + i % 400 for i in range(1500)]
    n_layers = slow_model.config.n_layers
    calls = []

    def hook():
        calls.append(1)
        if len(calls) == n_layers + 3:
            _thread.interrupt_main()  # what Ctrl-C does: a pending SIGINT for the main thread

    _core._set_interrupt_check_hook(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            slow_model.generate(ids, max_new_tokens=5)
    finally:
        _core._set_interrupt_check_hook(None)
    assert len(calls) == n_layers + 3  # it stopped at the very check that saw the signal
    # Only the first, whole chunk stays in the cache...
    assert 0 < slow_model._session.n_past < len(ids)
    # ...and the model stays usable afterwards.
    assert len(slow_model.generate([2, 5, 6], max_new_tokens=3, ignore_eos=True)) == 3


def test_chat_reuse_across_ring_wrap(make_gcpp):
    """Multi-turn chat on a sliding-window model whose ring buffer has wrapped: reusing the
    cached prefix gives the same answer as recomputing the whole conversation."""
    m = Model(make_gcpp("g3"), max_seq_len=512)
    long_text = " ".join(["water boils at a temperature of one hundred degrees"] * 30)
    msgs = [{"role": "user", "content": long_text}]
    a1 = m.chat(msgs, max_new_tokens=10)
    assert m._session.n_past > 264  # window 8 + chunk 256: the ring has wrapped
    msgs2 = msgs + [{"role": "assistant", "content": a1}, {"role": "user", "content": "why?"}]
    prompt2 = m.tokenize(m.apply_chat_template(msgs2), add_bos=False)
    cached = list(m._session.tokens)
    common = next(i for i, (a, b) in enumerate(zip(cached + [-1], prompt2)) if a != b)
    assert m._session.can_truncate(common)
    a2 = m.chat(msgs2, max_new_tokens=10)
    fresh = Model(make_gcpp("g3"), max_seq_len=512)
    assert a2 == fresh.chat(msgs2, max_new_tokens=10)
    # A rollback far behind the ring's oldest position is refused, and chat falls back to a reset.
    assert not m._session.can_truncate(5)
    assert m.chat(msgs[:1], max_new_tokens=10) == a1
