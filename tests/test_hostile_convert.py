"""Hostile checkpoints for the converter (issue 15, docs/security.md): GGUF files, safetensors
files and config.json / tokenizer.model files that are corrupt or crafted. Each gets the
converter's own error (GGUFConvertError / CheckpointError, both ValueErrors naming the file and
the key, field or tensor), never a raw ZeroDivisionError / RecursionError / MemoryError /
TypeError, and never a silent conversion of header bytes or overlapping data into weights."""

from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

gguf = pytest.importorskip("gguf")

from gemma_cpp.convert import read_source  # noqa: E402
from gemma_cpp.convert.gguf_file import GGUFFile  # noqa: E402
from gemma_cpp.convert.gguf_reader import GGUFConvertError  # noqa: E402
from gemma_cpp.convert.hf import CheckpointError  # noqa: E402
from test_gguf import WIDE, write_gguf_like_llamacpp  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(make_ckpt):
    return make_ckpt(dict(WIDE["g1w"]))


@pytest.fixture(scope="module")
def good_gguf(ckpt, tmp_path_factory):
    p = str(tmp_path_factory.mktemp("gguf") / "good.gguf")
    write_gguf_like_llamacpp(ckpt, p)
    return p


def _convert(src: str):
    """read_source and every tensor's load: what `gemma-convert` does before writing."""
    s = read_source(src, dtype="f32")
    for t in s.tensors:
        t.load()
    return s


def _fails(src: str, exc, match: str) -> None:
    with pytest.raises(exc, match=match) as e:
        _convert(src)
    assert type(e.value) is exc  # the converter's own class, not a ValueError from deeper down


# ---------------------------------------------------------------- GGUF metadata
@pytest.mark.parametrize("key,kind,value,match", [
    ("attention.head_count", "u32", 0, r"'gemma.attention.head_count' must be in \[1, 1024\], got 0"),
    ("block_count", "u32", 2**32 - 1, r"'gemma.block_count' must be in \[1, 4096\], got 4294967295"),
    ("embedding_length", "u32", 0, r"'gemma.embedding_length' must be in \[1, 65536\]"),
    ("context_length", "u32", 0, r"'max_position_embeddings' must be in \[1, 16777216\], got 0"),
    ("attention.layer_norm_rms_epsilon", "f32", float("nan"), r"config field 'rms_eps': must be a finite"),
    ("rope.freq_base", "f32", -10000.0, r"config field 'rope_theta_global': must be a finite number > 0"),
    ("rope.freq_base", "f32", float("inf"), r"config field 'rope_theta_global'"),
    ("attention.head_count", "str", "eight", r"gemma.attention.head_count must be an integer, got 'eight'"),
    ("attention.layer_norm_rms_epsilon", "str", "tiny", r"layer_norm_rms_epsilon must be a number"),
], ids=["heads-0", "layers-2^32-1", "width-0", "context-0", "rms-nan", "rope-negative", "rope-inf",
        "heads-string", "eps-string"])
def test_gguf_bad_metadata(ckpt, tmp_path, key, kind, value, match):
    p = str(tmp_path / "bad.gguf")
    write_gguf_like_llamacpp(ckpt, p, extra_keys={f"gemma.{key}": (kind, value)})
    _fails(p, GGUFConvertError, match)


def _tensor_offset_field(data: bytes, name: str) -> int:
    """Byte position of tensor `name`'s offset field in a GGUF tensor table."""
    key = struct.pack("<Q", len(name)) + name.encode()
    j = data.index(key) + len(key)
    (n_dims,) = struct.unpack_from("<I", data, j)
    return j + 4 + 8 * n_dims + 4


def _patched(good: str, tmp_path, name: str, rel_offset) -> str:
    data = bytearray(open(good, "rb").read())
    g = GGUFFile(good)
    rel = rel_offset(g)
    g.close()
    struct.pack_into("<Q", data, _tensor_offset_field(data, name), rel)
    p = tmp_path / "patched.gguf"
    p.write_bytes(bytes(data))
    return str(p)


def test_gguf_overlapping_tensors(good_gguf, tmp_path):
    """A tensor pointed at another's bytes used to convert silently (garbage weights)."""
    p = _patched(good_gguf, tmp_path, "blk.0.attn_norm.weight",
                 lambda g: g.tensors["token_embd.weight"].offset - g.data_start)
    _fails(p, GGUFConvertError, r"tensors 'blk.0.attn_norm.weight' .* and 'token_embd.weight' .* overlap")


def test_gguf_unaligned_offset(good_gguf, tmp_path):
    p = _patched(good_gguf, tmp_path, "blk.0.attn_norm.weight",
                 lambda g: g.tensors["blk.0.attn_norm.weight"].offset - g.data_start + 4)
    _fails(p, GGUFConvertError, r"'blk.0.attn_norm.weight' offset \d+ is not a multiple of the alignment 32")


