"""The official `openai` client against `gemma-cpp serve` in a subprocess on a loopback port:
response_format (json_object, json_schema), logprobs / top_logprobs, n > 1 and streaming with
each chunk's own logprobs, on both /v1/chat/completions and /v1/completions. Every answer is
checked against the same call made in this process on the same model file (create_*completion:
the server runs the same code, so they agree exactly)."""

from __future__ import annotations

import json

import pytest

from gemma_cpp import Model

pytest.importorskip("llguidance", reason="response_format needs the [structured] extra")
jsonschema = pytest.importorskip("jsonschema")
from test_server import HAVE_SERVER, Server  # noqa: E402

if not HAVE_SERVER:
    pytest.skip("the server tests need fastapi, uvicorn, openai and httpx", allow_module_level=True)

PROMPT = "the answer as JSON:"
MSGS = [{"role": "user", "content": "the answer as JSON"}]
SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0,
                                                                           "maximum": 99}},
          "required": ["ok", "n"], "additionalProperties": False}
RF_SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def model_path(make_gcpp):
    return make_gcpp("g3")


@pytest.fixture(scope="module")
def model(model_path):
    return Model(model_path, n_threads=1, max_seq_len=512)


@pytest.fixture(scope="module")
def client(model_path, tmp_path_factory):
    s = Server(model_path, str(tmp_path_factory.mktemp("surface") / "log.txt"), "--threads", "1",
               "--ctx", "512")
    yield s.client()
    s.stop()


def _chat(model, **kw):
    return model.create_chat_completion(MSGS, **kw)


def test_response_format(client, model):
    # (any JSON object is unbounded: greedy, where this model closes it soon; the schema sampled)
    for rf, check, t in (({"type": "json_object"}, lambda v: isinstance(v, dict), 0.0),
                         (RF_SCHEMA, lambda v: jsonschema.validate(v, SCHEMA) is None, 1.0)):
        kw = dict(max_tokens=60, seed=3, temperature=t, response_format=rf)
        r = client.chat.completions.create(model="x", messages=MSGS, **kw)
        text = r.choices[0].message.content
        assert check(json.loads(text)) and r.choices[0].finish_reason == "stop"
        assert text == _chat(model, **kw)["choices"][0]["message"]["content"]
        r = client.completions.create(model="x", prompt=PROMPT, extra_body={"response_format": rf}, max_tokens=60,
                                      seed=3, temperature=t)
        assert check(json.loads(r.choices[0].text)) and r.choices[0].finish_reason == "stop"
        assert r.choices[0].text == model.create_completion(PROMPT, **kw)["choices"][0]["text"]


def test_logprobs(client, model):
    kw = dict(max_tokens=6, temperature=0.8, seed=1, logprobs=True, top_logprobs=3)
    r = client.chat.completions.create(model="x", messages=MSGS, **kw)
    ref = _chat(model, **kw)["choices"][0]["logprobs"]["content"]
    assert [e.model_dump() for e in r.choices[0].logprobs.content] == ref
    assert all(len(e["top_logprobs"]) == 3 for e in ref)
    r = client.completions.create(model="x", prompt=PROMPT, max_tokens=6, temperature=0.8, seed=1, logprobs=2)
    ref = model.create_completion(PROMPT, max_tokens=6, temperature=0.8, seed=1, logprobs=2)["choices"][0]
    assert r.choices[0].logprobs.model_dump() == ref["logprobs"]


def test_n_choices(client, model):
    kw = dict(n=3, max_tokens=8, temperature=1.0, seed=9)
    r = client.chat.completions.create(model="x", messages=MSGS, **kw)
    ref = _chat(model, **kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == [c["message"]["content"] for c in ref["choices"]]
    assert r.usage.model_dump(exclude_none=True) == ref["usage"]
    kw["max_tokens"] = 40
    r = client.completions.create(model="x", prompt=PROMPT, extra_body={"response_format": RF_SCHEMA}, **kw)
    for i, c in enumerate(r.choices):
        assert c.index == i and c.finish_reason == "stop"
        jsonschema.validate(json.loads(c.text), SCHEMA)
        assert c.text == model.create_completion(PROMPT, max_tokens=40, temperature=1.0, seed=9 + i,
                                                 response_format=RF_SCHEMA)["choices"][0]["text"]
    r = client.chat.completions.create(model="x", messages=MSGS, n=2, max_tokens=5, temperature=0)
    assert r.choices[0].message.content == r.choices[1].message.content  # greedy: the same text


def test_streaming_with_logprobs_per_chunk(client, model):
    """Each chunk carries the logprobs of its own tokens (OpenAI's streamed shape); together
    they are the whole response's; with n > 1 every chunk names its choice."""
    kw = dict(max_tokens=8, temperature=0.7, seed=4, logprobs=True, top_logprobs=2, n=2)
    ref = _chat(model, **kw)
    chunks = list(client.chat.completions.create(model="x", messages=MSGS, stream=True, **kw))
    for i, c in enumerate(ref["choices"]):
        mine = [ch.choices[0] for ch in chunks if ch.choices and ch.choices[0].index == i]
        text = [m.delta.content or "" for m in mine]
        lps = [[e.model_dump() for e in m.logprobs.content] if m.logprobs else [] for m in mine]
        assert "".join(text) == c["message"]["content"]
        assert [e for lp in lps for e in lp] == c["logprobs"]["content"]
        assert sum(bool(lp) for lp in lps) > 1  # spread over the chunks, not all in the last
        assert mine[-1].finish_reason == c["finish_reason"]
    ref = model.create_completion(PROMPT, max_tokens=8, temperature=0.7, seed=4, logprobs=1)["choices"][0]
    chunks = list(client.completions.create(model="x", prompt=PROMPT, max_tokens=8, temperature=0.7, seed=4,
                                            logprobs=1, stream=True))
    parts = [ch.choices[0].logprobs for ch in chunks if ch.choices[0].logprobs]
    assert len(parts) > 1
    assert [t for p in parts for t in p.tokens] == ref["logprobs"]["tokens"]
    assert [t for p in parts for t in p.text_offset] == ref["logprobs"]["text_offset"]
    assert [t for p in parts for t in p.token_logprobs] == ref["logprobs"]["token_logprobs"]
    assert "".join(ch.choices[0].text for ch in chunks) == ref["text"]
