"""Hostile inputs (issue 15, docs/security.md): corrupt or foreign model files, out-of-range
parameters and text, non-finite numbers. Each gets the project's own error, never a raw
TypeError/KeyError/RecursionError, a hang, undefined behaviour or silently wrong output."""

from __future__ import annotations

import json
import os
import struct
import threading

import numpy as np
import pytest

from gemma_cpp import FormatError, Model, _core
from gemma_cpp import params
from gemma_cpp.gcpp_format import read_header, tensor_table
from test_errors import _edit_header


@pytest.fixture(scope="module")
def good(make_gcpp):
    return make_gcpp("g1_mqa")


@pytest.fixture(scope="module")
def model(good):
    return Model(good, n_threads=1)


def _edited(good, tmp_path, edit, name="edited.gcpp") -> str:
    p = str(tmp_path / name)
    _edit_header(good, p, edit)
    return p


def _raw_header(good, tmp_path, header: bytes) -> str:
    """`good`'s fixed fields and data with `header` as its (raw) JSON."""
    data = open(good, "rb").read()
    magic, ver, flags, hlen, start = struct.unpack_from("<8sIIQQ", data)
    new_start = (32 + len(header) + 63) // 64 * 64
    out = struct.pack("<8sIIQQ", magic, ver, flags, len(header), new_start) + header
    out += b"\0" * (new_start - len(out)) + data[start:]
    p = tmp_path / "raw.gcpp"
    p.write_bytes(out)
    return str(p)


# ---------------------------------------------------------------- tensor and blob ranges
def _by_name(m, name):
    return next(t for t in m["tensors"] if t["name"] == name)


@pytest.mark.parametrize("edit,match", [
    # before the data region: would read header bytes as weights
    (lambda m: m["tensors"][3].update(offset=-64), "tensor .* offset -64 lies before the data region"),
    (lambda m: m["tokenizer"].update(offset=-128), "tokenizer offset -128 lies before the data region"),
    # overlapping another tensor, or the tokenizer blob (which starts the data region)
    (lambda m: m["tensors"][3].update(offset=m["tensors"][2]["offset"]), "overlap"),
    (lambda m: m["tensors"][3].update(offset=0), "the tokenizer and tensor .* overlap"),
    (lambda m: m["tokenizer"].update(offset=m["tensors"][0]["offset"]), "overlap"),
    (lambda m: m["tokenizer"].update(offset=4), "tokenizer offset 4 is not 64-byte aligned"),
    (lambda m: m["tokenizer"].update(nbytes=1 << 40), "tokenizer lies past the end of the file"),
])
def test_blob_ranges(good, tmp_path, edit, match):
    with pytest.raises(FormatError, match=match):
        Model(_edited(good, tmp_path, edit))


def test_cpp_loader_checks_ranges_itself(good):
    """The C++ loader does not rely on the Python reader: data start, alignment, overlaps."""
    h = read_header(good)
    table = list(tensor_table(h))
    cfg = dict(h.config)

    def core(rows, data_start=h.data_start):
        return _core.ModelCore(good, cfg, rows, data_start)

    core(table)  # the good table loads
    name, dtype, shape, off, n, layout = table[3]
    before = table[:3] + [(name, dtype, shape, h.data_start - 64, n, layout)] + table[4:]
    with pytest.raises(RuntimeError, match="lies before the data region"):
        core(before)
    overlap = table[:3] + [(name, dtype, shape, table[2][3], n, layout)] + table[4:]
    with pytest.raises(RuntimeError, match="overlap"):
        core(overlap)


def test_huge_shape_is_a_clear_error_not_overflow(good, tmp_path):
    """[1, 2^62] f32 rows would be 2^64 bytes: signed overflow (UB) before; now a named error."""
    p = _edited(good, tmp_path, lambda m: m["tensors"][3].update(shape=[1, 1 << 62]))
    with pytest.raises(FormatError, match="overflows 64 bits"):
        Model(p)
    p = _edited(good, tmp_path, lambda m: m["tensors"][3].update(shape=[(1 << 63) - 1, 64], dtype="int8",
                                                                  layout="rows16"), "rows16.gcpp")
    with pytest.raises(FormatError, match="overflows 64 bits"):
        Model(p)


