"""Fuzz targets for the readers of untrusted files (docs/security.md, issue 15).

Each target takes the bytes of one file and feeds them to a reader. The reader may refuse them
only with the project's own error (the ACCEPTED classes); any other exception, a hang (the
runner's per-input timeout) or a memory blow-up (its RSS limit) is a finding.

- gguf:        GGUF file -> read_source + every tensor's values -> .gcpp written -> Model() loads it
               (a file the converter accepts must load: the converter checks what the loader checks)
- safetensors: one .safetensors file -> its header and every tensor's data
- gcpp:        .gcpp file -> Model() (Python reader, C++ loader, tokenizer) -> one forward pass
- config:      config.json text -> the converter's config normalisation and the loader's rules

Used by tests/fuzz/run.py (atheris, or a seeded mutation loop) and tests/test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

_DIR = tempfile.mkdtemp(prefix="gemma-fuzz-")


def _file(data: bytes, name: str) -> str:
    path = os.path.join(_DIR, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def gguf_target(data: bytes) -> None:
    from gemma_cpp import FormatError, Model
    from gemma_cpp.convert import read_source
    from gemma_cpp.convert.gguf_file import GGUFError
    from gemma_cpp.convert.gguf_reader import GGUFConvertError
    from gemma_cpp.gcpp_format import write

    path = _file(data, "in.gguf")
    try:
        source = read_source(path, dtype="source")
        for t in source.tensors:
            (t.raw or t.load)()
    except (GGUFConvertError, GGUFError):
        return
    out = os.path.join(_DIR, "out.gcpp")
    write(source, out, progress=False, n_threads=1)
    try:
        Model(out, n_threads=1)
    except FormatError as e:
        raise AssertionError(f"the converter accepted a GGUF file whose .gcpp does not load: {e}") from None


def safetensors_target(data: bytes) -> None:
    import numpy as np

    from gemma_cpp.convert.safetensors_reader import _DTYPES, SafetensorsError, SafetensorsFile

    try:
        st = SafetensorsFile(_file(data, "in.safetensors"))
        for name in st.keys():
            if st.entries[name]["dtype"] in _DTYPES:
                np.asarray(st.get(name), dtype=np.float32).sum()
    except SafetensorsError:
        return


def gcpp_target(data: bytes) -> None:
    from gemma_cpp import FormatError, Model

    try:
        m = Model(_file(data, "in.gcpp"), n_threads=1, max_seq_len=8)
    except FormatError:
        return
    try:
        m.logits([m.metadata["special"]["bos"]])
    except RuntimeError as e:
        if "non-finite" not in str(e):  # NaN/Inf weights are found at run time, by design
            raise


def config_target(data: bytes) -> None:
    from gemma_cpp.convert import config as cfgmod

    try:
        hf = json.loads(data)
    except (ValueError, RecursionError):  # not JSON: json's business, not ours
        return
    try:
        cfg = cfgmod.normalize(hf)
        cfgmod.tensor_plan(cfg)
    except cfgmod.ConfigError:
        return


TARGETS: dict[str, Callable[[bytes], None]] = {
    "gguf": gguf_target, "safetensors": safetensors_target, "gcpp": gcpp_target, "config": config_target,
}
