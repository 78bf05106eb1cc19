"""One behaviour for every entry point (Python generate/chat, the OpenAI-shaped calls, the CLI,
the server): parameter bounds and messages, the seed rule, the system-message rule, unsupported
request fields, a Model used while its own stream is open, and the base-model warning."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import warnings

import pytest

from conftest import subprocess_env

from gemma_cpp import ChatTemplateError, Model
from gemma_cpp.model import BaseModelChatWarning
from gemma_cpp.generation import Generation as TextGeneration
from gemma_cpp.params import InvalidParameterType, InvalidRequestError

P = "the water boils at"
SYSTEM = "Answer in one word."
USER = "what is the cpu"


@pytest.fixture(scope="module")
def model_path(make_gcpp):
    return make_gcpp("g1_mqa")


@pytest.fixture(scope="module")
def model(model_path):
    return Model(model_path, n_threads=1)


@pytest.fixture(scope="module")
def http(model_path):
    """The server's app in this process (same code as `gemma-cpp serve`, no port needed)."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gemma_cpp.openai.server import create_app

    with TestClient(create_app(Model(model_path, n_threads=1))) as c:
        yield c


def cli(*args, timeout: float = 120):
    env = subprocess_env()
    env.pop("GEMMA_CPP_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "gemma_cpp.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------------------- parameter bounds
# (Python name, value, CLI flag, OpenAI name, the message every front gives)
BAD = [
    ("top_p", 0, "--top-p", "top_p", "top_p must be in (0, 1], got 0.0"),
    ("temperature", -1, "--temperature", "temperature", "temperature must be >= 0, got -1.0"),
    ("min_p", 1, "--min-p", "min_p", "min_p must be in [0, 1), got 1.0"),
    ("top_k", -1, "--top-k", "top_k", "top_k must be in [0, 2147483647], got -1"),
    ("top_k", 2**40, "--top-k", "top_k", "top_k must be in [0, 2147483647], got 1099511627776"),
    ("repetition_penalty", 0, "--repetition-penalty", "repeat_penalty", "must be > 0, got 0.0"),
    ("seed", -1, "--seed", "seed", "seed must be in [0, 18446744073709551616), got -1"),
    ("max_new_tokens", -1, "-n", "max_tokens", "must be in [0, 2147483647], got -1"),
    ("max_new_tokens", 2**40, "-n", "max_tokens", "must be in [0, 2147483647], got 1099511627776"),
    ("presence_penalty", 3, "--presence-penalty", "presence_penalty", "presence_penalty must be in [-2, 2], got 3.0"),
    ("frequency_penalty", -2.5, "--frequency-penalty", "frequency_penalty",
     "frequency_penalty must be in [-2, 2], got -2.5"),
]


@pytest.mark.parametrize("name,value,flag,oa_name,message", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bounds_are_one_table(model, model_path, http, name, value, flag, oa_name, message):
    with pytest.raises(InvalidRequestError) as e:
        model.generate(P, **{name: value})
    assert message in str(e.value) and e.value.param == name
    with pytest.raises(InvalidRequestError) as e:
        model.create_completion(P, **{oa_name: value})
    assert message in str(e.value) and e.value.param == oa_name
    r = cli("run", model_path, P, flag, value)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for route, body in (("/v1/completions", {"prompt": P}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": P}]})):
        resp = http.post(route, json={**body, oa_name: value})
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert message in err["message"] and err["param"] == oa_name


def test_wrong_types_are_type_errors_too(model):
    with pytest.raises(InvalidParameterType, match="temperature must be a number, got a string"):
        model.generate(P, temperature="hot")
    with pytest.raises(TypeError, match="top_k must be an integer, got 2.5"):
        model.create_completion(P, top_k=2.5)
    with pytest.raises(TypeError, match="stop"):
        model.chat([{"role": "user", "content": "hi"}], stop=[1])


# ---------------------------------------------------------------------------- seeds
def test_seed_rule_python(model, model_path):
    kw = dict(max_new_tokens=24, temperature=1.5, ignore_eos=True)
    assert model.generate(P, **kw) != model.generate(P, **kw)  # no seed: a fresh one each call
    a = model.generate(P, seed=7, **kw)
    assert a == model.generate(P, seed=7, **kw)
    seeded = Model(model_path, n_threads=1, seed=7)  # the Model's seed is an explicit seed too
    assert seeded.generate(P, **kw) == seeded.generate(P, **kw) == a
    greedy = model.generate(P, max_new_tokens=24, ignore_eos=True)
    assert greedy == model.generate(P, max_new_tokens=24, ignore_eos=True, seed=123)
    # The OpenAI-shaped call follows the same rule, and with the same seed gives the same text.
    ck = dict(max_tokens=24, temperature=1.5, ignore_eos=True)
    texts = [model.create_completion(P, **ck)["choices"][0]["text"] for _ in range(2)]
    assert texts[0] != texts[1]
    assert model.create_completion(P, seed=7, **ck)["choices"][0]["text"] == a


def test_seed_rule_cli(model, model_path):
    args = ["run", model_path, P, "-n", 24, "--temperature", 1.5, "--ignore-eos"]
    r1, r2 = cli(*args), cli(*args)
    assert r1.returncode == r2.returncode == 0
    assert r1.stdout != r2.stdout
    s1, s2 = cli(*args, "--seed", 7), cli(*args, "--seed", 7)
    expected = model.generate(P, max_new_tokens=24, temperature=1.5, ignore_eos=True, seed=7)
    assert s1.stdout == s2.stdout == expected + ("" if expected.endswith("\n") else "\n")


def test_seed_rule_server(model, http):
    body = {"prompt": P, "max_tokens": 24, "temperature": 1.5, "ignore_eos": True}
    texts = [http.post("/v1/completions", json=body).json()["choices"][0]["text"] for _ in range(2)]
    assert texts[0] != texts[1]
    seeded = [http.post("/v1/completions", json={**body, "seed": 7}).json()["choices"][0]["text"] for _ in range(2)]
    assert seeded[0] == seeded[1] == model.generate(P, max_new_tokens=24, temperature=1.5, ignore_eos=True, seed=7)


# ---------------------------------------------------------------------------- system messages
def test_one_system_rule_everywhere(model, model_path, http):
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    folded = [{"role": "user", "content": f"{SYSTEM}\n\n{USER}"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BaseModelChatWarning)
        expected = model.chat(folded, max_new_tokens=12)
        assert model.chat(msgs, max_new_tokens=12) == expected
        out = model.create_chat_completion(msgs, max_tokens=12, temperature=0)
    n_prompt = len(model.tokenize(model.apply_chat_template(folded), add_bos=False))
    assert out["choices"][0]["message"]["content"] == expected and out["usage"]["prompt_tokens"] == n_prompt
    r = cli("run", model_path, USER, "--chat", "--system", SYSTEM, "-n", 12)
    assert r.returncode == 0 and r.stdout == expected + ("" if expected.endswith("\n") else "\n")
    dev = [{"role": "developer", "content": SYSTEM}, {"role": "user", "content": USER}]  # OpenAI's newer name
    for messages in (msgs, dev):
        resp = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 12, "temperature": 0})
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == expected
        assert resp.json()["usage"]["prompt_tokens"] == n_prompt


def test_unsupported_roles_same_message_everywhere(model, http):
    msgs = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}]
    message = "messages[1]: role 'tool' is not supported"
    with pytest.raises(ChatTemplateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        model.chat(msgs)
    with pytest.raises(InvalidRequestError) as e:
        model.create_chat_completion(msgs)
    assert message in str(e.value) and e.value.param == "messages[1].role"
    resp = http.post("/v1/chat/completions", json={"messages": msgs})
    assert resp.status_code == 400 and message in resp.json()["error"]["message"]
    late = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]
    resp = http.post("/v1/chat/completions", json={"messages": late})
    assert resp.status_code == 400 and "only supported as the first message" in resp.json()["error"]["message"]


# ---------------------------------------------------------------------------- unsupported fields
UNSUPPORTED = {"n_predict": 5, "mirostat": 2, "typical_p": 0.5, "dry_multiplier": 0.8}


@pytest.mark.parametrize("field", sorted(UNSUPPORTED))
def test_unsupported_fields_are_rejected(model, http, field):
    for route, body in (("/v1/completions", {"prompt": P, "max_tokens": 2}),
                        ("/v1/chat/completions", {"messages": [{"role": "user", "content": P}], "max_tokens": 2})):
        resp = http.post(route, json={**body, field: UNSUPPORTED[field]})
        assert resp.status_code == 400, (route, field, resp.text)
        err = resp.json()["error"]
        assert err["param"] == field and field in err["message"]
    with pytest.raises(InvalidRequestError) as e:
        model.create_completion(P, max_tokens=2, **{field: UNSUPPORTED[field]})
    assert e.value.param == field


def test_routine_client_fields_are_ignored(http):
    body = {"messages": [{"role": "user", "content": P}], "max_tokens": 2, "user": "u1", "metadata": {"a": "b"},
            "store": False, "model": "anything", "parallel_tool_calls": True, "tool_choice": "none"}
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    from gemma_cpp.openai.protocol import IGNORED_FIELDS

    doc = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "server.md")).read()
    assert all(f"`{f}`" in doc for f in IGNORED_FIELDS)  # the documented list is the real one


