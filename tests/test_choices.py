"""n > 1 choices on create_completion / create_chat_completion (the server runs the same code:
tests/test_openai_surface.py): choice i samples with seed + i, so choice 0 is the n=1 answer;
the choices after the first reuse the prompt's cached keys and values; greedy choices are one run
answered n times; usage counts the prompt once and every choice's tokens; streamed chunks name
their choice's index; bounds from params.py."""

from __future__ import annotations

import re

import pytest

from gemma_cpp import InvalidRequestError, Model
from gemma_cpp.params import SEED_LIMIT, choice_seed

PROMPT = "the water boils at"
MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def model(make_gcpp):
    return Model(make_gcpp("g3"), n_threads=1, max_seq_len=512)


def _texts(r: dict) -> list[str]:
    return [c["message"]["content"] if "message" in c else c["text"] for c in r["choices"]]


def test_seed_of_each_choice():
    assert [choice_seed(7, i) for i in range(3)] == [7, 8, 9]
    assert choice_seed(SEED_LIMIT - 1, 2) == 1  # unsigned 64-bit: wraps


def test_sampled_choices_use_seed_plus_index(model):
    r = model.create_completion(PROMPT, n=4, max_tokens=8, temperature=1.0, seed=11, ignore_eos=True)
    assert [c["index"] for c in r["choices"]] == [0, 1, 2, 3]
    want = [model.generate(PROMPT, max_new_tokens=8, temperature=1.0, seed=11 + i, ignore_eos=True) for i in range(4)]
    assert _texts(r) == want
    assert len(set(want)) > 1  # each choice has its own draw
    ids = model.tokenize(PROMPT)  # ignore_eos: 8 tokens each
    assert r["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 32, "total_tokens": len(ids) + 32}
    one = model.create_completion(PROMPT, max_tokens=8, temperature=1.0, seed=11, ignore_eos=True)
    assert _texts(one) == want[:1]


def test_choices_after_the_first_reuse_the_prompt_cache(model):
    """The runs go one after another on the Model: each later one prefills only the prompt's last
    token (the cache keeps the prompt; the previous choice's tokens are dropped)."""
    from gemma_cpp.generation import Generation
    from gemma_cpp.openai.protocol import parse_completion

    model.reset()
    req = parse_completion(model, {"prompt": PROMPT, "n": 3, "max_tokens": 6, "seed": 3})
    prefilled = []
    for i in range(req.runs):
        g: Generation = req.generation(model, index=i)
        g.run()
        prefilled.append(g.prefilled_tokens)
    assert prefilled == [len(req.prompt_ids), 1, 1]


def test_chat_choices_and_logprobs(model):
    r = model.create_chat_completion(MSGS, n=3, max_tokens=6, temperature=0.9, seed=5, logprobs=True,
                                     top_logprobs=2)
    assert [c["index"] for c in r["choices"]] == [0, 1, 2]
    for i, c in enumerate(r["choices"]):
        alone = model.create_chat_completion(MSGS, max_tokens=6, temperature=0.9, seed=5 + i, logprobs=True,
                                             top_logprobs=2)["choices"][0]
        assert c["message"] == alone["message"] and c["logprobs"] == alone["logprobs"]
        assert c["finish_reason"] == alone["finish_reason"]


def test_greedy_choices_are_one_run_answered_n_times(model):
    r = model.create_completion(PROMPT, n=3, max_tokens=7, temperature=0, logprobs=1)
    one = model.create_completion(PROMPT, max_tokens=7, temperature=0, logprobs=1)
    c0 = one["choices"][0]
    assert r["choices"] == [dict(c0, index=i) for i in range(3)]
    u = one["usage"]
    assert r["usage"] == {"prompt_tokens": u["prompt_tokens"], "completion_tokens": 3 * u["completion_tokens"],
                          "total_tokens": u["prompt_tokens"] + 3 * u["completion_tokens"]}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_streamed_choices(model, temperature):
    """Streamed: the choices one after another, every chunk naming its index; per choice the text,
    the logprobs and the finish_reason are the whole response's; usage comes last."""
    kw = dict(n=3, max_tokens=6, temperature=temperature, seed=2, logprobs=True)
    whole = model.create_chat_completion(MSGS, **kw)
    chunks = list(model.create_chat_completion(MSGS, stream=True, stream_options={"include_usage": True}, **kw))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    seen = [ch["choices"][0]["index"] for ch in chunks[:-1]]
    assert seen == sorted(seen) and set(seen) == {0, 1, 2}
    for i, c in enumerate(whole["choices"]):
        mine = [ch["choices"][0] for ch in chunks[:-1] if ch["choices"][0]["index"] == i]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert "".join(m["delta"].get("content", "") for m in mine) == c["message"]["content"]
        lps = [e for m in mine for e in ((m["logprobs"] or {}).get("content") or [])]
        assert lps == c["logprobs"]["content"]
        assert [m["finish_reason"] for m in mine] == [None] * (len(mine) - 1) + [c["finish_reason"]]
    chunks = list(model.create_completion(PROMPT, stream=True, **dict(kw, logprobs=0)))
    whole = model.create_completion(PROMPT, **dict(kw, logprobs=0))
    for i, c in enumerate(whole["choices"]):
        mine = [ch["choices"][0] for ch in chunks if ch["choices"][0]["index"] == i]
        assert "".join(m["text"] for m in mine) == c["text"]
        assert [t for m in mine for t in ((m["logprobs"] or {}).get("text_offset") or [])] == \
            c["logprobs"]["text_offset"]


@pytest.mark.parametrize("n,message", [(0, "n must be in [1, 128], got 0"), (129, "in [1, 128]"),
                                       (1.5, "must be an integer"), ("2", "must be an integer")])
def test_bounds(model, n, message):
    for call in (lambda: model.create_completion(PROMPT, n=n), lambda: model.create_chat_completion(MSGS, n=n)):
        with pytest.raises(InvalidRequestError, match=re.escape(message)) as e:
            call()
        assert e.value.param == "n"
