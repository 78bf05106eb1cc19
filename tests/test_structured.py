"""Structured output (gemma_cpp/structured.py through llguidance): JSON schemas, regexes and
grammars on a tiny random model whose unconstrained output is garbage, greedy and sampled; every
front (generate, chat, create_*completion, the OpenAI protocol layer); the vocabulary table
llguidance reads; errors. The real Gemma 3 270M: test_structured_real.py."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest

llguidance = pytest.importorskip("llguidance", reason="structured output needs the [structured] extra")
jsonschema = pytest.importorskip("jsonschema")

from gemma_cpp import InvalidRequestError, Model  # noqa: E402
from gemma_cpp import structured  # noqa: E402
from gemma_cpp.generation import Generation  # noqa: E402
from schemas import REGEXES, SCHEMAS, SEEDS  # noqa: E402

PROMPT = "the answer as JSON:"
@pytest.fixture(scope="module")
def model(make_gcpp):
    return Model(make_gcpp("g3"), n_threads=1, max_seq_len=512)


def _check(schema, text: str, gen: Generation, bounded: bool):
    if gen.finish_reason == "length":
        assert not bounded, f"a bounded schema ran to max_tokens: {text!r}"
        return
    assert gen.finish_reason == "stop", gen.stop_reason
    jsonschema.validate(json.loads(text), schema)


def test_unconstrained_output_is_garbage(model):
    outs = [model.generate(PROMPT, max_new_tokens=24, temperature=1.0, seed=s) for s in SEEDS]
    for o in outs:
        with pytest.raises(ValueError):
            json.loads(o)


@pytest.mark.parametrize("name,schema,bounded", SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_schema(model, name, schema, bounded):
    jsonschema.Draft202012Validator.check_schema(schema)
    for temperature, seed in [(0.0, None)] + [(1.0, s) for s in SEEDS]:
        gen = model.generate(PROMPT, json_schema=schema, temperature=temperature, seed=seed, max_new_tokens=160,
                             stream=True)
        text = gen.run()
        _check(schema, text, gen, bounded)
        if bounded:
            assert gen.stop_reason in ("grammar", "eos")


def test_schema_as_json_text_and_max_tokens(model):
    schema = SCHEMAS[14][1]
    a = model.generate(PROMPT, json_schema=schema, max_new_tokens=100)
    assert model.generate(PROMPT, json_schema=json.dumps(schema), max_new_tokens=100) == a
    gen = model.generate(PROMPT, json_schema=schema, max_new_tokens=3, stream=True)
    gen.run()
    assert gen.finish_reason == "length" and gen.completion_tokens == 3
    gen = model.generate(PROMPT, json_schema=schema, max_new_tokens=100, stream=True)
    gen.run()
    exact = model.generate(PROMPT, json_schema=schema, max_new_tokens=gen.completion_tokens, stream=True)
    assert exact.run() == a and exact.stop_reason == "grammar"  # complete at exactly max_tokens: "stop"


@pytest.mark.parametrize("rx", REGEXES)
def test_regex(model, rx):
    for temperature, seed in [(0.0, None)] + [(1.0, s) for s in SEEDS[:3]]:
        gen = model.generate(PROMPT, regex=rx, temperature=temperature, seed=seed, max_new_tokens=64, stream=True)
        text = gen.run()
        assert gen.finish_reason == "stop", (rx, text)
        assert re.fullmatch(rx, text), (rx, text)


def test_lark_and_gbnf_grammars(model):
    lark = 'start: item ("," item)*\nitem: "on" | "off" | NUM\nNUM: /[0-9]{1,2}/'
    gbnf = 'root ::= answer ("." | "!")\nanswer ::= "yes" | "no"'
    for seed in SEEDS:
        a = model.generate(PROMPT, grammar=lark, temperature=1.0, seed=seed, max_new_tokens=40)
        assert all(re.fullmatch(r"on|off|[0-9]{1,2}", x) for x in a.split(",")), a
        b = model.generate(PROMPT, grammar=gbnf, temperature=1.0, seed=seed, max_new_tokens=40)
        assert re.fullmatch(r"(yes|no)[.!]", b), b


def test_greedy_picks_the_best_allowed_token(model):
    """The mask reaches greedy decoding: the first token is the argmax of the logits over the ids
    the constraint allows (here the digit tokens), not the unconstrained argmax."""
    ids = model.tokenize(PROMPT)
    logits = model.logits(ids)[-1]
    tb, special = model.tokenizer.token_bytes()
    digits = [i for i, b in enumerate(tb) if len(b) == 1 and b.isdigit() and i not in special]
    assert int(np.argmax(logits)) not in digits
    out = model.generate(ids, regex=r"[0-9]", max_new_tokens=5)
    assert out == [digits[int(np.argmax(logits[digits]))]]


def test_eos_when_complete_but_open(model):
    """A regex that may go on (`a+`) allows the end ids once complete; the model may choose them."""
    tb, _ = model.tokenizer.token_bytes()
    for seed in SEEDS:
        gen = model.generate(PROMPT, regex=r"(ab)+", temperature=1.0, seed=seed, max_new_tokens=30, stream=True)
        text = gen.run()
        assert re.fullmatch(r"(ab)*", text) and gen.stop_reason in ("eos", "length"), (text, gen.stop_reason)


def test_fronts(model):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    msgs = [{"role": "user", "content": "ok?"}]
    with pytest.warns(Warning) if model.is_base_model else _nothing():
        text = model.chat(msgs, json_schema=schema, max_new_tokens=40)
    jsonschema.validate(json.loads(text), schema)
    out = model.create_chat_completion(msgs, temperature=0.0, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}})
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop" and json.loads(choice["message"]["content"]) in ({"ok": True},
                                                                                              {"ok": False})
    out = model.create_completion(PROMPT, max_tokens=60, temperature=0.0, response_format={"type": "json_object"})
    assert isinstance(json.loads(out["choices"][0]["text"]), dict)
    for kw in ({"json_schema": schema}, {"grammar": 'root ::= "{\\"ok\\": " ("true" | "false") "}"'},
               {"regex": r'\{"ok": (true|false)\}'}):
        out = model.create_completion(PROMPT, max_tokens=60, seed=1, **kw)
        assert json.loads(out["choices"][0]["text"])["ok"] in (True, False), kw
    chunks = list(model.create_chat_completion(msgs, json_schema=schema, stream=True, seed=2))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    jsonschema.validate(json.loads(text), schema)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("kw,param,message", [
    ({"json_schema": {"type": "foo"}}, "json_schema", "foo"),
    ({"json_schema": "{not json"}, "json_schema", "not valid JSON"),
    ({"json_schema": [1]}, "json_schema", "JSON schema object"),
    ({"regex": "a[b"}, "regex", "unclosed"),
    ({"grammar": "start: foo"}, "grammar", "foo"),
    ({"regex": "a", "grammar": 'start: "a"'}, "grammar", "one constraint"),
])
def test_bad_constraints(model, kw, param, message):
    with pytest.raises(InvalidRequestError) as e:
        model.generate(PROMPT, max_new_tokens=4, **kw)
    assert e.value.param == param and message in str(e.value)


@pytest.mark.parametrize("body,param", [
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "foo"}}}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": "json"}, "response_format"),
    ({"json_schema": {"type": "integer", "minimum": "x"}}, "json_schema"),
    ({"grammar": "root ::= foo"}, "grammar"),
    ({"grammar": 'root ::= "a"', "json_schema": {}}, "grammar"),
    ({"response_format": {"type": "json_object"}, "regex": "a"}, "regex"),
])
def test_bad_constraints_in_requests(model, body, param):
    for call in (lambda: model.create_completion(PROMPT, max_tokens=4, **body),
                 lambda: model.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=4, **body)):
        with pytest.raises(InvalidRequestError) as e:
            call()
        assert e.value.param == param, e.value


def test_text_response_format_and_empty_grammar_are_no_constraint(model):
    a = model.create_completion(PROMPT, max_tokens=6, temperature=0.0)["choices"][0]["text"]
    b = model.create_completion(PROMPT, max_tokens=6, temperature=0.0, grammar="",
                                response_format={"type": "text"})["choices"][0]["text"]
    assert a == b


def test_token_mask_and_constraint_do_not_combine(model):
    from gemma_cpp.generation import token_mask

    with pytest.raises(ValueError, match="cannot be combined"):
        model.generate(PROMPT, regex="a", token_mask=token_mask([5], model.config.vocab_size))


def test_missing_extra_names_it(model, monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)  # import llguidance now fails
    with pytest.raises(ImportError, match=r"pip install 'gemma_cpp\[structured\]'"):
        model.generate(PROMPT, regex="a")
    with pytest.raises(InvalidRequestError, match=r"\[structured\]") as e:
        model.create_completion(PROMPT, response_format={"type": "json_object"})
    assert e.value.param == "response_format"
    assert model.generate(PROMPT, max_new_tokens=2)  # without a constraint nothing needs it


def test_token_bytes_spell_the_text(model):
    """The table llguidance reads: the bytes of a text's ids join to the text (bytes pieces,
    '▁' as space, multi-byte characters through byte fallback), special ids are marked."""
    tok = model.tokenizer
    tb, special = tok.token_bytes()
    assert len(tb) == tok.vocab_size and set(tok.stop_ids) <= set(special) and tok.bos_id in special
    for text in ("hello world  the café 東京 😀 12345", " leading space", "tab\tnew\nline"):
        ids = tok.encode(text, add_bos=False)
        assert b"".join(tb[i] for i in ids) == text.encode(), text
    lt = structured.lltokenizer(tok, model.config.vocab_size)
    assert lt is structured.lltokenizer(tok, model.config.vocab_size)  # cached
    assert sorted(lt.eos_tokens) == sorted(tok.stop_ids)


def test_clone_and_threads_share_the_vocabulary(model):
    import threading

    schema = SCHEMAS[16][1]
    clones = [model.clone() for _ in range(2)]
    outs: dict[int, str] = {}

    def work(i):
        outs[i] = clones[i].generate(PROMPT, json_schema=schema, temperature=1.0, seed=i, max_new_tokens=120)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(2):
        jsonschema.validate(json.loads(outs[i]), schema)
        assert outs[i] == model.generate(PROMPT, json_schema=schema, temperature=1.0, seed=i, max_new_tokens=120)


# ---------------------------------------------------------------------------- CLI and server
def _cli(*args):
    import subprocess

    from conftest import subprocess_env

    return subprocess.run([sys.executable, "-m", "gemma_cpp.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=subprocess_env(), stdin=subprocess.DEVNULL)


def test_cli(model, tmp_path):
    schema = SCHEMAS[16][1]
    (tmp_path / "s.json").write_text(json.dumps(schema))
    (tmp_path / "g.lark").write_text('start: ("yes" | "no") "."')
    (tmp_path / "bad.json").write_text('{"type": "wat"}')
    r = _cli("run", model.path, PROMPT, "--json-schema", tmp_path / "s.json", "--temp", "1", "-s", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    jsonschema.validate(json.loads(out["text"]), schema)
    assert out["finish_reason"] == "stop"
    assert out["text"] == model.generate(PROMPT, json_schema=schema, temperature=1.0, seed=3)
    r = _cli("run", model.path, PROMPT, "--grammar", tmp_path / "g.lark")
    assert r.returncode == 0 and re.fullmatch(r"(yes|no)\.\n", r.stdout), (r.stdout, r.stderr)
    r = _cli("run", model.path, PROMPT, "--regex", "[0-9]{4}")
    assert r.returncode == 0 and re.fullmatch(r"[0-9]{4}\n", r.stdout), (r.stdout, r.stderr)
    for bad, msg in ((("--json-schema", tmp_path / "bad.json"), "argument --json-schema: Invalid type: wat"),
                     (("--grammar", tmp_path / "none.lark"), "cannot read"),
                     (("--regex", "a", "--grammar", tmp_path / "g.lark"), "not allowed with")):
        r = _cli("run", model.path, PROMPT, *bad)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
    r = subprocess_run_chat(model.path, tmp_path / "s.json")
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        jsonschema.validate(json.loads(line), schema)


def subprocess_run_chat(path, schema_file):
    import subprocess

    from conftest import subprocess_env

    return subprocess.run([sys.executable, "-m", "gemma_cpp.cli", "chat", str(path), "--json-schema",
                           str(schema_file), "-n", "120"], input="first\nsecond\n", capture_output=True, text=True,
                          timeout=120, env=subprocess_env())


@pytest.fixture(scope="module")
def http(model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gemma_cpp.openai.server import create_app

    with TestClient(create_app(Model(model.path, n_threads=1, max_seq_len=512))) as c:
        yield c


def test_server(http):
    schema = SCHEMAS[14][1]
    msgs = [{"role": "user", "content": "who?"}]
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}
    for route, body in (("/v1/chat/completions", {"messages": msgs}), ("/v1/completions", {"prompt": PROMPT})):
        for extra in ({"response_format": rf}, {"json_schema": schema}):
            r = http.post(route, json={**body, **extra, "max_tokens": 120, "seed": 4})
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            jsonschema.validate(json.loads(text), schema)
            assert choice["finish_reason"] == "stop"
        r = http.post(route, json={**body, "grammar": 'root ::= "a" | "b"', "max_tokens": 8})
        assert r.status_code == 200
        choice = r.json()["choices"][0]
        assert (choice["message"]["content"] if "message" in choice else choice["text"]) in ("a", "b")
        r = http.post(route, json={**body, "response_format": {"type": "json_object"}, "max_tokens": 200,
                                   "stream": True})
        assert r.status_code == 200
        for bad, param in (({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": 3}}}},
                            "response_format"), ({"json_schema": {"minimum": "x", "type": "integer"}}, "json_schema"),
                           ({"grammar": "root ::= nothing"}, "grammar"),
                           ({"grammar": 'root ::= "a"', "response_format": {"type": "json_object"}}, "grammar")):
            r = http.post(route, json={**body, **bad, "max_tokens": 4})
            assert r.status_code == 400, (bad, r.text)
            err = r.json()["error"]
            assert err["param"] == param and err["type"] == "invalid_request_error", err


def test_openai_client(http):
    """The official client's response_format (a dict, and a pydantic model through .parse())."""
    openai = pytest.importorskip("openai")
    pydantic = pytest.importorskip("pydantic")
    client = openai.OpenAI(base_url=str(http.base_url) + "/v1", api_key="none", http_client=http)
    schema = SCHEMAS[16][1]
    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=120,
                                       seed=5, response_format={"type": "json_schema",
                                                                "json_schema": {"name": "n", "schema": schema}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    assert r.choices[0].finish_reason == "stop"

    class Answer(pydantic.BaseModel):
        ok: bool
        level: int = pydantic.Field(ge=0, le=9)

    r = client.chat.completions.parse(model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=60,
                                      seed=1, response_format=Answer)
    assert isinstance(r.choices[0].message.parsed, Answer)
    r = client.completions.create(model="x", prompt=PROMPT, max_tokens=60, extra_body={"json_schema": schema},
                                  seed=2)
    jsonschema.validate(json.loads(r.choices[0].text), schema)