def test_gguf_tensor_past_the_end(good_gguf, tmp_path):
    p = _patched(good_gguf, tmp_path, "output_norm.weight", lambda g: 1 << 60)
    _fails(p, GGUFConvertError, r"'output_norm.weight' .* lies past the end of the file")


def _tiny_gguf(tmp_path, kvs: bytes, n_kv: int) -> str:
    p = tmp_path / "meta.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, n_kv) + kvs)
    return str(p)


def _kv(key: bytes, body: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key + body


def test_gguf_deeply_nested_array(tmp_path):
    """An array nested 50,000 deep was a RecursionError traceback."""
    body = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 50_000 + struct.pack("<IQ", 4, 0)
    _fails(_tiny_gguf(tmp_path, _kv(b"x.deep", body), 1), GGUFConvertError, "nested more than 8 deep")


@pytest.mark.parametrize("body,match", [
    (struct.pack("<IIQ", 9, 8, 10**12), "claims 1000000000000 entries"),   # strings: 8 bytes each at least
    (struct.pack("<I", 8) + struct.pack("<Q", 1 << 62), "runs past the end of the file"),
    (struct.pack("<I", 77), "unknown value type 77"),
], ids=["array-count", "string-length", "value-type"])
def test_gguf_corrupt_metadata_values(tmp_path, body, match):
    _fails(_tiny_gguf(tmp_path, _kv(b"x.k", body), 1), GGUFConvertError, match)


def test_gguf_alignment_not_a_number(ckpt, tmp_path):
    p = str(tmp_path / "align.gguf")
    write_gguf_like_llamacpp(ckpt, p, extra_keys={"general.alignment": ("str", "32")})
    _fails(p, GGUFConvertError, r"general.alignment='32' is not a power of two")


def test_gguf_invalid_byte_piece(good_gguf, tmp_path):
    """`<0x4Y>` used to convert and then fail inside SentencePiece when the model loaded."""
    data = bytearray(open(good_gguf, "rb").read())
    i = data.index(b"<0x41>")
    data[i:i + 6] = b"<0x4Y>"
    p = tmp_path / "bytes.gguf"
    p.write_bytes(bytes(data))
    _fails(str(p), GGUFConvertError, r"has type BYTE but is '<0x4Y>', not <0xNN>")


def test_gguf_token_not_utf8(good_gguf, tmp_path):
    """Found by the fuzzer: a vocabulary entry of invalid UTF-8 was a UnicodeEncodeError in protobuf."""
    data = bytearray(open(good_gguf, "rb").read())
    i = data.index(b"<start_of_turn>")
    data[i + 1] = 0xA7  # a lone continuation byte
    p = tmp_path / "utf8.gguf"
    p.write_bytes(bytes(data))
    _fails(str(p), GGUFConvertError, r"token \d+ \('<\\udca7tart_of_turn>'\) is not valid UTF-8")


# ---------------------------------------------------------------- safetensors
def _copy(ckpt: str, tmp_path) -> str:
    d = tmp_path / "ckpt"
    shutil.copytree(ckpt, d, ignore=shutil.ignore_patterns("*.gcpp", "*.gguf"))
    return str(d)


def _edit_header(ckpt_dir: str, edit) -> None:
    """Rewrite model.safetensors' JSON header with edit(header) (data bytes unchanged)."""
    path = os.path.join(ckpt_dir, "model.safetensors")
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8:8 + n])
    edit(header)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + raw[8 + n:])


EMB, NORM = "model.embed_tokens.weight", "model.norm.weight"


def _shift(h, name, by):
    b, e = h[name]["data_offsets"]
    h[name]["data_offsets"] = [b + by, e + by]


@pytest.mark.parametrize("edit,match", [
    # header bytes read as weights, before
    (lambda h: _shift(h, EMB, -64), r"'model.embed_tokens.weight': data_offsets must be two integers 0 <= begin"),
    (lambda h: h[NORM].update(data_offsets=[0, h[NORM]["data_offsets"][1] - h[NORM]["data_offsets"][0]]),
     r"overlaps"),
    (lambda h: _shift(h, EMB, 2), r"'model.embed_tokens.weight' \(bytes \[2, \d+\)\) leaves a gap"),
    (lambda h: h.update({EMB: "abc"}), r"'model.embed_tokens.weight': entry must be an object, got str"),
    (lambda h: h[EMB].update(data_offsets=[0, 2**70]), r"holds \d+ bytes, but shape \[512, 96\] of F32 needs 196608"),
    (lambda h: h[EMB].update(shape="ab"), r"shape must be a list of non-negative integers, got 'ab'"),
    (lambda h: h[EMB].update(shape=[2**40, 2**40]), r"needs 4835703278458516698824704"),
    (lambda h: h[EMB].update(dtype="Q4"), r"unknown dtype 'Q4'"),
    (lambda h: h[EMB].update(data_offsets=[0]), "data_offsets must be two integers"),
], ids=["negative-offset", "overlap", "gap", "string-entry", "huge-offsets", "shape-string", "shape-huge",
        "dtype", "one-offset"])
