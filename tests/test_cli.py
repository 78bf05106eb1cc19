"""The `gemma-cpp` command line, run as `python -m gemma_cpp.cli` in a subprocess on tiny models."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env

import gemma_cpp
from gemma_cpp import Model

N = 8  # tokens to generate: small keeps the tests fast
TEXT = ("the water boils at a temperature of one hundred degrees celsius and the model is small and fast "
        "on the cpu with a cache of tokens in memory for each thread ") * 12


@pytest.fixture(scope="module")
def model_path(make_gcpp):
    return make_gcpp("g1_mqa")


@pytest.fixture(scope="module")
def model(model_path):
    return Model(model_path, n_threads=1)  # references on one thread: fast on busy shared cores


def cli(*args, input: str | None = None, tmp_cache: str | None = None, timeout: float = 120):
    env = subprocess_env()
    env.pop("GEMMA_CPP_DEBUG", None)
    if tmp_cache:
        env["GEMMA_CPP_CACHE"] = tmp_cache
    return subprocess.run([sys.executable, "-m", "gemma_cpp.cli", *map(str, args)], input=input,
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout, env=env,
                          stdin=None if input is not None else subprocess.DEVNULL)


def _line(a: str) -> str:
    """How the CLI prints a streamed answer: the text, ending in one newline (nothing if empty)."""
    return a if (a == "" or a.endswith("\n")) else a + "\n"


# ---------------------------------------------------------------------------- help and usage
@pytest.mark.parametrize("cmd", ["run", "chat", "perplexity", "bench", "info", "serve"])
def test_help(cmd):
    r = cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert f"gemma-cpp {cmd}" in r.stdout


def test_top_level_help_and_version():
    r = cli("--help")
    assert r.returncode == 0 and "perplexity" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and gemma_cpp.__version__ in r.stdout
    r = cli()
    assert r.returncode == 2


@pytest.mark.parametrize("args,needle", [
    (["-n", "-3"], "--max-new-tokens"),
    (["--temperature", "hot"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"),
    (["--threads", "0"], "--threads"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_arguments_exit_2(model_path, args, needle):
    r = cli("run", model_path, "hello", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "error" in lines[0]
    assert r.stdout == ""


def test_model_without_prompt_is_a_usage_error(model_path):
    r = cli("run", model_path)
    assert r.returncode == 2
    assert "PROMPT" in r.stderr


def test_missing_model_file(tmp_path):
    missing = tmp_path / "nope.gcpp"
    for args in (["run", missing, "hello"], ["info", missing], ["chat", missing], ["perplexity", missing, missing]):
        r = cli(*args, input="")
        assert r.returncode == 1, (args, r.stderr)
        assert str(missing) in r.stderr
        assert "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "bad.gcpp"
    bad.write_bytes(b"this is not a model" * 10)
    r = cli("run", bad, "hello")
    assert r.returncode == 1
    assert "not a .gcpp model file" in r.stderr and "Traceback" not in r.stderr


def test_ctx_larger_than_model(model_path, model):
    r = cli("run", model_path, "hello", "--ctx", model.config.max_position + 1)
    assert r.returncode == 1
    assert "--ctx" in r.stderr and str(model.config.max_position) in r.stderr


# ---------------------------------------------------------------------------- run
def test_run_streams_the_greedy_continuation(model_path, model):
    expected = model.generate("hello world", max_new_tokens=N)
    r = cli("run", model_path, "hello world", "-n", N)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _line(expected)


def test_run_prompt_from_stdin(model_path, model):
    prompt = "the water boils at\n a temperature"
    expected = model.generate(prompt, max_new_tokens=N)
    r = cli("run", model_path, "-", "-n", N, input=prompt)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _line(expected)


def test_run_json(model_path, model):
    prompt = "gemma is a small model"
    r = cli("run", model_path, prompt, "-n", N, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["text"] == model.generate(prompt, max_new_tokens=N)
    assert out["prompt_tokens"] == len(model.tokenize(prompt))
    ids = model.generate(model.tokenize(prompt), max_new_tokens=N)
    assert out["completion_tokens"] == len(ids)
    assert out["finish_reason"] == ("length" if len(ids) == N else "stop")
    assert out["prefill_tokens_per_s"] > 0
    if out["completion_tokens"] > 1:
        assert out["decode_tokens_per_s"] > 0


def test_run_chat_and_sampling(model_path, model):
    msgs = [{"role": "user", "content": "what is the cache"}]
    r = cli("run", model_path, "what is the cache", "--chat", "-n", N)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _line(model.chat(msgs, max_new_tokens=N))
    kw = dict(temperature=0.9, top_k=20, top_p=0.9, min_p=0.01, repetition_penalty=1.1, seed=7)
    r = cli("run", model_path, "hello", "-n", N, "--temperature", 0.9, "--top-k", 20, "--top-p", 0.9,
            "--min-p", 0.01, "--repetition-penalty", 1.1, "--seed", 7)
    assert r.returncode == 0, r.stderr
    assert r.stdout == _line(model.generate("hello", max_new_tokens=N, **kw))


def test_run_stop_string(model_path, model):
    full = model.generate("hello world", max_new_tokens=N)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), "the continuation is too short to cut"
    r = cli("run", model_path, "hello world", "-n", N, "--stop", stop, "--json")
    out = json.loads(r.stdout)
    assert out["text"] == full[:full.index(stop)]
    assert out["finish_reason"] == "stop"


# ---------------------------------------------------------------------------- chat
def test_chat_piped_lines(model_path, model):
    turns = ["hello there", "what is the cache", "/reset", "tell me about gemma", "/exit", "never answered"]
    expected = []
    msgs: list[dict] = []
    for t in turns:
        if t == "/exit":
            break
        if t == "/reset":
            msgs = []
            continue
        msgs.append({"role": "user", "content": t})
        a = Model(model_path, n_threads=1).chat(msgs, max_new_tokens=N)  # fresh model: no cache reuse on the reference side
        msgs.append({"role": "assistant", "content": a})
        expected.append(a)
    r = cli("chat", model_path, "-n", N, input="\n".join(turns) + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(_line(a) for a in expected)
    assert ">" not in r.stdout.replace("".join(_line(a) for a in expected), "")


def test_chat_piped_with_system(model_path, model):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    from gemma_cpp.openai.protocol import render_chat

    ids = model.tokenize(render_chat(model, msgs), add_bos=False)
    expected = model.detokenize(model.generate(ids, max_new_tokens=N))
    r = cli("chat", model_path, "-n", N, "--system", "be brief", input="hello\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == _line(expected)


# ---------------------------------------------------------------------------- perplexity
def _reference_ppl(model, tokens, ctx, base=None):
    first = ctx // 2
    nll, kl, agree = [], [], []
    for i in range(len(tokens) // ctx):
        chunk = list(tokens[i * ctx:(i + 1) * ctx])
        chunk[0] = model.tokenizer.bos_id
        lg = model.logits(chunk).astype(np.float64)
        lp = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lg.max(-1, keepdims=True)
        for j in range(first, ctx - 1):
            nll.append(-lp[j, chunk[j + 1]])
        if base is not None:
            bg = base.logits(chunk).astype(np.float64)
            blp = bg - np.log(np.exp(bg - bg.max(-1, keepdims=True)).sum(-1, keepdims=True)) - bg.max(-1, keepdims=True)
            for j in range(first, ctx - 1):
                kl.append(float(np.sum(np.exp(blp[j]) * (blp[j] - lp[j]))))
                agree.append(int(np.argmax(blp[j]) == np.argmax(lp[j])))
    return math.exp(float(np.mean(nll))), len(nll), kl, agree


def test_perplexity_matches_logits(model_path, model, tmp_path):
    f = tmp_path / "text.txt"
    f.write_text(TEXT, encoding="utf-8")
    ctx = 64
    tokens = model.tokenize(TEXT, add_bos=True)
    assert len(tokens) >= 3 * ctx
    ppl, n, _, _ = _reference_ppl(model, tokens, ctx)
    r = cli("perplexity", model_path, f, "--ctx", ctx, "--json", "-q")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["chunks"] == len(tokens) // ctx
    assert out["scored_tokens"] == n == out["chunks"] * (ctx - 1 - ctx // 2)
    assert out["ppl"] == pytest.approx(ppl, rel=1e-6)
    assert out["ppl_error"] > 0
    # the human-readable form, with the progress bar on stderr
    r = cli("perplexity", model_path, f, "--ctx", ctx)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("PPL = ")][0]
    assert float(line.split()[2]) == pytest.approx(ppl, abs=1e-4)
    assert "+/-" in line
    assert "perplexity" in r.stderr  # tqdm's bar


def test_perplexity_kl_base(make_gcpp, model_path, model, tmp_path):
    f = tmp_path / "text.txt"
    f.write_text(TEXT, encoding="utf-8")
    quant = make_gcpp("g1_mqa", dtype="bf16")
    qm = Model(quant, n_threads=1)
    ctx = 64
    tokens = model.tokenize(TEXT, add_bos=True)
    ppl, n, kl, agree = _reference_ppl(qm, tokens, ctx, base=model)
    r = cli("perplexity", quant, f, "--ctx", ctx, "--kl-base", model_path, "--json", "-q", "--chunks", 2)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    m = 2 * (ctx - 1 - ctx // 2)
    assert out["scored_tokens"] == m
    assert out["mean_kld"] == pytest.approx(float(np.mean(kl[:m])), rel=1e-5, abs=1e-9)
    assert out["mean_kld"] > 0  # bf16 weights differ from f32
    assert out["top1_agreement"] == pytest.approx(float(np.mean(agree[:m])))
    assert "base_ppl" in out


def test_perplexity_text_too_short(model_path, tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("hello world", encoding="utf-8")
    r = cli("perplexity", model_path, f, "--ctx", 64)
    assert r.returncode == 1
    assert "tokens" in r.stderr and "--ctx" in r.stderr


# ---------------------------------------------------------------------------- info, bench
def test_info(model_path, model):
    r = cli("info", model_path, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["file_size"] == os.path.getsize(model_path)
    assert info["tensor_count"] == len(model.metadata["tensors"])
    assert info["config"]["n_layers"] == model.config.n_layers
    assert info["config"]["vocab_size"] == model.config.vocab_size
    assert set(info["weight_dtypes"]) == {t["dtype"] for t in model.metadata["tensors"]}
    assert info["tokenizer"]["special"]["bos"]["id"] == model.tokenizer.bos_id
    assert info["tokenizer"]["special"]["end_of_turn"]["piece"] == "<end_of_turn>"
    assert info["runtime"]["isa"] == gemma_cpp.system_info()["isa"]
    assert info["provenance"]["source_format"] == "huggingface"
    r = cli("info", model_path)
    assert r.returncode == 0, r.stderr
    assert "ISA" in r.stdout and "layers" in r.stdout and "<end_of_turn>" in r.stdout


def test_bench_json(model_path):
    r = cli("bench", model_path, "-p", "8", "-n", "4", "-t", "1", "-r", "1", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert isinstance(res, list) and res and all(isinstance(x, dict) for x in res)
    r = cli("bench", model_path, "-p", "8", "-n", "4", "-t", "1", "-r", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


def test_bench_bad_list(model_path):
    r = cli("bench", model_path, "-p", "8,x")
    assert r.returncode == 2
    assert "-p" in r.stderr
