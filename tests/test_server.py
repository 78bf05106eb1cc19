"""The OpenAI-shaped Python calls (gemma_cpp.openai) and the HTTP server, driven by the official
`openai` client against `gemma-cpp serve` in a subprocess on a loopback port."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

import gemma_cpp
from gemma_cpp import Model
from gemma_cpp.openai import InvalidRequestError

try:
    import fastapi  # noqa: F401
    import httpx
    import openai
    import uvicorn  # noqa: F401

    HAVE_SERVER = True
except ImportError as e:  # pragma: no cover - depends on the environment
    HAVE_SERVER = False
    _MISSING = str(e)

needs_server = pytest.mark.skipif(not HAVE_SERVER, reason="the server tests need fastapi, uvicorn, openai and "
                                  "httpx (pip install 'gemma_cpp[server,test]')" if not HAVE_SERVER else "")
N = 8


@pytest.fixture(scope="module")
def model_path(make_gcpp):
    return make_gcpp("g1_mqa")


@pytest.fixture(scope="module")
def model(model_path):
    return Model(model_path, n_threads=1)  # references on one thread: fast on busy shared cores


# ---------------------------------------------------------------------------- Python API
def test_create_completion(model):
    out = model.create_completion("hello world", max_tokens=N, temperature=0)
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    ids = model.generate(model.tokenize("hello world"), max_new_tokens=N)
    assert out["choices"][0]["text"] == model.generate("hello world", max_new_tokens=N)
    assert out["choices"][0]["finish_reason"] == ("length" if len(ids) == N else "stop")
    assert out["usage"] == {"prompt_tokens": len(model.tokenize("hello world")), "completion_tokens": len(ids),
                            "total_tokens": len(model.tokenize("hello world")) + len(ids)}
    echo = model.create_completion("hello world", max_tokens=N, temperature=0, echo=True)
    assert echo["choices"][0]["text"] == "hello world" + out["choices"][0]["text"]


def test_create_completion_stream_and_stop(model):
    full = model.create_completion("the cache", max_tokens=N, temperature=0)["choices"][0]["text"]
    chunks = list(model.create_completion("the cache", max_tokens=N, temperature=0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == full
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip()
    cut = model.create_completion("the cache", max_tokens=N, temperature=0, stop=[stop])
    assert cut["choices"][0]["text"] == full[:full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_create_chat_completion(model):
    msgs = [{"role": "user", "content": "hello there"}]
    out = model.create_chat_completion(msgs, max_tokens=N, temperature=0)
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": model.chat(msgs, max_new_tokens=N)}
    chunks = list(model.create_chat_completion(msgs, max_tokens=N, temperature=0, stream=True,
                                               stream_options={"include_usage": True}))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == out["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == out["usage"]
    # content as a list of text parts; a system message folded into a template without one
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "there"}]}]
    assert model.create_chat_completion(parts, max_tokens=N, temperature=0)["choices"][0]["message"] == \
        out["choices"][0]["message"]
    sys_msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    folded = [{"role": "user", "content": "be brief\n\nhello"}]
    assert model.create_chat_completion(sys_msgs, max_tokens=N, temperature=0)["choices"][0]["message"]["content"] \
        == model.chat(folded, max_new_tokens=N)


def test_seeded_sampling_is_reproducible(model):
    a = model.create_completion("hello", max_tokens=N, temperature=1.0, seed=5)["choices"][0]["text"]
    b = model.create_completion("hello", max_tokens=N, temperature=1.0, seed=5)["choices"][0]["text"]
    assert a == b == model.generate("hello", max_new_tokens=N, temperature=1.0, seed=5)


@pytest.mark.parametrize("kw,param", [
    (dict(n=0), "n"), (dict(temperature="hot"), "temperature"), (dict(temperature=-1), "temperature"),
    (dict(max_tokens=-1), "max_tokens"), (dict(top_p=2), "top_p"), (dict(stop=[1]), "stop"),
    (dict(logprobs=30), "logprobs"), (dict(presence_penalty=2.5), "presence_penalty"),
])
def test_bad_parameters(model, kw, param):
    with pytest.raises(InvalidRequestError) as e:
        model.create_completion("hello", **kw)
    assert e.value.param == param


def test_bad_messages_and_unknown_kwargs(model):
    with pytest.raises(InvalidRequestError):
        model.create_chat_completion([{"role": "tool", "content": "x"}])
    with pytest.raises(InvalidRequestError):
        model.create_chat_completion([])
    with pytest.raises(InvalidRequestError, match="unsupported parameter 'max_tokenz'") as e:
        model.create_completion("hello", max_tokenz=3)
    assert e.value.param == "max_tokenz"
    with pytest.raises(InvalidRequestError) as e:
        model.create_completion("hello " * model.max_seq_len)
    assert e.value.code == "context_length_exceeded"


# ---------------------------------------------------------------------------- the server
class Server:
    def __init__(self, model_path: str, log_path: str, *extra: str):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.dirname(os.path.dirname(gemma_cpp.__file__)) + os.pathsep + \
            env.get("PYTHONPATH", "")
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "gemma_cpp.cli", "serve", model_path, "--port", "0",
                                      "--log-level", "warning", *extra],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = self._wait_url(90)
        self.http = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 60
        while self.http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.1)

    def _wait_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                m = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", f.read())
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        with open(self.log_path) as f:
            pytest.fail(f"server did not start:\n{f.read()}")

    def client(self, **kw) -> "openai.OpenAI":
        kw.setdefault("api_key", "none")
        return openai.OpenAI(base_url=self.url + "/v1", timeout=60, max_retries=0, **kw)

    def wait_health(self, pred, timeout: float = 60) -> dict:
        """Poll /health until pred(health) holds (a hang guard, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while True:
            h = self.http.get("/health").json()
            if pred(h):
                return h
            assert time.monotonic() < deadline, f"/health never reached the expected state: {h}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    if not HAVE_SERVER:
        pytest.skip(f"server dependencies missing: {_MISSING}")
    s = Server(model_path, str(tmp_path_factory.mktemp("server") / "log.txt"), "--parallel", "2", "--threads", "1")
    yield s
    s.stop()
    assert s.proc.returncode is not None


@needs_server
def test_models_and_health(server, model_path):
    models = server.client().models.list()
    name = os.path.splitext(os.path.basename(model_path))[0]
    assert [m.id for m in models.data] == [name]
    h = server.http.get("/health").json()
    assert h["status"] == "ok" and h["slots_total"] == 2
    assert server.http.get(f"/v1/models/{name}").json()["id"] == name
    assert server.http.get("/v1/models/other").status_code == 404
    with open(server.log_path) as f:  # the tiny model is a base model: one warning line at start
        assert sum("warning" in line and "base (pretrained)" in line for line in f) == 1


@needs_server
def test_chat(server, model):
    msgs = [{"role": "user", "content": "what is the cache"}]
    c = server.client()
    r = c.chat.completions.create(model="x", messages=msgs, max_tokens=N, temperature=0)
    expected = model.chat(msgs, max_new_tokens=N)
    assert r.choices[0].message.content == expected
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(model.tokenize(model.apply_chat_template(msgs), add_bos=False))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # max_completion_tokens is max_tokens' newer name
    r2 = c.chat.completions.create(model="x", messages=msgs, max_completion_tokens=2, temperature=0)
    assert r2.usage.completion_tokens <= 2 and expected.startswith(r2.choices[0].message.content)


@needs_server
def test_chat_stream(server, model):
    msgs = [{"role": "user", "content": "hello there"}]
    expected = model.chat(msgs, max_new_tokens=N)
    stream = server.client().chat.completions.create(model="x", messages=msgs, max_tokens=N, temperature=0,
                                                     stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == expected
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    assert len({ch.id for ch in chunks}) == 1
    # the raw stream ends with [DONE]
    raw = server.http.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 2, "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [e for e in raw.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


@needs_server
def test_completions(server, model):
    c = server.client()
    expected = model.generate("gemma is a small", max_new_tokens=N)
    r = c.completions.create(model="x", prompt="gemma is a small", max_tokens=N, temperature=0)
    assert r.choices[0].text == expected
    assert r.object == "text_completion"
    s = c.completions.create(model="x", prompt="gemma is a small", max_tokens=N, temperature=0, stream=True)
    assert "".join(ch.choices[0].text for ch in s) == expected
    stop = expected[len(expected) // 2:len(expected) // 2 + 2]
    r = c.completions.create(model="x", prompt="gemma is a small", max_tokens=N, temperature=0, stop=[stop])
    assert r.choices[0].text == expected[:expected.index(stop)] and r.choices[0].finish_reason == "stop"
    r = c.completions.create(model="x", prompt="gemma is a small", max_tokens=N, temperature=0.8, top_p=0.9,
                             seed=3)
    assert r.choices[0].text == model.generate("gemma is a small", max_new_tokens=N, temperature=0.8, top_p=0.9,
                                               seed=3)


@needs_server
def test_sixteen_concurrent_streams(server):
    c = server.client()
    prompts = [f"the {w} is {i}" for i, w in enumerate(["water", "model", "cache", "token"] * 4)]
    expected = {p: c.completions.create(model="x", prompt=p, max_tokens=12, temperature=0).choices[0].text
                for p in prompts}
    assert len(set(expected.values())) >= 8, "prompts must give distinct answers for this test to mean anything"
    got: dict[str, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(prompts))
    before = server.http.get("/health").json()

    def worker(p: str) -> None:
        try:
            barrier.wait(timeout=60)
            s = c.completions.create(model="x", prompt=p, max_tokens=12, temperature=0, stream=True)
            got[p] = "".join(ch.choices[0].text for ch in s)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a streaming client hung"
    assert not errors, errors
    assert got == expected
    # Continuous batching: concurrent requests shared decode steps (more tokens than steps).
    after = server.http.get("/health").json()
    steps, tokens = (after[k] - before[k] for k in ("decode_steps", "decode_tokens"))
    assert tokens > steps > 0


@needs_server
def test_client_disconnect_frees_the_slot(server):
    c = server.client()
    before = server.http.get("/health").json()
    stream = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hello"}], max_tokens=480,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True})
    it = iter(stream)
    for _ in range(3):
        next(it)
    stream.close()  # the client goes away mid-stream
    h = server.wait_health(lambda h: h["requests_cancelled"] > before["requests_cancelled"]
                           and h["slots_idle"] == h["slots_total"])
    assert h["requests_waiting"] == 0
    r = c.completions.create(model="x", prompt="hello", max_tokens=4, temperature=0)
    assert r.usage.completion_tokens >= 1


@needs_server
def test_errors_are_openai_shaped(server):
    http = server.http

    def check(resp, status, param=None):
        assert resp.status_code == status, resp.text
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["message"]
        if param:
            assert err["param"] == param
        return err

    check(http.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}),
          400)
    check(http.post("/v1/completions", content=b"[1, 2]"), 400)
    check(http.post("/v1/completions", json={"prompt": "hi", "n": 129}), 400, "n")
    check(http.post("/v1/completions", json={"prompt": "hi", "max_tokens": "many"}), 400, "max_tokens")
    check(http.post("/v1/completions", json={"max_tokens": 3}), 400, "prompt")
    check(http.post("/v1/chat/completions", json={"messages": [{"role": "tool", "content": "x"}]}), 400,
          "messages[0].role")
    check(http.post("/v1/chat/completions", json={"messages": "hi"}), 400, "messages")
    err = check(http.post("/v1/completions", json={"prompt": "hello " * 600, "max_tokens": 2}), 400)
    assert err["code"] == "context_length_exceeded"
    check(http.get("/v1/nothing"), 404)
    check(http.post("/v2/chat"), 404)
    with pytest.raises(openai.BadRequestError):
        server.client().chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], n=200)
    # the server still answers afterwards
    assert http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