@pytest.mark.parametrize("call", [
    lambda: _core.row_bytes("f32", 1 << 62),
    lambda: _core.row_bytes("int8", (1 << 63) - 1),
    lambda: _core.row_bytes("bf16", 1 << 62),
    lambda: _core.row_bytes("f32", -1),
    lambda: _core.tensor_bytes("int8", "rows16", (1 << 63) - 1, 32),
    lambda: _core.tensor_bytes("f32", "rows", 1 << 40, 1 << 30),
    lambda: _core.tensor_bytes("f32", "rows", -5, 32),
    lambda: _core.dequantize(np.zeros(0, np.uint8), "f32", 1 << 40, 1 << 30, "rows"),
])
def test_size_arithmetic_is_checked(call):
    with pytest.raises(ValueError, match="overflows 64 bits|negative"):
        call()
    assert _core.row_bytes("int8", 33) == 2 * 34 and _core.tensor_bytes("int4", "rows16", 17, 64) == 32 * 36


# ---------------------------------------------------------------- header structure
@pytest.mark.parametrize("edit,match", [
    (lambda m: m.update(config=[1, 2]), "header field 'config' must be a JSON object"),
    (lambda m: m.update(tensors={"a": 1}), "header field 'tensors' must be a JSON array"),
    (lambda m: m.update(special="x"), "header field 'special' must be a JSON object"),
    (lambda m: m["tokenizer"].pop("offset"), "tokenizer entry lacks 'offset'"),
    (lambda m: m["tokenizer"].update(nbytes="12"), "tokenizer field 'nbytes' must be an integer"),
    (lambda m: m["tensors"].__setitem__(0, "embed"), r"tensors\[0\] must be an object"),
    (lambda m: m["tensors"][0].pop("offset"), r"tensors\[0\] field 'offset' must be an integer, got None"),
    (lambda m: m["tensors"][0].update(offset=64.0), r"tensors\[0\] field 'offset' must be an integer"),
    (lambda m: m["tensors"][0].update(shape="[2, 3]"), r"tensors\[0\] field 'shape' must be a list"),
    (lambda m: m["tensors"][0].update(shape=[2, "3"]), "field 'shape' must hold integers"),
    (lambda m: m["tensors"][0].update(shape=[True, 3]), "field 'shape' must hold integers"),
    (lambda m: m["tensors"][0].update(name=5), r"tensors\[0\] field 'name' must be a str"),
    (lambda m: m["tensors"][0].update(dtype=None), r"tensors\[0\] field 'dtype' must be a str"),
    (lambda m: m.update(chat_template=7), "'chat_template' must be a string"),
    (lambda m: m["config"].update(n_layers="2"), "config field 'n_layers' has the wrong type"),
    (lambda m: m["config"].update(n_layers=1 << 40), "config field 'n_layers' has the wrong type"),
])
def test_malformed_header_structure(good, tmp_path, edit, match):
    with pytest.raises(FormatError, match=match):
        Model(_edited(good, tmp_path, edit))


