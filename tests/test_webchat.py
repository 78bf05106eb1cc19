"""The chat page of `gemma-cpp serve` (gemma_cpp/openai/webchat.py, static/; docs/server.md), driven in
headless Chromium through selenium with Debian's chromium and chromium-driver.

- Against `gemma-cpp serve` on a tiny converted model (a subprocess on a loopback port, with an API key and
  one slot): the key prompt (a wrong key, then the right one), the base-model warning, a chat answer
  streamed piece by piece and equal to the model's greedy answer, Stop mid-stream (the server counts the
  request cancelled and its one slot is free: the next question is answered at once), "complete text"
  mode, and server errors shown in the page and recovered from without a reload.
  Deterministic timing: the server runs with each generated piece held back 25 ms (a wrapper around the
  real CLI that patches Generation.__next__), and the greedy answer is checked to run ~200 tokens unless
  stopped, so Stop always lands mid-stream by seconds; every wait below is a hang guard, not a race.
- Against a stub server that serves the unchanged page (webchat.add_routes) with a scripted stream: an
  answer holding <script> and an onerror attribute is shown as text and runs nothing; code fences
  become code blocks; a server that goes away and comes back.
Each browser test saves a screenshot in its tmp_path; the real server's is docs/images/webchat.png
(GEMMA_CPP_WEBCHAT_SCREENSHOT=docs/images/webchat.png copies it there).

Skips, with the reason, only where no browser or driver is installed (apt-get install chromium
chromium-driver; pip install selenium).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import subprocess_env

pytest.importorskip("fastapi", reason="the chat page needs the [server] extra (fastapi, uvicorn)")
httpx = pytest.importorskip("httpx", reason="needs httpx (the [test] extra)")
from fastapi import Request  # noqa: E402 - at module level: FastAPI resolves the stub's annotations here

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
CHROMEDRIVER = "/usr/bin/chromedriver"
KEY = "webchat-test-key"
PIECE_SECONDS = 0.025  # each generated piece held back this long by the test's server wrapper

# The real CLI with each generated piece held back PIECE_SECONDS: a stream slow enough to watch and stop.
PACED_CLI = """
import os, sys, time
from gemma_cpp import generation
_next = generation.Generation.__next__
def paced(self):
    piece = _next(self)
    time.sleep(float(os.environ["WEBCHAT_TEST_PIECE_SECONDS"]))
    return piece
generation.Generation.__next__ = paced
from gemma_cpp.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _no_browser() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium; it is in the [test] extra)"
    if CHROMIUM is None:
        return "no Chromium at /usr/bin/chromium (apt-get install chromium)"
    if not os.path.exists(CHROMEDRIVER):
        return f"no chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _no_browser()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,760",
              "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        opts.add_argument(a)
    # The driver's path given explicitly: selenium's own driver manager (which downloads) never runs.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


