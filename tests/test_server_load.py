"""Load test (issue 15): 32 concurrent streaming clients on loopback against `gemma-cpp serve`
with 2 slots, a quarter of them dropping the connection mid-stream and a quarter right after the
response starts (often while still queued). Every request must complete with a whole stream or be
cancelled, within a bounded time, and afterwards no slot is leaked: all idle, none waiting, the
server's counters add up, and the next request is served."""

from __future__ import annotations

import json
import threading
import time

import pytest

from test_server import HAVE_SERVER, Server, model_path, needs_server  # noqa: F401  (fixture)

CLIENTS = 32


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):  # noqa: F811
    if not HAVE_SERVER:
        pytest.skip("server dependencies missing")
    s = Server(model_path, str(tmp_path_factory.mktemp("load") / "log.txt"), "--parallel", "2", "--threads", "1")
    yield s
    s.stop()


def _client(server, i: int, kind: str, results: dict, barrier: threading.Barrier) -> None:
    import httpx

    body = {"prompt": f"the water {i} is", "stream": True, "temperature": 0,
            # droppers ask for long generations, so they are surely still running when they go
            "max_tokens": 8 if kind == "complete" else 400, "ignore_eos": kind != "complete"}
    try:
        barrier.wait(timeout=30)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200, r.read()
                events = []
                for line in r.iter_lines():
                    if not line.startswith("data: "):
                        continue
                    events.append(line[6:])
                    if kind == "drop-mid" and len(events) == 2:
                        break  # leaving the block closes the connection mid-stream
                    if kind == "drop-start":
                        break
        if kind == "complete":
            assert events[-1] == "[DONE]", events[-3:]
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length"), chunks[-1]
            assert not any("error" in c for c in chunks), chunks
        results[i] = kind
    except BaseException as e:  # noqa: BLE001
        results[i] = e


@needs_server
def test_32_streaming_clients_some_disconnecting(server):
    before = server.http.get("/health").json()
    kinds = ["complete", "complete", "drop-mid", "drop-start"] * (CLIENTS // 4)
    results: dict[int, object] = {}
    barrier = threading.Barrier(CLIENTS)
    threads = [threading.Thread(target=_client, args=(server, i, k, results, barrier), daemon=True)
               for i, k in enumerate(kinds)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, 60 - (time.monotonic() - t0)))
    assert not any(t.is_alive() for t in threads), "a client hung (not done within 60 s)"
    errors = {i: r for i, r in results.items() if isinstance(r, BaseException)}
    assert not errors, errors
    assert len(results) == CLIENTS
    # Every request finished or was cancelled; no slot is held, nobody waits.
    h = server.wait_health(lambda h: h["slots_idle"] == h["slots_total"] and h["requests_waiting"] == 0
                           and h["requests_total"] - before["requests_total"] == CLIENTS
                           and h["requests_cancelled"] - before["requests_cancelled"] >= kinds.count("drop-mid"),
                           timeout=30)
    cancelled = h["requests_cancelled"] - before["requests_cancelled"]
    assert cancelled <= kinds.count("drop-mid") + kinds.count("drop-start"), h  # completers are never cancelled
    r = server.http.post("/v1/completions", json={"prompt": "hello", "max_tokens": 3, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