@needs_server
def test_api_key(model_path, tmp_path):
    s = Server(model_path, str(tmp_path / "log.txt"), "--api-key", "sekrit", "--threads", "1")
    try:
        r = s.http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert s.http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").models.list()
        assert s.client(api_key="sekrit").completions.create(model="x", prompt="hi", max_tokens=2).choices
        assert s.http.get("/health").status_code == 200  # health checks need no key
    finally:
        s.stop()


@needs_server
def test_hostile_requests_keep_the_connection(model_path, tmp_path):
    """Issue 15: body size and JSON depth limits, huge integers, lone surrogates, an exception
    inside generation (a model whose logits are NaN) -- each a JSON error with the right status,
    on a keep-alive connection that still serves the next request; HEAD where GET exists."""
    import http.client

    from gemma_cpp.openai.guard import DEFAULT_MAX_REQUEST_BYTES
    from test_hostile import nan_model

    assert DEFAULT_MAX_REQUEST_BYTES == 8 << 20
    s = Server(nan_model(model_path, tmp_path), str(tmp_path / "log.txt"), "--threads", "1",
               "--max-request-bytes", "65536")
    try:
        host, port = s.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)

        def call(method, path, body=None, headers=None):
            conn.request(method, path, body=body, headers=headers or {"content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            return r, data

        def check(resp_data, status, param=None, kept=True):
            r, data = resp_data
            assert r.status == status, data
            err = json.loads(data)["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"]
            if param:
                assert err["param"] == param, err
            if kept:  # the same socket serves the next request
                sock = conn.sock
                assert sock is not None and r.getheader("connection") != "close"
                h, _ = call("GET", "/health")
                assert h.status == 200 and conn.sock is sock
            return err

        check(call("POST", "/v1/completions", b"[" * 30000 + b"]" * 30000), 400)
        err = check(call("POST", "/v1/completions", json.dumps({"prompt": "hi", "x": _nest(100)}).encode()), 400)
        assert "64 deep" in err["message"]
        check(call("POST", "/v1/completions", json.dumps({"prompt": "hi", "top_k": 2**40}).encode()), 400, "top_k")
        check(call("POST", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 2**40}).encode()), 400,
              "max_tokens")
        check(call("POST", "/v1/completions", json.dumps({"prompt": "hi", "seed": 2**70}).encode()), 400, "seed")
        check(call("POST", "/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 2}'), 400, "prompt")
        check(call("POST", "/v1/chat/completions",
                   b'{"messages": [{"role": "user", "content": "\\udfff"}], "max_tokens": 2}'), 400, "messages")
        err = check(call("POST", "/v1/completions", json.dumps({"prompt": "hi", "max_tokens": 2}).encode()), 500)
        assert err["type"] == "server_error" and "non-finite logits" in err["message"]
        r, data = call("HEAD", "/health")
        assert r.status == 200 and data == b""
        assert call("HEAD", "/v1/models")[0].status == 200
        # A body past the limit: 413 whether its length is declared or it comes in chunks.
        big = json.dumps({"prompt": "x" * 70000}).encode()
        check(call("POST", "/v1/completions", big), 413, kept=False)
        conn.close()
        r = s.http.post("/v1/completions", content=(big[i:i + 8192] for i in range(0, len(big), 8192)),
                        headers={"content-type": "application/json"})
        assert r.status_code == 413 and "65536 bytes" in r.json()["error"]["message"]
        assert s.http.get("/health").status_code == 200
    finally:
        s.stop()


def _nest(depth: int):
    v: list = []
    for _ in range(depth - 1):
        v = [v]
    return v


@needs_server
def test_guard_answers_unexpected_exceptions(model):
    """An exception no route handles becomes a JSON 500 answered by the Guard, not re-raised
    (Starlette's handler re-raised it, and the server then dropped the keep-alive connection)."""
    from fastapi.testclient import TestClient

    from gemma_cpp.openai.guard import JSONBodyError, parse_json
    from gemma_cpp.openai.server import create_app

    app = create_app(model, max_request_bytes=1000)

    @app.get("/boom")
    async def boom():
        raise KeyError("surprise")

    with TestClient(app, raise_server_exceptions=True) as c:  # a re-raised exception would fail here
        r = c.get("/boom")
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "KeyError" in r.json()["error"]["message"]
        assert c.post("/v1/completions", content=b"x" * 1001).status_code == 413
        assert c.head("/health").status_code == 200
    for raw in (b"[" * 65 + b"]" * 65, b'{"a": ' * 70 + b"1" + b"}" * 70, b"[" * 5000 + b"]" * 5000):
        with pytest.raises(JSONBodyError, match="64 deep"):
            parse_json(raw)
    assert parse_json(b"[" * 64 + b"]" * 64) and parse_json(b"null") is None