def test_default_max_tokens_is_bounded(model, http):
    from gemma_cpp.params import DEFAULT_MAX_TOKENS

    assert DEFAULT_MAX_TOKENS == 512
    big = Model(model.path, n_threads=1)  # context 512 would end first: check the request's bound instead
    from gemma_cpp.openai.protocol import parse_chat, parse_completion

    chat = parse_chat(big, {"messages": [{"role": "user", "content": "hi"}]})
    assert chat.max_tokens == min(DEFAULT_MAX_TOKENS, big.max_seq_len - len(chat.prompt_ids))
    assert parse_completion(big, {"prompt": "hi"}).max_tokens == 16
    from gemma_cpp.cli import build_parser

    for cmd in (["run", "x"], ["chat"]):
        assert build_parser().parse_args(cmd).max_new_tokens == DEFAULT_MAX_TOKENS


# ---------------------------------------------------------------------------- one Model, an open stream
def test_using_the_model_inside_its_own_stream_raises(model):
    kw = dict(max_new_tokens=16, ignore_eos=True)
    expected = model.generate(P, **kw)
    g = model.generate(P, stream=True, **kw)
    first = next(g)
    for call in (lambda: model.generate("Water boils at", max_new_tokens=4), lambda: model.logits([2, 5]),
                 lambda: model.reset(), lambda: model.create_completion(P, max_tokens=2),
                 lambda: model.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)):
        with pytest.raises(RuntimeError, match="open stream"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BaseModelChatWarning)
                call()
    assert first + "".join(g) == expected  # the stream was not disturbed


