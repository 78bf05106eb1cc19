"""GGUF import: tiny Gemma 1/2/3 checkpoints written as GGUF the way llama.cpp writes them,
converted, and compared with transformers at every position.

`write_gguf_like_llamacpp` mirrors convert_hf_to_gguf.py (GemmaModel, Gemma2Model, Gemma3Model):
the metadata keys each class writes, tensor names from gguf-py's own TensorNameMap (the table the
converter uses, not ours), norms stored as 1 + w in F32, 2-D tensors in the output type with the
converter's fall-back to F16 when a row does not split into quantisation blocks, and the
vocabulary arrays built like `_create_vocab_sentencepiece` (special added tokens become CONTROL
with score -1000). llama.cpp hard-codes some Gemma facts rather than writing them (query scale
head_dim^-0.5, Gemma 3's layer pattern 6), so the checkpoints used here follow those facts, as the
released models do; a separate test covers the optional keys that override them.

Tolerances:
* F32 file: the engine runs the same float32 arithmetic as transformers on the same weights
  (norms differ by the rounding of (1 + w) - 1, ~1e-7), so logits agree to 1e-4 x max|logit|.
* F16 / BF16 / Q8_0 files: against transformers run on the *dequantised* weights (computed here from the
  bytes written, independently of the reader), the same 1e-4 bound applies: this is the tight check.
  Against the original float32 model, the difference is the quantisation error itself. Per weight
  it is at most u = 2^-11 relative for F16 (round to nearest, 11-bit significand), 2^-8 for BF16,
  and half a step, max|block| / 254, for Q8_0, i.e. ~2.5/254 ~ 1e-2 of a typical weight (the
  largest of 32 Gaussian values is ~2.5 sigma). Such errors add up roughly in quadrature over the ~7 matmuls per
  layer (~√(7L) ≤ 6 for these depths) and pass through softmax, norms and soft-caps that amplify
  them by a small factor; we allow 20 u x max|logit| (≈1e-2 for F16, ≈0.2 for Q8_0 of max|logit|).
  Measured on these (fixed-seed) models: 2-8 u, so the bound has a margin of 2.5x or more, and it
  stays far below what a wrong tensor gives (that moves logits by O(max|logit|)). The tight check
  measures ~2e-6 x max|logit|.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from checkpoints import load_reference, reference_logits  # noqa: E402

TEXT = ("the water boils at a temperature of 100 degrees celsius and the model answers the question "
        "über café 東京")

# 96-wide variants: every row length divides into Q8_0 blocks of 32, and query_pre_attn_scalar is
# head_dim, as llama.cpp assumes for every Gemma 2/3 but the 27B models.
WIDE = {
    "g1w": dict(family=1, num_attention_heads=3, num_key_value_heads=1, head_dim=32, hidden_size=96,
                intermediate_size=160, num_hidden_layers=2),
    "g2w": dict(family=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32, hidden_size=96,
                intermediate_size=160, num_hidden_layers=4, query_pre_attn_scalar=32),
    # 7 layers with Gemma 3's default pattern 6: layers 0-4 and 6 slide, layer 5 is global.
    "g3w": dict(family=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32, hidden_size=96,
                intermediate_size=160, num_hidden_layers=7, query_pre_attn_scalar=32),
}

_ARCH = {"gemma": gguf.MODEL_ARCH.GEMMA, "gemma2": gguf.MODEL_ARCH.GEMMA2, "gemma3_text": gguf.MODEL_ARCH.GEMMA3}
_FILE_TYPE = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
              "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "BF16": gguf.LlamaFileType.MOSTLY_BF16}
_SPECIAL_PIECES = ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>")


def _llamacpp_vocab(tokenizer_path: str):
    """tokens, scores, types as convert_hf_to_gguf.py's _create_vocab_sentencepiece makes them for a
    Gemma checkpoint whose tokenizer_config.json marks the special tokens as special."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        t = 1
        if sp.is_unknown(i):
            t = 2
        elif sp.is_control(i):
            t = 3
        elif sp.is_unused(i):
            t = 5
        elif sp.is_byte(i):
            t = 6
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(t)
    for i, piece in enumerate(tokens):  # added_tokens_decoder entries with "special": true
        if piece in _SPECIAL_PIECES:
            types[i] = 3
            scores[i] = -1000.0
    return tokens, np.array(scores, np.float32), np.array(types, np.int32)


