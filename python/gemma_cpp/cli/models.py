"""MODEL arguments -> a loaded Model: a .gguf file is converted once into the cache directory
($GEMMA_CPP_CACHE, else ~/.cache/gemma_cpp), and no MODEL means the [demo] extra's model."""

from __future__ import annotations

import hashlib
import os
import sys

from ..gcpp_format import WRITER_REVISION
from ..params import DEFAULT_KV_DTYPE
from .common import PROG, CLIError

GGUF_DTYPE = "source"  # GGUF files converted on the fly keep their own blocks, exactly


def is_model_path(s: str) -> bool:
    return s.lower().endswith((".gcpp", ".gguf")) and os.path.isfile(s)


def cache_dir() -> str:
    base = os.environ.get("GEMMA_CPP_CACHE")
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gemma_cpp")
    return base


def resolve_model(path: str) -> str:
    """A .gcpp path for `path`; a .gguf file is converted once into the cache directory."""
    if not os.path.exists(path):
        raise CLIError(f"model file not found: {path}")
    if not (path.lower().endswith(".gguf") and os.path.isfile(path)):
        return path
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{GGUF_DTYPE}|"
                       f"{WRITER_REVISION}".encode()).hexdigest()
    stem = os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(cache_dir(), f"{stem}.{GGUF_DTYPE}-{key[:12]}.gcpp")
    if not os.path.exists(out):
        from ..convert import convert

        os.makedirs(os.path.dirname(out), exist_ok=True)
        print(f"{PROG}: converting {path} to {out} ({GGUF_DTYPE}; once)", file=sys.stderr)
        convert(path, out, dtype=GGUF_DTYPE, progress=sys.stderr.isatty())
    return out


def default_model() -> str:
    try:
        from ..demo import default_model_path
    except ImportError as e:
        raise CLIError(f"no MODEL given and the default model is not available ({e}); "
                       f"give a .gcpp or .gguf path") from None
    try:
        return default_model_path()
    except Exception as e:  # noqa: BLE001 - any failure preparing the demo model is reported as one line
        raise CLIError(f"no MODEL given and the default model could not be prepared: {e} "
                       f"(pip install 'gemma_cpp[demo]', or give a .gcpp or .gguf path)") from None


def open_model(path: str, args):
    """Model(path) with the runtime flags of `args` (threads, ctx, seed, kv_dtype, device; each optional)."""
    from ..gcpp_format import read_header
    from ..model import Model

    path = resolve_model(path)
    ctx = getattr(args, "ctx", None)
    if ctx is not None:
        model_ctx = int(read_header(path).config["max_position"])
        if ctx > model_ctx:
            raise CLIError(f"--ctx {ctx} exceeds the model's context length ({model_ctx} tokens)")
    return Model(path, n_threads=getattr(args, "threads", None), max_seq_len=getattr(args, "ctx", None),
                 seed=getattr(args, "seed", None), kv_dtype=getattr(args, "kv_dtype", None) or DEFAULT_KV_DTYPE,
                 device=getattr(args, "device", None) or "cpu")


def open_draft(args, model):
    """The --draft MODEL of `args` (None without one), with the threads and KV type of `model`."""
    from ..model import Model

    if getattr(args, "draft", None) is None:
        return None
    return Model(resolve_model(args.draft), n_threads=model.n_threads, kv_dtype=model.kv_dtype, device=model.device)