# ---------------------------------------------------------------------------- page helpers
def wait(driver, what, cond, timeout: float = 30):
    """Poll cond() until it is truthy (a hang guard: each condition below is met within a second)."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.02).until(lambda d: cond())
    except Exception as e:  # noqa: BLE001 - TimeoutException: say what we waited for, and what the page shows
        page = driver.execute_script("return document.body.innerText")
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{page[-3000:]}") from e


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def set_value(driver, element_id: str, value) -> None:
    js(driver, "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
               "e.dispatchEvent(new Event('change'));", element_id, str(value))


def set_mode(driver, mode: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "mode")).select_by_value(mode)


def type_and_send(driver, text: str, enter: bool = False) -> None:
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("id", "input")
    box.clear()
    box.send_keys(text)
    if enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element("id", "send").click()


ANSWER = """const boxes = document.querySelectorAll('#conversation .msg.assistant');
const b = boxes[boxes.length - 1];
return b ? {state: b.dataset.state, text: b.querySelector('.body').textContent,
            meta: b.querySelector('.meta').textContent, finish: b.querySelector('.meta').dataset.finish || null,
            count: boxes.length} : null;"""


def answer(driver) -> dict | None:
    return js(driver, ANSWER)


def wait_answer(driver, states=("done",), count: int | None = None, timeout: float = 30) -> dict:
    def ready():
        a = answer(driver)
        return a if a and a["state"] in states and (count is None or a["count"] == count) else None
    return wait(driver, f"an answer in state {states}", ready, timeout)


def errors(driver) -> list[str]:
    return js(driver, "return [...document.querySelectorAll('#conversation .msg.error .body')].map(e => e.textContent)")


def wait_error(driver, n: int) -> str:
    return wait(driver, f"error message #{n}", lambda: len(errors(driver)) >= n and errors(driver)[n - 1])


RECORD_LENGTHS = """window.__lengths = [];
new MutationObserver(() => {
  const bodies = document.querySelectorAll('#conversation .msg.assistant .body');
  if (!bodies.length) return;
  const n = bodies[bodies.length - 1].textContent.length, l = window.__lengths;
  if (n && n !== l[l.length - 1]) l.push(n);
}).observe(document.getElementById('conversation'), {childList: true, subtree: true, characterData: true});"""


# ---------------------------------------------------------------------------- the real server
class PacedServer:
    """`gemma-cpp serve` (the real CLI, each generated piece held back PIECE_SECONDS) in a subprocess."""

    def __init__(self, model_path: str, log_path: str, *extra: str):
        self.log_path = log_path
        self.log = open(log_path, "w")
        env = subprocess_env(WEBCHAT_TEST_PIECE_SECONDS=str(PIECE_SECONDS))
        self.proc = subprocess.Popen([sys.executable, "-c", PACED_CLI, "serve", model_path, "--port", "0",
                                      "--log-level", "warning", *extra],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 90
        self.url = None
        while self.url is None:
            with open(log_path) as f:
                m = re.search(r"chat page at (http://127\.0\.0\.1:\d+)/", f.read())
            if m:
                self.url = m.group(1)
            elif self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server did not start:\n{self.read_log()}")
            else:
                time.sleep(0.05)
        self.http = httpx.Client(base_url=self.url, timeout=30)
        while self.http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "server never became healthy"
            time.sleep(0.05)

    def read_log(self) -> str:
        with open(self.log_path) as f:
            return f.read()

    def health(self) -> dict:
        return self.http.get("/health").json()

    def wait_health(self, what: str, pred, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            h = self.health()
            if pred(h):
                return h
            assert time.monotonic() < deadline, f"/health never showed {what}: {h}"
            time.sleep(0.02)

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
def model_path(make_gcpp):
    return make_gcpp("g1_mqa")


@pytest.fixture(scope="module")
def model(model_path):
    from gemma_cpp import Model

    return Model(model_path, n_threads=1)


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    s = PacedServer(model_path, str(tmp_path_factory.mktemp("webchat") / "server.log"), "--api-key", KEY,
                    "--parallel", "1", "--threads", "1")
    yield s
    s.stop()


def greedy_chat(model, messages, n):
    r = model.create_chat_completion(messages, max_tokens=n, temperature=0)
    return r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"], r["usage"]["completion_tokens"]


def test_page_files_and_config(server, model_path):
    """/ and its files, served with a CSP, nothing from another host; the controls' bounds come from
    params.py through /webchat/config.json; /v1/models tells the context and the base-model flag."""
    from gemma_cpp import params
    from gemma_cpp.openai import webchat

    r = server.http.get("/")  # the page itself needs no key: it asks for one
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert server.http.head("/").status_code == 200
    for name, kind in (("chat.js", "text/javascript"), ("chat.css", "text/css")):
        f = server.http.get(f"/webchat/{name}")
        assert f.status_code == 200 and f.headers["content-type"].startswith(kind)
        assert f.content == webchat.asset(name)
    for text in (r.text, webchat.asset("chat.js").decode(), webchat.asset("chat.css").decode()):
        assert "http:" not in text and "https:" not in text and "url(" not in text
    assert all(not u.startswith(("/", "http")) for u in re.findall(r'(?:src|href)="([^"]*)"', r.text))
    assert server.http.get("/webchat/index.html").status_code == 404
    assert server.http.get("/webchat/server.py").status_code == 404
    cfg = server.http.get("/webchat/config.json").json()
    assert cfg["api_key_required"] is True
    t, m = cfg["params"]["temperature"], cfg["params"]["max_tokens"]
    assert (t["min"], t["max"], t["default"]) == (params.BOUNDS["temperature"].lo, None,
                                                  params.DEFAULT_OPENAI_TEMPERATURE)
    assert (m["min"], m["max"], m["integer"], m["default"]) == (0, params.INT32_MAX, True, params.DEFAULT_MAX_TOKENS)
    assert server.http.get("/v1/models").status_code == 401
    card = server.http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]
    assert card["id"] == os.path.splitext(os.path.basename(model_path))[0]
    assert card["meta"] == {"context_length": 512, "base_model": True}


def test_key_stream_stop_and_next_question(browser, server, model, tmp_path):
    d = browser
    d.get(server.url + "/")
    # The key: asked for, a wrong one refused in words, the right one kept in sessionStorage only.
    wait(d, "the key form", lambda: d.find_element("id", "key-form").is_displayed())
    d.find_element("id", "api-key").send_keys("not-the-key\n")
    msg = wait(d, "the refusal", lambda: d.find_element("id", "key-error").is_displayed()
               and d.find_element("id", "key-error").text)
    assert "refused this API key" in msg and "--api-key" in msg
    assert js(d, "return sessionStorage.getItem('gemma_cpp.api_key')") is None
    d.find_element("id", "api-key").send_keys(KEY + "\n")
    name = os.path.splitext(os.path.basename(model.path))[0]
    wait(d, "the model's name", lambda: d.find_element("id", "model").text.startswith(name))
    assert "context 512 tokens" in d.find_element("id", "model").text
    assert not d.find_element("id", "key-form").is_displayed()
    assert js(d, "return sessionStorage.getItem('gemma_cpp.api_key')") == KEY
    assert js(d, "return localStorage.length") == 0
    # A base model: the warning, and "complete text" mode chosen for it.
    assert "base (pretrained) model" in d.find_element("id", "warning").text
    assert js(d, "return document.getElementById('mode').value") == "complete"

    # A chat answer, greedy, that would run ~200+ tokens (~5 s at PIECE_SECONDS a piece) unless stopped.
    question = "hello there, what is the cache"
    msgs = [{"role": "user", "content": question}]
    full, _, n_full = greedy_chat(model, msgs, 480)
    assert n_full >= 200 and "```" not in full, "pick a question whose greedy answer is long and fence-free"
    set_mode(d, "chat")
    set_value(d, "temperature", 0)
    js(d, RECORD_LENGTHS)
    before = server.health()
    type_and_send(d, question, enter=True)
    lengths = wait(d, "four lengths of the growing answer", lambda: len(js(d, "return window.__lengths")) >= 4
                   and js(d, "return window.__lengths"))
    assert lengths == sorted(lengths), lengths
    shown = answer(d)
    assert shown["state"] == "streaming" and full.startswith(shown["text"]) and len(shown["text"]) < len(full)
    h = server.health()
    assert h["slots_idle"] == 0 and h["requests_total"] == before["requests_total"] + 1  # still generating
    d.find_element("id", "stop").click()
    stopped = wait_answer(d, ("stopped",))
    assert stopped["finish"] == "stopped" and "stopped by you" in stopped["meta"] and "tokens/s" in stopped["meta"]
    assert full.startswith(stopped["text"]) and len(stopped["text"]) < len(full)
    # The server ended that generation (counted as cancelled, not finished) and freed its one slot.
    h = server.wait_health("the request cancelled and the slot free",
                           lambda h: h["requests_cancelled"] == before["requests_cancelled"] + 1
                           and h["slots_idle"] == h["slots_total"] == 1)
    assert h["requests_waiting"] == 0
    assert not d.find_element("id", "stop").is_enabled() and d.find_element("id", "send").is_enabled()

    # The next question is answered at once, on the conversation so far (the stopped answer included).
    set_value(d, "max-tokens", 4)
    t0 = time.monotonic()
    type_and_send(d, "and then?")
    done = wait_answer(d, ("done",), count=2)
    assert time.monotonic() - t0 < 15
    history = msgs + [{"role": "assistant", "content": stopped["text"]}, {"role": "user", "content": "and then?"}]
    text, finish, n = greedy_chat(model, history, 4)
    assert done["text"] == text and done["finish"] == finish
    assert done["meta"].startswith(f"{n} token") and f"finish: {finish}" in done["meta"]
    assert server.health()["requests_cancelled"] == before["requests_cancelled"] + 1
    shot = tmp_path / "webchat-real-model.png"
    assert d.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("GEMMA_CPP_WEBCHAT_SCREENSHOT"):  # how docs/images/webchat.png was made
        shutil.copy(shot, os.environ["GEMMA_CPP_WEBCHAT_SCREENSHOT"])
    assert "Traceback" not in server.read_log()


def test_complete_text_and_errors_recover(browser, server, model):
    d = browser
    d.get(server.url + "/")  # the same tab: the key is still in sessionStorage
    wait(d, "the model's name", lambda: "context" in d.find_element("id", "model").text)
    assert not d.find_element("id", "key-form").is_displayed()
    js(d, "window.__samePage = true")  # gone if anything reloads the page
    assert js(d, "return document.getElementById('mode').value") == "complete"
    assert not d.find_element("id", "system").is_displayed()  # no system prompt for plain text
    set_value(d, "temperature", 0)
    set_value(d, "max-tokens", 12)
    type_and_send(d, "gemma is a small")
    done = wait_answer(d, ("done",))
    assert done["text"] == model.generate("gemma is a small", max_new_tokens=12)
    prompts = js(d, "return [...document.querySelectorAll('.msg.prompt .body')].map(e => e.textContent)")
    assert prompts == ["gemma is a small"]

    # A bad parameter: the server's 400, naming it, in the page; the text stays to send again.
    set_value(d, "max-tokens", -1)
    type_and_send(d, "the water")
    e = wait_error(d, 1)
    assert "400" in e and "max_tokens must be in [0, 2147483647], got -1" in e and "parameter: max_tokens" in e
    assert js(d, "return document.getElementById('input').value") == "the water"
    set_value(d, "max-tokens", 3)
    d.find_element("id", "send").click()
    assert wait_answer(d, ("done",), count=2)["text"] == model.generate("the water", max_new_tokens=3)

    # The context full: said so, with the way out (New chat), which works.
    set_mode(d, "chat")
    set_value(d, "input", "water " * 600)  # (typing it key by key would take seconds)
    d.find_element("id", "send").click()
    e = wait_error(d, 2)
    assert "maximum context length is 512 tokens" in e and "New chat" in e
    d.find_element("id", "new-chat").click()
    assert js(d, "return document.querySelectorAll('#conversation .msg').length") == 0
    type_and_send(d, "hello")
    assert wait_answer(d, ("done",), count=1)["text"] == greedy_chat(model, [{"role": "user", "content": "hello"}],
                                                                     3)[0]

    # A key that stops working: the page says so, asks again, and goes on with the right one.
    js(d, "sessionStorage.setItem('gemma_cpp.api_key', 'stale-key')")
    type_and_send(d, "more")
    e = wait_error(d, 1)  # New chat cleared the earlier errors
    assert "401" in e and "API key" in e
    wait(d, "the key form", lambda: d.find_element("id", "key-form").is_displayed())
    d.find_element("id", "api-key").send_keys(KEY + "\n")
    wait(d, "the key form to close", lambda: not d.find_element("id", "key-form").is_displayed())
    assert js(d, "return document.getElementById('input').value") == "more"
    d.find_element("id", "send").click()
    assert wait_answer(d, ("done",), count=2)["state"] == "done"
    assert js(d, "return window.__samePage") is True


# ---------------------------------------------------------------------------- the stub server
# The answer the stub streams: markup that must stay text, and a code block.
HOSTILE = ("Here is a page that says hello. The chat shows it as text, so nothing in it runs:\n"
           "```html\n<!doctype html>\n<script>window.__pwned = 'fenced script'</script>\n"
           "<p onclick=\"window.__pwned = 'click'\">Hello!</p>\n```\n"
           "Inline markup stays text too: <script>window.__pwned = 'script'</script> "
           "<img src=x onerror=\"window.__pwned = 'onerror'\">")


class StubServer:
    """The unchanged page (webchat.add_routes) beside scripted /v1 routes, in a thread of this process."""

    def __init__(self):
        from fastapi import FastAPI
        from fastapi.responses import StreamingResponse

        from gemma_cpp.openai import webchat

        self.requests: list[dict] = []
        app = FastAPI()
        webchat.add_routes(app, api_key_required=False)

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": "stub-gemma-it", "object": "model", "created": 0,
                                                "owned_by": "test", "meta": {"context_length": 2048,
                                                                             "base_model": False}}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append(body)
            return StreamingResponse(self._stream(body), media_type="text/event-stream")

        self.app = app
        self.port = 0

    @staticmethod
    async def _stream(body):
        def chunk(delta, finish=None):
            return {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub-gemma-it",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        def sse(obj):
            return f"data: {json.dumps(obj)}\n\n"

        yield sse(chunk({"role": "assistant", "content": ""}))
        last = body["messages"][-1]["content"]
        text = HOSTILE if "html" in last else "Half an answer, then"
        pieces = [text[i:i + 9] for i in range(0, len(text), 9)]
        for p in pieces:
            await asyncio.sleep(0.01)
            yield sse(chunk({"content": p}))
        if "fail" in last:  # the server's shape for an error after the headers went out
            yield sse({"error": {"message": "RuntimeError: the stub broke", "type": "server_error", "param": None,
                                 "code": None}})
        else:
            yield sse(chunk({}, "stop"))
            yield sse({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "stub",
                       "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": len(pieces),
                                                "total_tokens": 9 + len(pieces)}})
        yield "data: [DONE]\n\n"

    def start(self) -> str:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))  # the same port again after stop()
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self.uv = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.uv.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uv.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the stub server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.uv.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture
def stub():
    s = StubServer()
    s.url = s.start()
    yield s
    if s.thread.is_alive():
        s.stop()


def test_script_in_an_answer_is_text(browser, stub, tmp_path):
    d = browser
    d.get(stub.url + "/")
    wait(d, "the model's name", lambda: d.find_element("id", "model").text.startswith("stub-gemma-it"))
    assert not d.find_element("id", "warning").is_displayed()  # an instruction-tuned model: chat mode, no warning
    assert js(d, "return document.getElementById('mode').value") == "chat"
    assert not d.find_element("id", "key-form").is_displayed()
    js(d, "window.__samePage = true")
    set_value(d, "system", "Answer briefly.")
    set_value(d, "temperature", 0.7)
    set_value(d, "max-tokens", 200)
    type_and_send(d, "Show me a tiny html page that says hello.")
    done = wait_answer(d, ("done",))
    assert stub.requests[-1] == {"stream": True, "stream_options": {"include_usage": True}, "temperature": 0.7,
                                 "max_tokens": 200, "messages": [
                                     {"role": "system", "content": "Answer briefly."},
                                     {"role": "user", "content": "Show me a tiny html page that says hello."}]}
    assert js(d, "return window.__pwned") is None  # nothing ran
    conv = "#conversation"
    assert js(d, f"return document.querySelectorAll('{conv} script, {conv} img, {conv} p, {conv} [onerror], "
                 f"{conv} [onclick]').length") == 0
    # The text as the model sent it: the prose as text nodes, the fenced part as a code block.
    parts = js(d, """return [...document.querySelectorAll('#conversation .msg.assistant .body > *')].map(
        e => [e.tagName, e.dataset.lang || null, e.textContent])""")
    fence_open, fence_end = HOSTILE.index("```html\n"), HOSTILE.index("```\n")
    assert parts == [["SPAN", None, HOSTILE[:fence_open]],
                     ["PRE", "html", HOSTILE[fence_open + len("```html\n"):fence_end].rstrip("\n")],
                     ["SPAN", None, HOSTILE[fence_end + 4:]]]
    assert "<script>window.__pwned = 'script'</script>" in d.find_element("css selector", ".msg.assistant").text
    assert done["finish"] == "stop" and "finish: stop" in done["meta"] and "tokens/s" in done["meta"]
    shot = tmp_path / "webchat.png"
    assert d.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # An error inside the stream (after the headers): shown, the partial text kept, the next turn works.
    type_and_send(d, "this one will fail")
    assert "the stub broke" in wait_error(d, 1)
    assert answer(d)["state"] == "error" and answer(d)["text"] == "Half an answer, then"
    # The server gone: a clear message; back again: the same page goes on without a reload.
    stub.stop()
    type_and_send(d, "are you there?")
    e = wait_error(d, 2)
    assert "Cannot reach the server" in e and "still running" in e
    assert js(d, "return document.getElementById('input').value") == "are you there?"
    stub.start()
    d.find_element("id", "send").click()
    assert wait_answer(d, ("done",), count=3)["text"] == "Half an answer, then"
    assert [m["role"] for m in stub.requests[-1]["messages"]] == ["system", "user", "assistant", "user"]
    assert js(d, "return window.__samePage") is True
