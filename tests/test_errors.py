"""Bad input gets a clear exception naming the problem — never a crash, a hang or garbage."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from gemma_cpp import ContextLengthError, FormatError, Model
from gemma_cpp.convert import convert


@pytest.fixture(scope="module")
def good(make_gcpp):
    return make_gcpp("g1_mqa")


@pytest.fixture(scope="module")
def model(good):
    return Model(good)


def _copy_ckpt(make_ckpt, tmp_path) -> str:
    src = make_ckpt("g1_mqa")
    dst = tmp_path / "ckpt"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.gcpp"))
    return str(dst)


def _rewrite_safetensors(path: str, edit) -> None:
    """Load, edit (dict name -> np.ndarray) and save a float32 safetensors file."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


# ---------------------------------------------------------------- converter
def test_unknown_model_type(make_ckpt, tmp_path):
    d = _copy_ckpt(make_ckpt, tmp_path)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["model_type"] = "llama"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ValueError, match="unsupported model_type 'llama'"):
        convert(d, str(tmp_path / "x.gcpp"), progress=False)


def test_missing_tensor(make_ckpt, tmp_path):
    d = _copy_ckpt(make_ckpt, tmp_path)
    _rewrite_safetensors(os.path.join(d, "model.safetensors"),
                         lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor.*model\.layers\.1\.mlp\.up_proj\.weight"):
        convert(d, str(tmp_path / "x.gcpp"), progress=False)
    assert not os.path.exists(tmp_path / "x.gcpp")


def test_extra_tensor(make_ckpt, tmp_path):
    d = _copy_ckpt(make_ckpt, tmp_path)
    _rewrite_safetensors(os.path.join(d, "model.safetensors"),
                         lambda t: t.update({"model.layers.0.mystery.weight": np.zeros((2, 2), np.float32)}))
    with pytest.raises(ValueError, match=r"unexpected tensor 'model\.layers\.0\.mystery\.weight'"):
        convert(d, str(tmp_path / "x.gcpp"), progress=False)


def test_shape_mismatch(make_ckpt, tmp_path):
    d = _copy_ckpt(make_ckpt, tmp_path)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["intermediate_size"] = 96
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(ValueError, match=r"gate_proj.*shape \[160, 80\].*\[96, 80\]"):
        convert(d, str(tmp_path / "x.gcpp"), progress=False)


def test_missing_tokenizer(make_ckpt, tmp_path):
    d = _copy_ckpt(make_ckpt, tmp_path)
    os.remove(os.path.join(d, "tokenizer.model"))
    with pytest.raises(ValueError, match="tokenizer.model"):
        convert(d, str(tmp_path / "x.gcpp"), progress=False)


def test_convert_cli_errors(tmp_path):
    run = [sys.executable, "-m", "gemma_cpp.convert.cli"]
    r = subprocess.run(run + [str(tmp_path / "nope"), str(tmp_path / "o.gcpp")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr
    (tmp_path / "empty").mkdir()
    r = subprocess.run(run + [str(tmp_path / "empty"), str(tmp_path / "o.gcpp")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "config.json is missing" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(run + ["a", "b", "--dtype", "int3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr


# ---------------------------------------------------------------- model files
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gcpp"):
        Model(str(tmp_path / "nope.gcpp"))


@pytest.mark.parametrize("content,match", [
    (b"", "bad magic"),
    (b"GGUF\x03\x00\x00\x00" + bytes(64), "GGUF file"),
    (os.urandom(4096), "bad magic"),
    (b"GEMMACPP" + struct.pack("<IIQQ", 99, 0, 10, 64), "format version 99"),
    (b"GEMMACPP" + struct.pack("<IIQQ", 1, 0, 1 << 40, 64), "header length"),
])
def test_foreign_files(tmp_path, content, match):
    p = tmp_path / "bad.gcpp"
    p.write_bytes(content)
    with pytest.raises(FormatError, match=match):
        Model(str(p))


def test_truncated_file(good, tmp_path):
    size = os.path.getsize(good)
    for keep in (40, size // 3, size - 100):
        p = tmp_path / f"trunc{keep}.gcpp"
        with open(good, "rb") as f:
            p.write_bytes(f.read(keep))
        with pytest.raises(FormatError, match="truncated|past the end|exceeds the file size"):
            Model(str(p))


def _edit_header(src: str, dst: str, edit, tail: bytes = b"") -> None:
    """Copy `src` to `dst` with edit(meta) applied to its header (and `tail` appended to the data:
    edit(meta) finds the data region's size in meta["_data_bytes"], to point a tensor there)."""
    with open(src, "rb") as f:
        data = f.read()
    magic, ver, flags, hlen, start = struct.unpack_from("<8sIIQQ", data)
    meta = json.loads(data[32:32 + hlen])
    meta["_data_bytes"] = len(data) - start
    edit(meta)
    del meta["_data_bytes"]
    header = json.dumps(meta, separators=(",", ":")).encode()
    new_start = (32 + len(header) + 63) // 64 * 64  # tensor offsets are relative to data_start
    out = struct.pack("<8sIIQQ", magic, ver, flags, len(header), new_start) + header
    out += b"\0" * (new_start - len(out)) + data[start:] + tail
    with open(dst, "wb") as f:
        f.write(out)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["tensors"][3].update(offset=1 << 40), "past the end of the file"),
    (lambda m: m["tensors"][3].update(offset=m["tensors"][3]["offset"] + 4), "not 64-byte aligned"),
    (lambda m: m["tensors"][3].update(shape=[7, 7]), r"has \d+ bytes, expected|config requires"),
    (lambda m: m["tensors"].pop(3), "missing tensor"),
    (lambda m: m["tensors"].append(dict(m["tensors"][1], name="layers.0.bogus")), "overlap"),
    (lambda m: m["config"].update(n_kv_heads=3), "n_kv_heads"),
    (lambda m: m["config"].pop("head_dim"), "missing field 'head_dim'"),
    (lambda m: m["tensors"][3].update(dtype="int3"), "unknown dtype 'int3'"),
])
def test_corrupt_header(good, tmp_path, edit, match):
    p = str(tmp_path / "edited.gcpp")
    _edit_header(good, p, edit)
    with pytest.raises(FormatError, match=match):
        Model(p)


def test_unexpected_tensor(good, tmp_path):
    def add(m):  # a tensor of its own bytes, past the others
        m["tensors"].append(dict(m["tensors"][1], name="layers.0.bogus", offset=m["_data_bytes"]))
    p = str(tmp_path / "extra.gcpp")
    _edit_header(good, p, add, tail=bytes(4096))
    with pytest.raises(FormatError, match="unexpected tensor 'layers.0.bogus'"):
        Model(p)


def test_garbled_header_json(good, tmp_path):
    data = bytearray(open(good, "rb").read())
    data[40:48] = b"\xff\xfe{{{{{{"
    p = tmp_path / "garbled.gcpp"
    p.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="header is not valid JSON"):
        Model(str(p))


# ---------------------------------------------------------------- generation inputs
def test_prompt_past_context(good):
    m = Model(good, max_seq_len=16)
    with pytest.raises(ContextLengthError, match="20 tokens, more than max_seq_len=16"):
        m.generate([2] + [5] * 19)
    with pytest.raises(ContextLengthError):
        m.logits([5] * 17)
    # Generation that reaches the end of the context stops there instead of failing.
    out = m.generate([2] + [5] * 9, max_new_tokens=50, ignore_eos=True)
    assert len(out) == 16 - 10 + 1


def test_max_seq_len_validation(good):
    with pytest.raises(ValueError, match=r"max_seq_len must be an int in \[1, 512\]"):
        Model(good, max_seq_len=100000)
    with pytest.raises(ValueError, match="n_threads"):
        Model(good, n_threads=0)


def test_n_threads_bounded_and_unchanged_on_error(good):
    m = Model(good, n_threads=2)
    for bad in (2**31 - 1, 2**40, 0, True, 1.5):
        with pytest.raises(ValueError, match=r"n_threads must be (in \[1, 1024\]|an integer)"):
            m.n_threads = bad
        assert m.n_threads == 2
    m.n_threads = 1
    assert m.n_threads == 1 and len(m.generate([2, 5, 6], max_new_tokens=3, ignore_eos=True)) == 3


@pytest.mark.parametrize("kw,exc,match", [
    (dict(temperature=-1), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.5), ValueError, "top_p"),
    (dict(top_k=-1), ValueError, "top_k"),
    (dict(top_k=2.5), TypeError, "top_k"),
    (dict(min_p=1.0), ValueError, "min_p"),
    (dict(repetition_penalty=0), ValueError, "repetition_penalty"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(stop=[1, 2]), TypeError, "stop"),
])
def test_invalid_sampling(model, kw, exc, match):
    with pytest.raises(exc, match=match):
        model.generate("hello", **kw)


def test_bad_token_ids(model):
    with pytest.raises(ValueError, match=r"token id 9999 at index 1 is outside the vocabulary \[0, 512\)"):
        model.generate([2, 9999])
    with pytest.raises(ValueError, match="token id -1"):
        model.logits([-1])
    with pytest.raises(TypeError, match="ints"):
        model.logits([2, "a"])
    with pytest.raises(ValueError, match="empty"):
        model.generate([])