def test_safetensors_bad_header(ckpt, tmp_path, edit, match):
    d = _copy(ckpt, tmp_path)
    _edit_header(d, edit)
    _fails(d, CheckpointError, match)


@pytest.mark.parametrize("header", [b"[1, 2]", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"],
                         ids=["list", "deep", "not-utf8"])
def test_safetensors_header_not_an_object(ckpt, tmp_path, header):
    d = _copy(ckpt, tmp_path)
    path = os.path.join(d, "model.safetensors")
    raw = open(path, "rb").read()
    (n,) = struct.unpack_from("<Q", raw)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + raw[8 + n:])
    _fails(d, CheckpointError, "must be a JSON object|nested too deeply|corrupt safetensors header")


def test_safetensors_truncated(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    path = os.path.join(d, "model.safetensors")
    os.truncate(path, os.path.getsize(path) - 100)
    _fails(d, CheckpointError, "the tensors end at byte .* the file is truncated")


# ---------------------------------------------------------------- config.json, tokenizer, index
def _with_config(ckpt, tmp_path, edit) -> str:
    d = _copy(ckpt, tmp_path)
    path = os.path.join(d, "config.json")
    cfg = json.load(open(path))
    new = edit(cfg)  # a replacement, or None after editing in place
    cfg = cfg if new is None else new
    json.dump(cfg, open(path, "w"))
    return d


def _gemma3(c, **kw):
    c.update(model_type="gemma3_text", sliding_window=16, **kw)


@pytest.mark.parametrize("edit,match", [
    (lambda c: [], "config.json: must be a JSON object, got list"),
    (lambda c: _gemma3(c, sliding_window_pattern=0), "sliding_window_pattern must be an integer >= 1, got 0"),
    (lambda c: c.update(num_attention_heads=0, head_dim=None), r"'num_attention_heads' must be in \[1, 1024\], got 0"),
    (lambda c: c.update(hidden_size="abc"), "field 'hidden_size' must be an integer, got 'abc'"),
    (lambda c: c.update(num_hidden_layers=2**32 - 1), r"'num_hidden_layers' must be in \[1, 4096\]"),
    (lambda c: c.update(rms_norm_eps=float("nan")), "config field 'rms_eps': must be a finite number"),
    (lambda c: c.update(rms_norm_eps="small"), "field 'rms_norm_eps' must be a number"),
    (lambda c: c.update(model_type="gemma2", sliding_window=16, query_pre_attn_scalar=0), "'query_pre_attn_scalar' must be a finite number > 0"),
    (lambda c: c.update(model_type="gemma2", sliding_window=16, query_pre_attn_scalar=-4), "'query_pre_attn_scalar' must be a finite number > 0"),
    (lambda c: c.update(rope_scaling=[1]), "field 'rope_scaling' must be an object"),
    (lambda c: c.update(rope_scaling={"rope_type": "linear"}), "linear rope scaling without a 'factor'"),
    (lambda c: _gemma3(c, layer_types=[{}, {}]), "layer_types must be a list of strings"),
    (lambda c: c.update(model_type="gemma3", text_config=[1]), "field 'text_config' must be an object"),
    (lambda c: c.update(eos_token_id=["x"]), "eos_token_id must be a token id or a list of them"),
], ids=["list", "pattern-0", "heads-0", "width-string", "layers-2^32-1", "eps-nan", "eps-string", "qscale-0",
        "qscale-negative", "rope-scaling-list", "rope-no-factor", "layer-types-dicts", "text-config-list", "eos-string"])
def test_bad_config_json(ckpt, tmp_path, edit, match):
    _fails(_with_config(ckpt, tmp_path, edit), CheckpointError, match)


def test_garbled_tokenizer_model(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(bytes(range(256)) * 2)
    _fails(d, CheckpointError, "tokenizer.model: not a valid SentencePiece model")


def test_index_names_files_outside_the_checkpoint(ckpt, tmp_path):
    d = _copy(ckpt, tmp_path)
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": {EMB: "../../etc/passwd"}}, f)
    _fails(d, CheckpointError, "shard names must be plain file names, got '../../etc/passwd'")
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": [1, 2]}, f)
    _fails(d, CheckpointError, "'weight_map' must map tensor names to shard file names")
