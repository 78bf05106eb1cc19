"""logprobs / top_logprobs: each token's log-probability from the distribution the sampler drew
from (after penalties, logit_bias and mask, before temperature), on generate, chat,
create_*completion and the server, in OpenAI's shapes; and logit_bias itself."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from gemma_cpp import InvalidRequestError, Model

PROMPT = "the water boils at"


@pytest.fixture(scope="module")
def model(make_gcpp):
    return Model(make_gcpp("g3"), n_threads=1, max_seq_len=512)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_logprobs_equal_log_softmax_of_the_logits(model, temperature):
    """With no penalties, the chosen tokens' logprobs are log-softmax of Model.logits at their
    positions (within 1e-5), whatever the temperature; top_logprobs are the k best, best first."""
    ids = model.tokenize(PROMPT)
    gen = model.generate(ids, max_new_tokens=12, ignore_eos=True, logprobs=True, top_logprobs=5,
                         temperature=temperature, seed=7, stream=True)
    out = list(gen)
    lps = gen.logprobs
    assert [e[0] for e in lps] == out and len(out) == 12
    ref = _log_softmax(model.logits(ids + out)[len(ids) - 1:-1])
    for k, (tid, lp, top) in enumerate(lps):
        assert abs(lp - ref[k, tid]) < 1e-5
        best = np.argsort(-ref[k], kind="stable")[:5]
        assert [i for i, _ in top] == best.tolist()
        assert np.allclose([v for _, v in top], ref[k, best], atol=1e-5)
        if temperature == 0:
            assert top[0][0] == tid


def _reference(model, ids: list[int], out: list[int]) -> np.ndarray:
    """The logits at each generated token's position (float64), from one prefill."""
    return model.logits(ids + out)[len(ids) - 1:-1].astype(np.float64)


def _check_against(lps, out, ref: np.ndarray, k: int):
    assert [e[0] for e in lps] == out
    for row, (tid, lp, top) in zip(_log_softmax(ref), lps):
        assert abs(lp - row[tid]) < 1e-5
        best = np.argsort(-row, kind="stable")[:k]
        best = best[np.isfinite(row[best])]  # a masked-out id is never an alternative
        assert [i for i, _ in top] == best.tolist() and np.allclose([v for _, v in top], row[best], atol=1e-5)


@pytest.mark.parametrize("presence,frequency", [(0.8, 1.5), (-0.5, -1.0)])
def test_penalties_are_openais_and_come_before_the_logprobs(model, presence, frequency):
    """OpenAI's presence/frequency penalties, logit -= presence * (count > 0) + frequency * count
    over the tokens generated so far (not the prompt), are in the logprobs exactly; temperature
    (0.9 here) is not."""
    ids = model.tokenize(PROMPT + " " + PROMPT)  # prompt tokens repeat: they must not count
    gen = model.generate(ids, max_new_tokens=16, ignore_eos=True, temperature=0.9, seed=3, logprobs=True,
                         top_logprobs=4, presence_penalty=presence, frequency_penalty=frequency, stream=True)
    out = list(gen)
    ref = _reference(model, ids, out)
    for k in range(len(out)):
        count = np.bincount(out[:k], minlength=ref.shape[1]).astype(np.float64)
        ref[k] -= presence * (count > 0) + frequency * count
    _check_against(gen.logprobs, out, ref, 4)
    plain = _reference(model, ids, out)
    assert not np.allclose(_log_softmax(plain)[-1], _log_softmax(ref)[-1], atol=1e-3)  # the penalties did act


@pytest.mark.parametrize("kw", [{"regex": r"[a-z]{2,6}( [a-z]{2,6}){1,3}\."},
                                {"json_schema": {"type": "object", "properties": {
                                    "ok": {"type": "boolean"}, "tag": {"type": "string", "maxLength": 6}},
                                    "required": ["ok", "tag"], "additionalProperties": False}}])