@pytest.mark.parametrize("how", ["close", "drop"])
@pytest.mark.parametrize("kind", ["generate", "chat", "create_completion", "create_chat_completion",
                                  "TextGeneration"])
def test_closed_or_dropped_stream_frees_the_model(model, kind, how):
    msgs = [{"role": "user", "content": "hi"}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BaseModelChatWarning)
        s = {"generate": lambda: model.generate(P, stream=True, max_new_tokens=16, ignore_eos=True),
             "chat": lambda: model.chat(msgs, stream=True, max_new_tokens=16, ignore_eos=True),
             "create_completion": lambda: model.create_completion(P, stream=True, max_tokens=16, ignore_eos=True),
             "create_chat_completion": lambda: model.create_chat_completion(msgs, stream=True, max_tokens=16,
                                                                            ignore_eos=True),
             "TextGeneration": lambda: TextGeneration(model, model.tokenize(P), max_tokens=16, ignore_eos=True),
             }[kind]()
        next(s)
        next(s)
    gc.disable()  # freed at once, not by a later garbage collection
    try:
        if how == "close":
            s.close()
        else:
            del s
        assert len(model.generate([2, 5, 6], max_new_tokens=3, ignore_eos=True)) == 3
    finally:
        gc.enable()


def test_other_threads_wait_for_an_open_stream(model):
    kw = dict(max_new_tokens=8, ignore_eos=True)
    expected = model.generate("Water boils at", **kw)
    g = model.generate(P, stream=True, **kw)
    next(g)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("text", model.generate("Water boils at", **kw)))
    t.start()
    t.join(0.5)
    assert t.is_alive() and not result  # it waits (it cannot run while the stream holds the cache)
    g.close()
    t.join(60)
    assert result["text"] == expected


# ---------------------------------------------------------------------------- base models
def test_base_model_warns_once_for_chat(model_path):
    m = Model(model_path, n_threads=1)
    assert m.variant["kind"] == "base"  # the tiny checkpoint has no chat template and no "-it" name
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m.generate(P, max_new_tokens=2)
        assert not w  # text completion is what a base model is for
        m.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)
        m.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)
    assert [type(x.message) for x in w] == [BaseModelChatWarning]
    r = cli("run", model_path, "hi", "--chat", "-n", 2)
    warn = [line for line in r.stderr.splitlines() if "warning" in line]
    assert r.returncode == 0 and len(warn) == 1 and warn[0].startswith("gemma-cpp: warning: ")
    assert "base (pretrained)" in warn[0]