def _quantize(arr: np.ndarray, ftype: str):
    """(stored array, its GGML type) with the converter's fall-back to F16 for rows that do not
    split into blocks."""
    qt = gguf.GGMLQuantizationType[ftype]
    if arr.ndim <= 1:
        qt = gguf.GGMLQuantizationType.F32
    try:
        data = gguf.quants.quantize(arr, qt)
    except gguf.QuantError:
        qt = gguf.GGMLQuantizationType.F16
        data = gguf.quants.quantize(arr, qt)
    return data, qt


def write_gguf_like_llamacpp(ckpt: str, out: str, ftype: str = "F32", *, extra_keys: dict | None = None,
                             drop_tensors: tuple[str, ...] = (), drop_keys: tuple[str, ...] = (),
                             arch_name: str | None = None, chat_template: str | None = None,
                             raw_types: dict | None = None, blocks: dict | None = None) -> dict:
    """Write `ckpt` as a GGUF file; returns {hf tensor name: the values transformers would see
    after dequantising the file's bytes (and subtracting 1 from norms)}. `blocks` maps GGUF
    tensor names to (type, raw bytes) stored instead of the checkpoint's values."""
    from safetensors.numpy import load_file

    with open(os.path.join(ckpt, "config.json")) as f:
        hp = json.load(f)
    arch = _ARCH[hp["model_type"]]
    n_layers = hp["num_hidden_layers"]
    w = gguf.GGUFWriter(out, arch_name or gguf.MODEL_ARCH_NAMES[arch])
    keys: dict[str, tuple] = {}
    a = gguf.MODEL_ARCH_NAMES[arch]
    keys[f"{a}.context_length"] = ("u32", hp["max_position_embeddings"])
    keys[f"{a}.embedding_length"] = ("u32", hp["hidden_size"])
    keys[f"{a}.block_count"] = ("u32", n_layers)
    keys[f"{a}.feed_forward_length"] = ("u32", hp["intermediate_size"])
    keys[f"{a}.attention.head_count"] = ("u32", hp["num_attention_heads"])
    keys[f"{a}.attention.head_count_kv"] = ("u32", hp["num_key_value_heads"])
    keys[f"{a}.attention.layer_norm_rms_epsilon"] = ("f32", hp["rms_norm_eps"])
    keys[f"{a}.attention.key_length"] = ("u32", hp["head_dim"])
    keys[f"{a}.attention.value_length"] = ("u32", hp["head_dim"])
    if arch == gguf.MODEL_ARCH.GEMMA2:
        keys[f"{a}.attn_logit_softcapping"] = ("f32", hp["attn_logit_softcapping"])
        keys[f"{a}.final_logit_softcapping"] = ("f32", hp["final_logit_softcapping"])
        keys[f"{a}.attention.sliding_window"] = ("u32", hp["sliding_window"])
    if arch == gguf.MODEL_ARCH.GEMMA3:
        rope = hp.get("rope_parameters") or {}
        theta = (rope.get("full_attention") or rope).get("rope_theta", hp.get("rope_theta", 1e6))
        keys[f"{a}.rope.freq_base"] = ("f32", theta)
        keys[f"{a}.attention.sliding_window"] = ("u32", hp["sliding_window"])
    keys.update(extra_keys or {})
    for k in drop_keys:
        keys.pop(k, None)
    for k, (kind, v) in keys.items():
        {"u32": w.add_uint32, "f32": w.add_float32, "str": w.add_string, "arr": w.add_array}[kind](k, v)
    w.add_name("tiny gemma")
    w.add_file_type(_FILE_TYPE[ftype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    tokens, scores, types = _llamacpp_vocab(os.path.join(ckpt, "tokenizer.model"))
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores.tolist())
    w.add_token_types(types.tolist())
    w.add_bos_token_id(hp["bos_token_id"])
    w.add_eos_token_id(hp["eos_token_id"])
    w.add_unk_token_id(tokens.index("<unk>"))
    w.add_pad_token_id(hp["pad_token_id"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    name_map = gguf.get_tensor_name_map(arch, n_layers)
    deq: dict[str, np.ndarray] = {}
    state = {}
    for fn in sorted(os.listdir(ckpt)):
        if fn.endswith(".safetensors"):
            state.update(load_file(os.path.join(ckpt, fn)))
    for hf_name, arr in state.items():
        if hf_name == "lm_head.weight":
            continue
        base = hf_name[:-len(".weight")]
        gname = name_map.get_name(base)
        assert gname is not None, hf_name
        gname += ".weight"
        arr = np.asarray(arr, np.float32)
        is_norm = hf_name.endswith("norm.weight")
        if is_norm:
            arr = arr + 1  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp's by w
        data, qt = _quantize(arr, ftype)
        if raw_types and gname in raw_types:  # placeholder bytes of another block type
            qt = raw_types[gname]
            data = np.zeros(gguf.quants.quant_shape_to_byte_shape(arr.shape, qt), np.uint8)
            w.add_tensor(gname, data, raw_dtype=qt)
            continue
        if gname in drop_tensors:
            continue
        if blocks and gname in blocks:
            qt, data = blocks[gname]
        w.add_tensor(gname, data, raw_dtype=qt if qt not in (gguf.GGMLQuantizationType.F32,
                                                               gguf.GGMLQuantizationType.F16) else None)
        back = gguf.quants.dequantize(data, qt).reshape(arr.shape).astype(np.float32)
        deq[hf_name] = back - np.float32(1) if is_norm else back
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return deq


@pytest.fixture(scope="session")
def gguf_case(workdir, make_ckpt):
    """gguf_case(spec, ftype, **write_kw) -> (ckpt dir, gguf path, .gcpp path, dequantised HF state)."""
    from gemma_cpp.convert import convert

    cache: dict = {}

    def make(spec, ftype="F32", tag="", **kw):
        ckpt = make_ckpt(dict(WIDE[spec]) if spec in WIDE else spec)
        key = (ckpt, ftype, tag)
        if key not in cache:
            path = os.path.join(ckpt, f"model.{ftype}{tag}.gguf")
            deq = write_gguf_like_llamacpp(ckpt, path, ftype, **kw)
            out = path[:-5] + ".gcpp"
            convert(path, out, dtype="f32", progress=False)
            cache[key] = (ckpt, path, out, deq)
        return cache[key]

    return make


def _ids(gcpp: str) -> list[int]:
    from gemma_cpp import Model

    ids = Model(gcpp).tokenize(TEXT)
    assert len(ids) > 20  # longer than the sliding window (8) of the tiny checkpoints
    return ids


def _ours(gcpp: str, ids: list[int]) -> np.ndarray:
    from gemma_cpp import Model

    return Model(gcpp).logits(ids)


def _ref_on(ckpt: str, state: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    import torch

    model = load_reference(ckpt)
    sd = model.state_dict()
    with torch.no_grad():
        for name, arr in state.items():
            sd[name].copy_(torch.from_numpy(arr))
    model.load_state_dict(sd)
    return reference_logits(model, ids)


@pytest.mark.parametrize("spec", ["g1w", "g2w", "g3w", "g1_mqa"])
def test_f32_gguf_matches_transformers(gguf_case, reference, spec):
    ckpt, _, gcpp, _ = gguf_case(spec, "F32")
    ids = _ids(gcpp)
    ref = reference_logits(reference(ckpt), ids)
    ours = _ours(gcpp, ids)
    assert ours.shape == ref.shape
    err = np.abs(ours - ref).max()
    assert err <= 1e-4 * np.abs(ref).max(), f"max |diff| {err} vs max |ref| {np.abs(ref).max()}"


@pytest.mark.parametrize("spec,ftype,u", [
    ("g1w", "F16", 2.0 ** -11), ("g2w", "F16", 2.0 ** -11), ("g3w", "F16", 2.0 ** -11),
    ("g1w", "Q8_0", 2.5 / 254), ("g2w", "Q8_0", 2.5 / 254), ("g3w", "Q8_0", 2.5 / 254),
    ("g3w", "BF16", 2.0 ** -8),  # bfloat16: 8-bit significand
    # 80 wide: rows of 80 do not split into Q8_0 blocks, so the file mixes Q8_0 and F16 tensors
    ("g1_mqa", "Q8_0", 2.5 / 254),
])
def test_quantised_gguf_matches_transformers(gguf_case, reference, spec, ftype, u):
    ckpt, path, gcpp, deq = gguf_case(spec, ftype)
    ids = _ids(gcpp)
    ours = _ours(gcpp, ids)
    # tight: transformers on the weights the file really holds
    ref_deq = _ref_on(ckpt, deq, ids)
    err = np.abs(ours - ref_deq).max()
    assert err <= 1e-4 * np.abs(ref_deq).max(), f"vs dequantised reference: {err}"
    # loose: the original float32 model, within the quantisation error (see the module docstring)
    ref = reference_logits(reference(ckpt), ids)
    err0 = np.abs(ours - ref).max()
    assert err0 <= 20 * u * np.abs(ref).max(), f"vs original: {err0} (max |ref| {np.abs(ref).max()})"
    # and the file did hold quantised data
    from gemma_cpp.convert.gguf_file import GGUFFile

    kinds = {t.type_name for t in GGUFFile(path).tensors.values()}
    assert ftype in kinds


def test_original_fixtures_gemma3_pattern_and_scale_keys(gguf_case, reference):
    """The g3 fixture (layer pattern 2, query_pre_attn_scalar 20 != head_dim) needs the optional
    keys `attention.sliding_window_pattern` and `attention.scale`; without them llama.cpp's
    defaults (pattern 6, head_dim^-0.5) apply and the logits must differ."""
    extra = {"gemma3.attention.sliding_window_pattern": ("u32", 2),
             "gemma3.attention.scale": ("f32", 20 ** -0.5)}
    ckpt, _, gcpp, _ = gguf_case("g3", "F32", tag=".keys", extra_keys=extra)
    ids = _ids(gcpp)
    ref = reference_logits(reference(ckpt), ids)
    ours = _ours(gcpp, ids)
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    _, _, gcpp_plain, _ = gguf_case("g3", "F32")
    plain = _ours(gcpp_plain, ids)
    assert np.abs(plain - ref).max() > 1e-2 * np.abs(ref).max()


def test_per_layer_pattern_array(gguf_case, reference):
    flags = [True, False, True, False]  # g3: sliding_window_pattern 2 -> layers 0 and 2 slide
    extra = {"gemma3.attention.sliding_window_pattern": ("arr", flags),
             "gemma3.attention.scale": ("f32", 20 ** -0.5)}
    ckpt, _, gcpp, _ = gguf_case("g3", "F32", tag=".arr", extra_keys=extra)
    from gemma_cpp import Model

    assert Model(gcpp).config.raw["layer_sliding"] == [1, 0, 1, 0]
    ids = _ids(gcpp)
    ref = reference_logits(reference(ckpt), ids)
    assert np.abs(_ours(gcpp, ids) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_norms_are_stored_plus_one_and_restored(gguf_case):
    """The reader must hand the writer raw w (the runtime adds 1), not llama.cpp's 1 + w."""
    from safetensors.numpy import load_file

    from gemma_cpp.convert import read_source

    ckpt, path, _, _ = gguf_case("g3w", "F32")
    src = read_source(path, dtype="f32")
    hf = load_file(os.path.join(ckpt, "model.safetensors"))
    specs = {t.name: t for t in src.tensors}
    for ours, theirs in (("final_norm", "model.norm.weight"),
                         ("layers.1.attn_norm", "model.layers.1.input_layernorm.weight"),
                         ("layers.1.post_attn_norm", "model.layers.1.post_attention_layernorm.weight"),
                         ("layers.1.ffn_norm", "model.layers.1.pre_feedforward_layernorm.weight"),
                         ("layers.1.q_norm", "model.layers.1.self_attn.q_norm.weight"),
                         ("layers.1.k_norm", "model.layers.1.self_attn.k_norm.weight")):
        np.testing.assert_allclose(specs[ours].load(), hf[theirs], atol=2e-7, err_msg=ours)
    q = specs["layers.0.qkv"].load()[: 4 * 32]
    np.testing.assert_array_equal(q, hf["model.layers.0.self_attn.q_proj.weight"])  # no rope permutation


def test_config_and_special_ids(gguf_case):
    from gemma_cpp import Model

    _, _, gcpp, _ = gguf_case("g3w", "F32")
    m = Model(gcpp)
    raw = m.config.raw
    assert raw["layer_sliding"] == [1, 1, 1, 1, 1, 0, 1]
    assert raw["query_scale"] == pytest.approx(32 ** -0.5)
    assert raw["rope_theta_local"] == 10000.0 and raw["rope_theta_global"] == 1_000_000.0
    sp = m.metadata["special"]
    sot, eot = m.tokenizer.sp.piece_to_id("<start_of_turn>"), m.tokenizer.sp.piece_to_id("<end_of_turn>")
    assert sp["bos"] == 2 and sp["pad"] == 0 and sp["unk"] == 3
    assert sp["start_of_turn"] == sot and sp["end_of_turn"] == eot
    assert sp["eos"] == sorted({1, eot})  # Gemma 3: <eos> and <end_of_turn>
    prov = m.metadata["provenance"]
    assert prov["source_format"] == "gguf" and prov["gguf_architecture"] == "gemma3"


@pytest.mark.parametrize("text", [
    TEXT, "  two  spaces\n\nand\ttabs ", "12345 3.14159", "<start_of_turn>user\nhello<end_of_turn>\n",
    "😀 emoji 東京 日本語 naïve", "<bos>x<eos>y<pad>",
])
def test_tokenizer_matches_original(gguf_case, make_gcpp, text):
    """The SentencePiece model rebuilt from tokenizer.ggml.* splits text as the original one."""
    from gemma_cpp import Model

    _, _, gcpp, _ = gguf_case("g1w", "F32")
    ours = Model(gcpp)
    orig = Model(make_gcpp(dict(WIDE["g1w"])))
    assert ours.tokenize(text) == orig.tokenize(text)
    ids = orig.tokenize(text, add_bos=False)
    assert ours.detokenize(ids) == orig.detokenize(ids)


def test_chat_template_carried(gguf_case):
    from gemma_cpp import Model

    tmpl = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    _, _, gcpp, _ = gguf_case("g1w", "F32", tag=".chat", chat_template=tmpl)
    m = Model(gcpp)
    assert m.metadata["chat_template"] == tmpl
    assert m.apply_chat_template([{"role": "user", "content": "hi"}]) == "<bos><start_of_turn>user\nhi<end_of_turn>\n"


def test_parser_agrees_with_gguf_reader(gguf_case):
    from gemma_cpp.convert.gguf_file import GGUFFile

    _, path, _, _ = gguf_case("g1_mqa", "Q8_0")
    ours = GGUFFile(path)
    ref = gguf.GGUFReader(path)
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        want = field.contents()
        got = ours.metadata[key]
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, np.asarray(want), err_msg=key)
        elif isinstance(want, float):
            assert got == pytest.approx(want), key
        else:
            assert got == want, key
    assert set(ours.tensors) == {t.name for t in ref.tensors}
    for t in ref.tensors:
        info = ours.tensors[t.name]
        assert info.shape == tuple(int(d) for d in reversed(t.shape.tolist()))
        assert info.ggml_type == int(t.tensor_type)
        want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(info.shape)
        np.testing.assert_array_equal(ours.dequantize(t.name), want, err_msg=t.name)


# ------------------------------------------------------------------ bad input
def _convert_error(path: str) -> str:
    from gemma_cpp.convert import read_source

    with pytest.raises(ValueError) as e:
        src = read_source(path, dtype="f32")
        for t in src.tensors:
            t.load()
    return str(e.value)


def test_error_unknown_architecture(make_ckpt, tmp_path):
    ckpt = make_ckpt(dict(WIDE["g1w"]))
    path = str(tmp_path / "llama.gguf")
    write_gguf_like_llamacpp(ckpt, path, arch_name="llama")
    msg = _convert_error(path)
    assert "architecture 'llama'" in msg and "llama.gguf" in msg


def test_error_missing_metadata(make_ckpt, tmp_path):
    ckpt = make_ckpt(dict(WIDE["g1w"]))
    path = str(tmp_path / "nolayers.gguf")
    write_gguf_like_llamacpp(ckpt, path, drop_keys=("gemma.block_count",))
    assert "gemma.block_count" in _convert_error(path)


def test_error_missing_tensor(make_ckpt, tmp_path):
    ckpt = make_ckpt(dict(WIDE["g1w"]))
    path = str(tmp_path / "nok.gguf")
    write_gguf_like_llamacpp(ckpt, path, drop_tensors=("blk.1.attn_k.weight",))
    assert "blk.1.attn_k.weight" in _convert_error(path)


def test_error_truncated(make_ckpt, tmp_path):
    ckpt = make_ckpt(dict(WIDE["g1w"]))
    path = str(tmp_path / "cut.gguf")
    write_gguf_like_llamacpp(ckpt, path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    msg = _convert_error(path)
    assert "truncated" in msg and "cut.gguf" in msg
    with open(path, "r+b") as f:
        f.truncate(300)
    assert "cut.gguf" in _convert_error(path)


def test_error_not_gguf(tmp_path):
    path = str(tmp_path / "junk.gguf")
    with open(path, "wb") as f:
        f.write(b"NOPE" + b"\0" * 100)
    assert "not a GGUF file" in _convert_error(path)


def test_error_unsupported_tensor_type(make_ckpt, tmp_path):
    """A tensor type the installed gguf package cannot dequantise (Q8_1: only an intermediate
    type inside ggml) is refused by name, before anything is written."""
    from gemma_cpp.convert.gguf_file import supports

    q8_1 = gguf.GGMLQuantizationType.Q8_1
    assert not supports(int(q8_1))
    assert supports(int(gguf.GGMLQuantizationType.Q4_K)) and supports(int(gguf.GGMLQuantizationType.Q6_K))
    ckpt = make_ckpt(dict(WIDE["g1w"]))
    path = str(tmp_path / "q81.gguf")
    write_gguf_like_llamacpp(ckpt, path, raw_types={"blk.0.attn_q.weight": q8_1})
    msg = _convert_error(path)
    assert "Q8_1" in msg and "blk.0.attn_q.weight" in msg


# ------------------------------------------------------------------ demo model plumbing
def test_demo_missing_package_says_what_to_install(monkeypatch, tmp_path):
    from gemma_cpp import demo

    monkeypatch.setattr(demo, "_MODULE", "gemma_cpp_no_such_demo_package")
    with pytest.raises(demo.DemoModelMissing) as e:
        demo.default_model_path(directory=tmp_path)
    assert "pip install" in str(e.value) and "[demo]" in str(e.value)


def test_demo_assembles_and_converts_once(monkeypatch, tmp_path, make_ckpt):
    """default_model_path with a stand-in package (a tiny GGUF): joins, converts, caches, and two
    concurrent first calls convert once."""
    import shutil
    import threading
    import types

    from gemma_cpp import demo
    from gemma_cpp.convert import convert as real_convert

    ckpt = make_ckpt(dict(WIDE["g3w"]))
    src = str(tmp_path / "src.gguf")
    write_gguf_like_llamacpp(ckpt, src, "Q8_0")
    calls = {"assemble": 0, "convert": 0}

    def assemble(out, overwrite=False):
        calls["assemble"] += 1
        shutil.copy(src, out)
        return out

    fake = types.SimpleNamespace(MODEL_NAME="tiny.gguf", assemble=assemble)
    monkeypatch.setattr(demo, "_package", lambda: fake)

    def counting_convert(*a, **k):
        calls["convert"] += 1
        return real_convert(*a, **k)

    import gemma_cpp.convert as convmod

    monkeypatch.setattr(convmod, "convert", counting_convert)
    monkeypatch.setenv("GEMMA_CPP_CACHE", str(tmp_path / "cache"))
    results = []
    threads = [threading.Thread(target=lambda: results.append(demo.default_model_path("f32")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert calls == {"assemble": 1, "convert": 1}
    path = results[0]
    assert path.startswith(str(tmp_path / "cache")) and path.endswith(".gcpp")
    assert demo.default_model_path("f32") == path and calls["convert"] == 1
    leftovers = [f for f in os.listdir(tmp_path / "cache") if f.endswith((".tmp", ".partial"))]
    assert not leftovers
    from gemma_cpp import Model

    assert Model(path).config.n_layers == 7