def test_constrained_logprobs_are_the_masked_log_softmax(model, kw):
    """Under a constraint the logprobs are log-softmax of Model.logits over the tokens the
    constraint allowed at each step (replayed with a fresh matcher), within 1e-5."""
    pytest.importorskip("llguidance")
    from gemma_cpp import structured

    ids = model.tokenize(PROMPT)
    gen = model.generate(ids, max_new_tokens=40, temperature=1.0, seed=5, logprobs=True, top_logprobs=3,
                         stream=True, **kw)
    out = list(gen)
    assert gen.stop_reason == "grammar", gen.stop_reason
    ref = _reference(model, ids, out)
    replay = structured.GrammarMask(model, structured.grammar_of(**kw))
    vocab = ref.shape[1]
    for k in range(len(out)):
        words = replay(out[:k])
        allowed = np.unpackbits(words.view(np.uint8), bitorder="little")[:vocab].astype(bool)
        assert 0 < allowed.sum() < vocab
        ref[k][~allowed] = -np.inf
    _check_against(gen.logprobs, out, ref, 3)


def test_logprobs_follow_penalties_and_mask(model):
    """The distribution is the processed one: a penalty changes it; a constraint's mask makes the
    forbidden ids impossible (only allowed ids among the alternatives, the chosen one's
    probabilities renormalised over them)."""
    ids = model.tokenize(PROMPT)
    plain = model.generate(ids, max_new_tokens=6, ignore_eos=True, logprobs=True, stream=True)
    plain.run()
    pen = model.generate(ids, max_new_tokens=6, ignore_eos=True, logprobs=True, frequency_penalty=2.0,
                         stream=True)
    pen.run()
    assert plain.logprobs[0] == pen.logprobs[0]  # nothing generated yet to penalise
    assert any(a[1] != b[1] for a, b in zip(plain.logprobs[1:], pen.logprobs[1:]))
    gen = model.generate(PROMPT, regex="[0-9]{3}", logprobs=True, top_logprobs=20, stream=True)
    text = gen.run()
    tb, _ = model.tokenizer.token_bytes()
    for tid, lp, top in gen.logprobs:
        assert all(tb[i].isdigit() for i, _ in top) and lp <= 0
        assert math.isclose(sum(math.exp(v) for _, v in top), 1.0, rel_tol=1e-4)  # 10 digits < 20
    assert text.isdigit()


def test_bounds_and_errors(model):
    with pytest.raises(InvalidRequestError) as e:
        model.generate(PROMPT, logprobs=True, top_logprobs=21)
    assert e.value.param == "top_logprobs"
    with pytest.raises(InvalidRequestError, match="needs logprobs"):
        model.generate(PROMPT, top_logprobs=2)
    msgs = [{"role": "user", "content": "hi"}]
    for call, param in ((lambda: model.create_chat_completion(msgs, top_logprobs=2), "top_logprobs"),
                        (lambda: model.create_chat_completion(msgs, logprobs=3), "logprobs"),
                        (lambda: model.create_completion(PROMPT, logprobs=True), "logprobs"),
                        (lambda: model.create_completion(PROMPT, logprobs=30), "logprobs"),
                        (lambda: model.create_completion(PROMPT, logprobs=1, echo=True), "logprobs"),
                        (lambda: model.create_completion(PROMPT, top_logprobs=1), "top_logprobs")):
        with pytest.raises(InvalidRequestError) as e:
            call()
        assert e.value.param == param


def test_openai_shapes(model):
    tb, _ = model.tokenizer.token_bytes()
    r = model.create_completion(PROMPT, max_tokens=6, temperature=0, logprobs=3)
    c = r["choices"][0]
    lp = c["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == c["text"] and len(lp["tokens"]) == r["usage"]["completion_tokens"]
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(len(lp["tokens"]))]
    assert all(len(t) <= 3 and max(t.values()) == lp_ for t, lp_ in zip(lp["top_logprobs"], lp["token_logprobs"]))
    msgs = [{"role": "user", "content": "hello"}]
    r = model.create_chat_completion(msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2)
    content = r["choices"][0]["logprobs"]["content"]
    assert bytes(b for e in content for b in e["bytes"]).decode() == r["choices"][0]["message"]["content"]
    assert all(set(e) == {"token", "logprob", "bytes", "top_logprobs"} and len(e["top_logprobs"]) == 2
               for e in content)
    assert model.create_chat_completion(msgs, max_tokens=2)["choices"][0]["logprobs"] is None
    # streamed: each chunk carries its own tokens' logprobs; together they are the whole list
    chunks = list(model.create_chat_completion(msgs, max_tokens=6, temperature=0, logprobs=True, stream=True))
    streamed = [e for ch in chunks for e in ((ch["choices"][0]["logprobs"] or {}).get("content") or [])]
    assert [(e["token"], e["logprob"]) for e in streamed] == [(e["token"], e["logprob"]) for e in content]
    chunks = list(model.create_completion(PROMPT, max_tokens=6, temperature=0, logprobs=0, stream=True))
    toks = [t for ch in chunks for t in ((ch["choices"][0]["logprobs"] or {}).get("tokens") or [])]
    offs = [t for ch in chunks for t in ((ch["choices"][0]["logprobs"] or {}).get("text_offset") or [])]
    assert toks == lp["tokens"] and offs == lp["text_offset"]