def test_instruction_tuned_name_is_recorded(make_ckpt, tmp_path):
    from gemma_cpp.convert import convert
    from gemma_cpp.gcpp_format import read_header

    it = tmp_path / "tiny-gemma-it"
    os.symlink(make_ckpt("g1_mqa"), it)
    out = convert(str(it), str(tmp_path / "m.gcpp"), dtype="f32", progress=False)
    assert read_header(out).meta["provenance"]["variant"] == {
        "kind": "instruction-tuned", "evidence": "checkpoint directory 'tiny-gemma-it'"}
    m = Model(out)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        m.chat([{"role": "user", "content": "hi"}], max_new_tokens=2)
    assert not w
    r = cli("info", out)
    assert "variant:       instruction-tuned" in r.stdout


def test_variant_from_gguf_metadata():
    from gemma_cpp.variant import detect, names_from_provenance, of_header

    def gguf(meta, template):
        return {"provenance": {"source_format": "gguf", "gguf_metadata": meta, "gguf_name": meta.get("general.name")},
                "chat_template": template}

    # The demo file: no fine-tune tag, no template -> base (and files converted before variants existed).
    assert of_header(gguf({"general.name": "Gemma 3 270m", "general.type": "model"}, None))["kind"] == "base"
    assert of_header(gguf({"general.name": "Gemma 3 270m It", "general.finetune": "it"}, "{{x}}"))["kind"] \
        == "instruction-tuned"
    assert of_header(gguf({"general.name": "Gemma 2 2b", "general.finetune": "pt"}, "{{x}}"))["kind"] == "base"
    assert of_header(gguf({"general.name": "Gemma 2 2b"}, "{{x}}"))["kind"] == "unknown"
    assert detect(names_from_provenance({"hf_config": {"_name_or_path": "google/gemma-3-1b-it"}}), False)["kind"] \
        == "instruction-tuned"


# ---------------------------------------------------------------------------- small fixes
def test_tokenize_bytes(model):
    assert model.tokenize("über 😀".encode()) == model.tokenize("über 😀")
    with pytest.raises(ValueError, match="UTF-8"):
        model.tokenize(b"\xff\xfe")
    with pytest.raises(TypeError, match="str or bytes"):
        model.tokenize(123)


def test_stop_flag_unescapes():
    from gemma_cpp.cli.options import unescape as _unescape

    assert _unescape(r"\n\n") == "\n\n"
    assert _unescape(r"a\tb\\n\"") == 'a\tb\\n"'
    assert _unescape(r"C:\path") == r"C:\path"  # unknown escapes stay as typed


def test_ctx_too_large_is_exit_1_for_every_command(model_path, model, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("water boils " * 200)
    big = model.config.max_position + 1
    for args in (["run", model_path, "hi", "--ctx", big], ["perplexity", model_path, text, "--ctx", big]):
        r = cli(*args)
        assert r.returncode == 1 and f"--ctx {big} exceeds the model's context length" in r.stderr, r.stderr
    r = cli("perplexity", model_path)
    assert r.returncode == 2 and "missing FILE" in r.stderr


def test_run_usage_line():
    r = cli("run", "--help")
    assert r.stdout.startswith("usage: gemma-cpp run [options] [MODEL] PROMPT\n")


def test_bench_reports_each_cell_as_it_finishes(model_path):
    r = cli("bench", model_path, "-p", "8", "-n", "4", "-t", "1", "-r", "1")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("gemma-cpp bench:")]
    assert [line.split(":")[1].strip() for line in lines] == ["pp8 on 1 thread", "tg4 on 1 thread"]


def test_lock_files_do_not_stay(tmp_path):
    from gemma_cpp.demo import _locked

    lock = tmp_path / "x.lock"
    order = []

    def worker(i):
        with _locked(lock):
            order.append(("in", i))
            order.append(("out", i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not lock.exists()
    assert all(order[k][0] == "in" and order[k + 1] == ("out", order[k][1]) for k in range(0, len(order), 2))


def test_py_typed_is_shipped():
    import gemma_cpp

    assert os.path.isfile(os.path.join(os.path.dirname(gemma_cpp.__file__), "py.typed"))