@pytest.mark.parametrize("header", [b"[" * 100000 + b"]" * 100000, b'{"config": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                    b"[1, 2]", b'"text"', b"null"],
                         ids=["deep-100000", "deep-config-5000", "list", "string", "null"])
def test_header_not_an_object_or_too_deep(good, tmp_path, header):
    with pytest.raises(FormatError, match="nested too deeply|must be a JSON object|must be a JSON"):
        Model(_raw_header(good, tmp_path, header))


@pytest.mark.parametrize("edit", [
    lambda m: m["special"].update(bos="x"), lambda m: m["special"].pop("bos"),
    lambda m: m["special"].update(eos=[10**7]), lambda m: m["tokenizer"].update(nbytes=64),
], ids=["bos-string", "bos-missing", "eos-out-of-vocab", "tokenizer-cut"])
def test_bad_tokenizer_or_special_ids(good, tmp_path, edit):
    with pytest.raises(FormatError, match="tokenizer or the special token ids are corrupt"):
        Model(_edited(good, tmp_path, edit))


# ---------------------------------------------------------------- only regular files
def _load_in_thread(fn, timeout=20):
    """fn() in a daemon thread: its exception, or a failure if it does not return (a hang)."""
    out = {}

    def run():
        try:
            fn()
            out["ok"] = True
        except BaseException as e:  # noqa: BLE001
            out["exc"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "loading hung"
    return out.get("exc")


def test_fifo_directory_and_device_are_refused(good, tmp_path):
    fifo = str(tmp_path / "model.gcpp")
    os.mkfifo(fifo)
    e = _load_in_thread(lambda: Model(fifo))
    assert isinstance(e, FormatError) and "not a regular file" in str(e), e
    h = read_header(good)  # the C++ loader refuses it too, without waiting for a writer
    e = _load_in_thread(lambda: _core.ModelCore(fifo, dict(h.config), list(tensor_table(h)), h.data_start))
    assert isinstance(e, RuntimeError) and "not a regular file" in str(e), e
    with pytest.raises(FormatError, match="is a directory"):
        Model(str(tmp_path))
    if os.path.exists("/dev/zero"):
        with pytest.raises(FormatError, match="not a regular file"):
            Model("/dev/zero")


# ---------------------------------------------------------------- config scalars
@pytest.mark.parametrize("field,value", [
    ("embed_scale", float("inf")), ("embed_scale", float("nan")), ("rms_eps", float("nan")),
    ("rms_eps", 5.0), ("query_scale", float("inf")), ("final_softcap", float("inf")),
    ("rope_theta_global", -10000.0), ("rope_theta_local", float("inf")), ("rope_scale_global", float("nan")),
    ("max_position", 1 << 28), ("max_position", (1 << 31) - 1), ("sliding_window", (1 << 31) - 1),
])
def test_non_finite_or_out_of_range_config(good, tmp_path, field, value):
    p = _edited(good, tmp_path, lambda m: m["config"].update({field: value}))
    with pytest.raises(FormatError, match=f"config field '{field}'"):
        Model(p)


# ---------------------------------------------------------------- API parameters and text
def test_n_threads_bound_is_the_cores(model):
    assert params.MAX_THREADS == _core.MAX_THREADS
    for bad in (2**31 - 1, 2**64, 0, -3):
        with pytest.raises(ValueError, match=r"n_threads must be in \[1, 1024\]"):
            model.n_threads = bad
        assert model.n_threads == 1
    with pytest.raises(ValueError, match="n_threads"):
        Model(model.path, n_threads=2**31 - 1)


@pytest.mark.parametrize("temperature", [1e-40, 1e-45, 1e-38, 1e-37, 1e-30])
def test_tiny_temperature_is_greedy(model, temperature):
    """1/T (or logit/T) overflowing float used to give NaN weights and 'the last token id'."""
    greedy = model.generate([2, 5, 6, 7], max_new_tokens=6, ignore_eos=True)
    out = model.generate([2, 5, 6, 7], max_new_tokens=6, ignore_eos=True, temperature=temperature, seed=1)
    assert out == greedy


@pytest.mark.parametrize("kw,name", [
    (dict(top_k=2**40), "top_k"), (dict(top_k=2**31), "top_k"), (dict(max_new_tokens=2**40), "max_new_tokens"),
    (dict(seed=2**64), "seed"), (dict(seed=2**200), "seed"), (dict(seed=-1), "seed"),
])
def test_huge_integers_get_params_errors(model, kw, name):
    with pytest.raises(params.InvalidRequestError, match=f"{name} must be in"):
        model.generate("hello", **kw)


def test_lone_surrogate_in_prompt(model):
    for call in (lambda: model.generate("hi \ud800 there", max_new_tokens=2),
                 lambda: model.tokenize("\udfff"),
                 lambda: model.chat([{"role": "user", "content": "x\ud83d"}], max_new_tokens=2)):
        with pytest.raises(ValueError, match="lone surrogate"):
            call()
    with pytest.raises(params.InvalidRequestError, match="lone surrogate") as e:
        model.create_completion("a\ud800", max_tokens=2)
    assert e.value.param == "prompt"


# ---------------------------------------------------------------- non-finite numbers at run time
def nan_model(good, tmp_path) -> str:
    """`good` with a NaN in its final norm: every logit becomes NaN."""
    data = bytearray(open(good, "rb").read())
    h = read_header(good)
    t = next(t for t in h.tensors if t["name"] == "final_norm")
    struct.pack_into("<f", data, h.data_start + t["offset"] + 4 * 3, float("nan"))
    p = tmp_path / "nan.gcpp"
    p.write_bytes(bytes(data))
    return str(p)


def test_non_finite_logits_raise(good, tmp_path):
    m = Model(nan_model(good, tmp_path), n_threads=1)  # loads: weights are not scanned at load
    for call in (lambda: m.generate([2, 5, 6], max_new_tokens=3),
                 lambda: m.generate([2, 5, 6], max_new_tokens=3, temperature=0.8, seed=1),
                 lambda: m.logits([2, 5])):
        with pytest.raises(RuntimeError, match=r"non-finite logits \(NaN .*position"):
            call()
    # Inf too (a huge norm gain overflows the logits), and a good model is unaffected
    data = bytearray(open(good, "rb").read())
    h = read_header(good)
    t = _by_name(h.meta, "final_norm")
    n = t["nbytes"] // 4
    struct.pack_into(f"<{n}f", data, h.data_start + t["offset"], *([3e38] * n))
    p = tmp_path / "inf.gcpp"
    p.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="non-finite logits"):
        Model(str(p), n_threads=1).generate([2, 5, 6], max_new_tokens=2)
    assert len(Model(good, n_threads=1).generate([2, 5, 6], max_new_tokens=3, ignore_eos=True)) == 3


def _poisoned(good, tmp_path, tensor: str, name: str) -> str:
    """`good` with one NaN in `tensor` (an f32 tensor)."""
    data = bytearray(open(good, "rb").read())
    h = read_header(good)
    t = _by_name(h.meta, tensor)
    assert t["dtype"] == "f32"
    struct.pack_into("<f", data, h.data_start + t["offset"] + 4 * 5, float("nan"))
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return str(p)


def test_check_layers_names_the_first_bad_layer(good, tmp_path, monkeypatch):
    """GEMMA_CPP_CHECK_LAYERS=1 checks the residual stream after every block and names the first
    that went non-finite; without it, the cheap logits check says how to find it."""
    down1 = _poisoned(good, tmp_path, "layers.1.down", "down1.gcpp")
    qkv0 = _poisoned(good, tmp_path, "layers.0.qkv", "qkv0.gcpp")
    with pytest.raises(RuntimeError, match="non-finite logits .*GEMMA_CPP_CHECK_LAYERS=1 names the first layer"):
        Model(down1, n_threads=1).generate([2, 5, 6], max_new_tokens=2)
    monkeypatch.setenv("GEMMA_CPP_CHECK_LAYERS", "1")
    with pytest.raises(RuntimeError, match=r"non-finite activations \(NaN\) first after layer 1's MLP block, "
                                           r"at position 0, channel \d+"):
        Model(down1, n_threads=1).generate([2, 5, 6], max_new_tokens=2)
    with pytest.raises(RuntimeError, match="first after layer 0's attention block"):
        Model(qkv0, n_threads=1).logits([2, 5, 6])
    # every layer finite, the final norm NaN: the logits check says where that leaves
    with pytest.raises(RuntimeError, match="every layer's output was finite: the final norm or the embedding"):
        Model(nan_model(good, tmp_path), n_threads=1).generate([2, 5], max_new_tokens=2)
    m = Model(good, n_threads=1)  # a good model runs the same with the checks on
    assert m.generate([2, 5, 6], max_new_tokens=3, ignore_eos=True) == \
        Model(good, n_threads=1).generate([2, 5, 6], max_new_tokens=3, ignore_eos=True)
    monkeypatch.setenv("GEMMA_CPP_CHECK_LAYERS", "0")
    with pytest.raises(RuntimeError, match="non-finite logits"):
        Model(down1, n_threads=1).generate([2, 5, 6], max_new_tokens=2)