def test_server_and_openai_client(model):
    pytest.importorskip("fastapi")
    openai = pytest.importorskip("openai")
    from fastapi.testclient import TestClient

    from gemma_cpp.openai.server import create_app

    with TestClient(create_app(Model(model.path, n_threads=1, max_seq_len=512))) as http:
        client = openai.OpenAI(base_url=str(http.base_url) + "/v1", api_key="none", http_client=http)
        msgs = [{"role": "user", "content": "hello"}]
        r = client.chat.completions.create(model="x", messages=msgs, max_tokens=6, temperature=0, logprobs=True,
                                           top_logprobs=3)
        ref = model.create_chat_completion(msgs, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
        got = [(e.token, e.logprob, [t.token for t in e.top_logprobs]) for e in r.choices[0].logprobs.content]
        assert got == [(e["token"], e["logprob"], [t["token"] for t in e["top_logprobs"]])
                       for e in ref["choices"][0]["logprobs"]["content"]]
        s = client.chat.completions.create(model="x", messages=msgs, max_tokens=6, temperature=0, logprobs=True,
                                           stream=True)
        streamed = [e.logprob for ch in s if ch.choices and ch.choices[0].logprobs
                    for e in (ch.choices[0].logprobs.content or [])]
        assert streamed == [g[1] for g in got]
        r = client.completions.create(model="x", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
        assert r.choices[0].logprobs.tokens and len(r.choices[0].logprobs.top_logprobs[0]) == 2
        bad = http.post("/v1/chat/completions", json={"messages": msgs, "top_logprobs": 99, "logprobs": True})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_logprobs"
        assert json.loads(bad.text)["error"]["type"] == "invalid_request_error"


def test_logit_bias(model):
    """OpenAI's logit_bias: added to the logits after the penalties (the logprobs show it exactly);
    -100 bans a token, +100 forces it; JSON's string keys work; bad ones are named."""
    ids = model.tokenize(PROMPT)
    free = model.generate(ids, max_new_tokens=6, ignore_eos=True)
    ban = {free[0]: -100}
    out = model.generate(ids, max_new_tokens=6, ignore_eos=True, logit_bias=ban)
    assert out[0] != free[0] and free[0] not in out
    forced = model.generate(ids, max_new_tokens=4, ignore_eos=True, logit_bias={7: 100.0})
    assert forced == [7, 7, 7, 7]
    g = model.generate(ids, max_new_tokens=1, logprobs=True, top_logprobs=0, logit_bias={free[0]: 2.5},
                       stream=True)
    g.run()
    ref = model.logits(ids)[-1].astype(np.float64)
    ref[free[0]] += 2.5
    assert abs(g.logprobs[0][1] - _log_softmax(ref)[free[0]]) < 1e-5
    assert model.generate(ids, max_new_tokens=6, ignore_eos=True) == free  # cleared after the call
    r = model.create_completion(PROMPT, max_tokens=3, temperature=0, logit_bias={"7": 100})
    assert model.tokenize(r["choices"][0]["text"], add_bos=False) == [7, 7, 7]
    for bad, msg in (({"x": 1}, "token ids"), ({"99999": 1}, "outside the vocabulary"), ({"7": 101}, "in [-100, 100]"),
                     ([1, 2], "must be an object")):
        with pytest.raises(InvalidRequestError, match=re.escape(msg)) as e:
            model.create_chat_completion([{"role": "user", "content": "hi"}], logit_bias=bad)
        assert e.value.param.startswith("logit_bias")
