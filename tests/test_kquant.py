"""The native GGUF block formats (q4_1, q5_0, q5_1, q4_k, q5_k, q6_k; csrc/quant/kquant.h) and
their kernels.

* Exactness: random blocks (every bit pattern of the quants, sane f16 scales) dequantised by our
  code equal `gguf.quants.dequantize` bit for bit.
* Kernels: every ISA against the scalar reference (the same integers, so agreement to float
  re-association), the scalar reference against numpy (float64 on the dequantised weights; the
  difference is the activation quantisation, bounded exactly), over odd row counts and token
  counts and every block count up to a few super-blocks.
* Determinism: T tokens in one call equal each token alone, bit for bit, on every ISA and for
  1 and 2 threads.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from checkpoints import write_q4_0_baseline
from gemma_cpp import _core

ISAS = _core.available_isas()
GGUF_TYPES = {"q5_0": ("Q5_0", 32, 22), "q4_1": ("Q4_1", 32, 20), "q5_1": ("Q5_1", 32, 24),
              "q4_k": ("Q4_K", 256, 144), "q5_k": ("Q5_K", 256, 176), "q6_k": ("Q6_K", 256, 210)}
# byte offsets of the f16 scales inside a block (d, and dmin for Q4_K)
_F16_AT = {"q5_0": [0], "q4_1": [0, 2], "q5_1": [0, 2], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208]}


def random_blocks(dtype: str, rows: int, cols: int, rng: np.random.Generator, scale: float = 0.02) -> np.ndarray:
    """rows x cols weights of `dtype` as raw GGUF bytes: random quants, scales ~ |N(0, scale)|."""
    _, qk, nbytes = GGUF_TYPES[dtype]
    nblk = rows * cols // qk
    raw = rng.integers(0, 256, size=(nblk, nbytes), dtype=np.uint8)
    for off in _F16_AT[dtype]:
        d = (np.abs(rng.standard_normal(nblk)) * scale).astype(np.float16)
        if dtype == "q6_k":
            d = (d / 64).astype(np.float16)  # q6_k levels are sc * q, up to 128 * 32
        raw[:, off:off + 2] = d.view(np.uint8).reshape(nblk, 2)
    return raw.reshape(rows, cols // qk * nbytes)


def gguf_dequant(dtype: str, raw: np.ndarray, cols: int) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    return np.asarray(dequantize(raw, GGMLQuantizationType[GGUF_TYPES[dtype][0]]), np.float32).reshape(-1, cols)


@pytest.mark.parametrize("dtype", list(GGUF_TYPES))
def test_dequantize_equals_gguf_package_bit_for_bit(dtype):
    rng = np.random.default_rng(11)
    qk = GGUF_TYPES[dtype][1]
    rows, cols = 7, 3 * qk
    raw = random_blocks(dtype, rows, cols, rng)
    ours = _core.dequantize(raw.reshape(-1), dtype, rows, cols)
    ref = gguf_dequant(dtype, raw, cols)
    assert ours.dtype == ref.dtype == np.float32
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
    assert _core.row_bytes(dtype, cols) == raw.shape[1]


@pytest.mark.parametrize("dtype", list(GGUF_TYPES))
def test_row_bytes_and_bad_widths(dtype):
    _, qk, nbytes = GGUF_TYPES[dtype]
    assert _core.row_bytes(dtype, 4 * qk) == 4 * nbytes
    with pytest.raises(ValueError, match=f"multiple of {qk}"):
        _core.row_bytes(dtype, qk + 32 if qk > 32 else 33)
    if dtype not in ("q4_k", "q5_0"):  # imported only; q4_k and q5_0 have quantisers (tested below)
        with pytest.raises(ValueError, match="no quantiser"):
            _core.quantize(np.zeros((1, qk), np.float32), dtype, 1)


def _act_quant_bound(wd: np.ndarray, x: np.ndarray) -> np.ndarray:
    """|X Wd^T - (X quantised) Wd^T| <= sum_k |w_k| dx_block(k) / 2, dx = max|x_block| / 127."""
    T, K = x.shape
    dx = np.abs(x).reshape(T, K // 32, 32).max(-1) / 127.0
    return np.repeat(dx, 32, axis=1) @ np.abs(wd).T.astype(np.float64) / 2.0


@pytest.mark.parametrize("dtype", list(GGUF_TYPES))
def test_matmul_every_isa_vs_scalar_vs_numpy(dtype):
    rng = np.random.default_rng(5)
    qk = GGUF_TYPES[dtype][1]
    for rows, nblk, T in [(1, 1, 1), (5, 1, 3), (37, 3, 1), (67, 2, 5), (130, 4, 17), (9, 7, 40)]:
        cols = nblk * qk
        raw = random_blocks(dtype, rows, cols, rng)
        wd = _core.dequantize(raw.reshape(-1), dtype, rows, cols)
        x = rng.standard_normal((T, cols)).astype(np.float32)
        x[:, rng.integers(0, cols)] *= 30.0  # an outlier column, as real activations have
        ref = x.astype(np.float64) @ wd.T.astype(np.float64)
        mag = np.abs(x).astype(np.float64) @ np.abs(wd).T.astype(np.float64)
        y_scalar = _core.matmul(raw.reshape(-1), dtype, rows, cols, x, isa="scalar")
        tol = 4e-7 * cols * mag + 1.001 * _act_quant_bound(wd, x) + 1e-6
        assert np.all(np.abs(y_scalar - ref) <= tol), (dtype, rows, cols, T)
        for isa in ISAS:
            for threads in (1, 2):
                y = _core.matmul(raw.reshape(-1), dtype, rows, cols, x, isa=isa, n_threads=threads)
                # same integers, same float products; only the order of float additions differs
                assert np.all(np.abs(y - y_scalar) <= 1e-5 * mag + 1e-6), (isa, dtype, rows, cols, T, threads)


@pytest.mark.parametrize("dtype", list(GGUF_TYPES))
def test_batch_and_thread_invariance_bit_exact(dtype):
    """DETERMINISM (DESIGN.md): a token's outputs do not depend on the other tokens of the call
    or on the thread count."""
    rng = np.random.default_rng(9)
    qk = GGUF_TYPES[dtype][1]
    rows, cols, T = 203, 3 * qk, 21  # odd rows: every tile shape and remainder path runs
    raw = random_blocks(dtype, rows, cols, rng).reshape(-1)
    x = rng.standard_normal((T, cols)).astype(np.float32)
    for isa in ISAS:
        full = _core.matmul(raw, dtype, rows, cols, x, isa=isa, n_threads=2)
        for t in range(T):
            one = _core.matmul(raw, dtype, rows, cols, x[t:t + 1], isa=isa, n_threads=1)
            assert np.array_equal(one[0], full[t]), (isa, dtype, t)
        for t0, t1 in [(0, 5), (3, 11), (7, 21)]:
            part = _core.matmul(raw, dtype, rows, cols, x[t0:t1], isa=isa, n_threads=1)
            assert np.array_equal(part, full[t0:t1]), (isa, dtype, t0, t1)


# ---------------------------------------------------------------------------- GGUF import

KQ_SPEC = dict(family=3, hidden_size=256, intermediate_size=256, num_attention_heads=2, num_key_value_heads=1,
               head_dim=128, num_hidden_layers=2, query_pre_attn_scalar=128)


def _gguf_blocks(ckpt: str, rng: np.random.Generator) -> dict:
    """A Q4_K_M-like mix over two layers (GGUF name -> (type, bytes)): fused q/k/v and gate/up
    parts of different types, every native type, and one Q3_K tensor (no exact .gcpp dtype)."""
    import gguf
    from safetensors.numpy import load_file

    state = load_file(f"{ckpt}/model.safetensors")
    qt = gguf.GGMLQuantizationType

    def quant(hf: str, t: str):
        return qt[t], gguf.quants.quantize(np.asarray(state[hf], np.float32), qt[t])

    def rand(hf: str, t: str):
        rows, cols = state[hf].shape
        return qt[t.upper()], random_blocks(t, rows, cols, rng, scale={"q4_k": 1e-3, "q5_k": 5e-4, "q6_k": 1.6e-2}[t])

    def q3_k(hf: str):  # a type with no exact .gcpp dtype: random blocks, d (bytes 108-109) small
        rows, cols = state[hf].shape
        raw = rng.integers(0, 256, size=(rows * cols // 256, 110), dtype=np.uint8)
        raw[:, 108:110] = (np.abs(rng.standard_normal(len(raw))) * 2e-3).astype(np.float16).view(np.uint8).reshape(-1, 2)
        return qt.Q3_K, raw.reshape(rows, -1)

    p = "model.layers.{}.{}.weight"
    return {
        "blk.0.attn_q.weight": quant(p.format(0, "self_attn.q_proj"), "Q5_0"),
        "blk.0.attn_k.weight": quant(p.format(0, "self_attn.k_proj"), "Q5_0"),
        "blk.0.attn_v.weight": quant(p.format(0, "self_attn.v_proj"), "Q8_0"),
        "blk.0.attn_output.weight": rand(p.format(0, "self_attn.o_proj"), "q4_k"),
        "blk.0.ffn_gate.weight": rand(p.format(0, "mlp.gate_proj"), "q4_k"),
        "blk.0.ffn_up.weight": rand(p.format(0, "mlp.up_proj"), "q6_k"),
        "blk.0.ffn_down.weight": rand(p.format(0, "mlp.down_proj"), "q6_k"),
        "blk.1.attn_q.weight": quant(p.format(1, "self_attn.q_proj"), "Q4_0"),
        "blk.1.attn_k.weight": quant(p.format(1, "self_attn.k_proj"), "Q4_0"),
        "blk.1.attn_v.weight": quant(p.format(1, "self_attn.v_proj"), "Q4_0"),
        "blk.1.attn_output.weight": quant(p.format(1, "self_attn.o_proj"), "Q5_1"),
        "blk.1.ffn_gate.weight": quant(p.format(1, "mlp.gate_proj"), "Q4_1"),
        "blk.1.ffn_up.weight": q3_k(p.format(1, "mlp.up_proj")),
        "blk.1.ffn_down.weight": rand(p.format(1, "mlp.down_proj"), "q5_k"),
    }


@pytest.fixture(scope="module")
def kq_gguf(make_ckpt, tmp_path_factory):
    from test_gguf import write_gguf_like_llamacpp

    from gemma_cpp.convert import convert

    ckpt = make_ckpt(KQ_SPEC)
    d = tmp_path_factory.mktemp("kq")
    path = str(d / "mix.gguf")
    deq = write_gguf_like_llamacpp(ckpt, path, "Q8_0", blocks=_gguf_blocks(ckpt, np.random.default_rng(3)))
    src, f32 = str(d / "source.gcpp"), str(d / "f32.gcpp")
    convert(path, src, progress=False)  # no dtype: "source" for GGUF files
    convert(path, f32, dtype="f32", progress=False)
    return path, src, f32, deq


def _stored(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a .gcpp file dequantised by our code, row slices (NAME#i) joined."""
    from gemma_cpp.gcpp_format import read_header

    h = read_header(path)
    out: dict[str, list] = {}
    for t in h.tensors:
        rows = t["shape"][0] if len(t["shape"]) == 2 else 1
        raw = np.frombuffer(h.read_blob(t), np.uint8)
        out.setdefault(t["name"].split("#")[0], []).append(
            (t["name"], t["dtype"], _core.dequantize(raw, t["dtype"], rows, t["shape"][-1],
                                                     layout=t.get("layout", "rows"))))
    return {k: v for k, v in out.items()}


def test_gguf_source_import_is_exact(kq_gguf):
    _, src, _, deq = kq_gguf
    stored = _stored(src)
    dtypes = {name: [(n, dt) for n, dt, _ in parts] for name, parts in stored.items()}
    assert dtypes["layers.0.qkv"] == [("layers.0.qkv#0", "q5_0"), ("layers.0.qkv#1", "int8")]
    assert dtypes["layers.0.gate_up"] == [("layers.0.gate_up#0", "q4_k"), ("layers.0.gate_up#1", "q6_k")]
    assert dtypes["layers.0.o"] == [("layers.0.o", "q4_k")] and dtypes["layers.0.down"] == [("layers.0.down", "q6_k")]
    assert dtypes["layers.1.down"] == [("layers.1.down", "q5_k")]
    assert dtypes["layers.1.qkv"] == [("layers.1.qkv", "int4")] and dtypes["embed"] == [("embed", "int8")]
    assert dtypes["layers.1.gate_up"] == [("layers.1.gate_up#0", "q4_1"), ("layers.1.gate_up#1", "bf16")]
    assert dtypes["layers.1.o"] == [("layers.1.o", "q5_1")]
    p = "model.layers.{}.{}.weight"
    for i in (0, 1):
        want = {
            "qkv": np.concatenate([deq[p.format(i, f"self_attn.{x}_proj")] for x in "qkv"]),
            "o": deq[p.format(i, "self_attn.o_proj")],
            "gate_up": np.concatenate([deq[p.format(i, f"mlp.{x}_proj")] for x in ("gate", "up")]),
            "down": deq[p.format(i, "mlp.down_proj")],
        }
        for name, w in want.items():
            got = np.concatenate([v for _, _, v in stored[f"layers.{i}.{name}"]])
            if (i, name) == (1, "gate_up"):  # Q3_K up rows: bf16, the one inexact part
                import ml_dtypes

                w = w.copy()
                w[256:] = w[256:].astype(ml_dtypes.bfloat16).astype(np.float32)
                assert not np.array_equal(got[256:], deq[p.format(1, "mlp.up_proj")])
            assert np.array_equal(got.view(np.uint32), w.view(np.uint32)), (i, name)
    assert np.array_equal(stored["embed"][0][2], deq["model.embed_tokens.weight"])


def test_gguf_source_model_runs_like_f32(kq_gguf):
    """The runtime on the native formats and row slices vs the same weights in f32: the only
    difference is the int8 activation rounding of the quantised matmuls."""
    from gemma_cpp import Model

    _, src, f32, _ = kq_gguf
    ids = Model(f32).tokenize("the water boils at a temperature of 100 degrees celsius and the model")
    ref, got = Model(f32).logits(ids), Model(src).logits(ids)
    assert np.isfinite(got).all()
    lp_ref = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
    lp = got - np.logaddexp.reduce(got, axis=-1, keepdims=True)
    kl = (np.exp(lp_ref) * (lp_ref - lp)).sum(-1)
    assert kl.mean() < 2e-5, kl.mean()  # measured 6e-7; slices written at the wrong columns: 2.4e-3
    assert (ref.argmax(-1) == got.argmax(-1)).all()


@pytest.mark.parametrize("old,new,msg", [
    (b'"name":"layers.0.o","dtype":"q4_k"', b'"name":"layers.0.o","dtype":"q6_k"',
     r"tensor 'layers.0.o' \(q6_k \[256, 256\]\) has 36864 bytes, expected 53760"),
    (b'"name":"layers.0.qkv#1","dtype":"int8","shape":[128,256]', b'"name":"layers.0.qkv#1","dtype":"int8","shape":[129,256]',
     r"tensor 'layers.0.qkv#1' \(int8 \[129, 256\]\) has"),
    (b'"name":"layers.0.qkv#1"', b'"name":"layers.0.qkv#2"', r"row slices of 'layers.0.qkv' cover 384 rows, the config requires 512"),
])
def test_corrupt_native_tensors_are_named(kq_gguf, tmp_path, old, new, msg):
    from gemma_cpp import Model

    _, src, _, _ = kq_gguf
    data = open(src, "rb").read()
    assert data.count(old) == 1 and len(old) == len(new)
    bad = tmp_path / "bad.gcpp"
    bad.write_bytes(data.replace(old, new))
    with pytest.raises(Exception, match=msg):
        Model(str(bad))


def test_truncated_native_tensor_is_named(kq_gguf, tmp_path):
    from gemma_cpp import Model
    from gemma_cpp.gcpp_format import read_header

    _, src, _, _ = kq_gguf
    h = read_header(src)
    last = max(h.tensors, key=lambda t: t["offset"])
    data = open(src, "rb").read()
    bad = tmp_path / "short.gcpp"
    bad.write_bytes(data[:h.data_start + last["offset"] + last["nbytes"] - 1])
    with pytest.raises(Exception, match=f"tensor '{last['name']}' lies past the end of the file"):
        Model(str(bad))


# ---------------------------------------------------------------------------- q4_k / q5_0 quantisers

def _q4_0_llamacpp(x: np.ndarray) -> np.ndarray:
    """llama.cpp's Q4_0 rule (the baseline): d = (signed max-abs) / -8 in f16, q = round(x / d) + 8
    clipped to [0, 15]; returns the dequantised values."""
    b = x.reshape(-1, 32)
    mx = np.take_along_axis(b, np.abs(b).argmax(1)[:, None], 1)
    d = (mx / -8).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.where(d != 0, np.round(b / d), 0) + 8, 0, 15)
    return ((q - 8) * d).reshape(x.shape)


@pytest.mark.parametrize("dist,max_ratio", [("gauss", 0.70), ("t3", 0.55)])
def test_q4_k_quantiser_beats_q4_0(dist, max_ratio):
    """Same 4.5 bits/weight: squared error against llama.cpp's Q4_0 rule. Measured 0.668 (Gaussian)
    and 0.498 (Student t, 3 dof: heavy tails, where a per-32 minimum and 6-bit sub-scales help
    most); our symmetric int4 search: 0.89 / 0.94."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 2048)) if dist == "gauss" else rng.standard_t(3, (64, 2048))).astype(np.float32)
    x[5] = 0.0
    x[6] = -np.abs(x[6])  # all-negative and all-constant rows: the minimum term must handle them
    x[7] = 0.37
    blob = _core.quantize(x, "q4_k", 2)
    assert blob.nbytes * 8 / x.size == 4.5
    back = _core.dequantize(blob, "q4_k", *x.shape)
    assert np.array_equal(back, gguf_dequant("q4_k", blob.reshape(x.shape[0], -1), x.shape[1]))  # a valid Q4_K
    assert np.all(back[5] == 0)
    assert np.abs(back[7] - 0.37).max() < 2e-3
    ratio = float(((back - x) ** 2).sum() / ((_q4_0_llamacpp(x) - x) ** 2).sum())
    assert ratio < max_ratio, ratio


def test_q4_k_importance_weights_the_error():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((32, 512)).astype(np.float32)
    imp = np.where(np.arange(512) % 32 < 4, 50.0, 1.0).astype(np.float32)  # 4 columns per block matter
    plain = _core.dequantize(_core.quantize(x, "q4_k", 1), "q4_k", *x.shape)
    weighted = _core.dequantize(_core.quantize(x, "q4_k", 1, imp), "q4_k", *x.shape)
    werr = lambda b: float((imp * (b - x) ** 2).sum())  # noqa: E731
    assert werr(weighted) < 0.9 * werr(plain)
    with pytest.raises(ValueError, match="one weight per column"):
        _core.quantize(x, "q4_k", 1, imp[:10])
    with pytest.raises(ValueError, match="finite and >= 0"):
        _core.quantize(x, "q4_k", 1, -imp)


def test_q5_0_quantiser_is_valid_and_accurate():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 640)).astype(np.float32)
    blob = _core.quantize(x, "q5_0", 1)
    back = _core.dequantize(blob, "q5_0", *x.shape)
    assert np.array_equal(back, gguf_dequant("q5_0", blob.reshape(16, -1), 640))
    # 32 levels: about half the RMS error of 16 (Q4_0's rule), measured 0.22x the squared error
    assert ((back - x) ** 2).sum() < 0.3 * ((_q4_0_llamacpp(x) - x) ** 2).sum()


def test_q4_k_mix_vs_llamacpp_q4_0_on_a_random_checkpoint(make_ckpt, tmp_path):
    """Mean KL(f32 || 4-bit) of next-token distributions, both at 4.5 bits/weight for every matrix
    and an int8 embedding: our q4_k mix against llama.cpp's Q4_0 rule (numpy, stored as int4).
    Random Gaussian weights are the K-quants' worst case (no heavy tails); measured ratio 0.66 here,
    0.66-0.73 on Gemma 1/2/3 shapes (docs/quantization.md) — not the 0.5 the issue asks for."""
    from gemma_cpp import Model
    from gemma_cpp.convert import convert

    ckpt = make_ckpt(dict(KQ_SPEC, intermediate_size=512, num_hidden_layers=4))
    f32, ours, base = (str(tmp_path / f"{k}.gcpp") for k in ("f32", "q4_k", "q4_0"))
    convert(ckpt, f32, dtype="f32", progress=False)
    convert(ckpt, ours, dtype="q4_k", progress=False)
    write_q4_0_baseline(ckpt, base)
    assert os.path.getsize(ours) == os.path.getsize(base)
    ids = [2] + np.random.default_rng(0).integers(4, 500, 160).tolist()

    def lsm(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    ref = lsm(Model(f32).logits(ids))
    kl = {k: float((np.exp(ref) * (ref - lsm(Model(p).logits(ids)))).sum(-1).mean()) for k, p in
          (("q4_k", ours), ("q4_0", base))}
    assert kl["q4_0"] > 1e-3  # measured 3.6e-3: the comparison means something
    assert kl["q4_k"] < 0.8 * kl["q4_0"]


def test_int8_kernels_accept_q8_0_level_minus_128():
    """Q8_0 blocks import into int8 unchanged, and a GGUF writer may use the level -128 (llama.cpp's
    own rounding never does): every ISA must still compute the exact integer dots (AVX2's
    vpmaddubsw sees |-128| = 128 unsigned: 2 * 128 * 127 < 32767, no saturation)."""
    rng = np.random.default_rng(4)
    rows, cols, T = 19, 96, 5
    d = (np.abs(rng.standard_normal((rows, 3))) * 0.01).astype(np.float16)
    q = rng.integers(-128, 128, (rows, 3, 32)).astype(np.int8)
    q[:, :, :4] = -128
    raw = np.concatenate([d.view(np.uint8).reshape(rows, -1), q.view(np.uint8).reshape(rows, -1)], 1).reshape(-1)
    wd = _core.dequantize(raw, "int8", rows, cols)
    assert np.array_equal(wd, (q.astype(np.float32) * d.astype(np.float32)[..., None]).reshape(rows, cols))
    x = rng.standard_normal((T, cols)).astype(np.float32)
    x[:, :4] = 3.0  # activations at +127 meet weights at -128
    ref = x.astype(np.float64) @ wd.T.astype(np.float64)
    mag = np.abs(x).astype(np.float64) @ np.abs(wd).T.astype(np.float64)
    y_scalar = _core.matmul(raw, "int8", rows, cols, x, isa="scalar")
    assert np.all(np.abs(y_scalar - ref) <= 4e-7 * cols * mag + 1.001 * _act_quant_bound(wd, x) + 1e-6)
    for isa in ISAS:
        y = _core.matmul(raw, "int8", rows, cols, x, isa=isa)
        assert np.all(np.abs(y - y_scalar) <= 1e-5 * mag + 1e-6), isa


def test_gemma_convert_says_what_it_kept_and_info_shows_the_mix(kq_gguf, tmp_path, capsys):
    from gemma_cpp.cli import main as cpp_main
    from gemma_cpp.convert.cli import main as convert_main

    path = kq_gguf[0]
    out = str(tmp_path / "m.gcpp")
    assert convert_main([path, out]) == 0  # no --dtype: "source" for a GGUF
    said = capsys.readouterr().out
    for line in ("Q4_K -> q4_k (exact)", "Q5_K -> q5_k (exact)", "Q6_K -> q6_k (exact)", "Q5_0 -> q5_0 (exact)", "Q8_0 -> int8 (exact)",
                 "Q4_0 -> int4 (exact)", "Q4_1 -> q4_1 (exact)", "Q5_1 -> q5_1 (exact)", "F32 -> f32",
                 "Q3_K -> bf16 (NOT exact"):
        assert line in said, (line, said)
    assert cpp_main(["info", out]) == 0
    info = capsys.readouterr().out
    assert all(f"{d}: " in info for d in ("q4_k", "q5_0", "q4_1", "q5_1", "q5_k", "q6_k", "int8", "int4", "bf16")), info


def test_q4_k_quantiser_non_finite_sub_blocks_store_zeros():
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    x[0, 3], x[1, 40] = np.nan, np.inf
    blob = _core.quantize(x, "q4_k", 1)
    assert np.array_equal(blob, _core.quantize(x, "q4_k", 1))  # deterministic bytes
    back = _core.dequantize(blob, "q4_k", 2, 256)
    assert np.isfinite(back).all() and not back[0, :32].any() and not back[1, 32:64].any()
    assert np.abs(back[0, 32:] - x[0, 32:]).max() < 0.25  # the other sub-blocks are unaffected


def test_source_dtype_for_hf_keeps_the_checkpoint_float_type(make_ckpt, tmp_path):
    from gemma_cpp.convert import read_source

    for save, want in (("float32", "f32"), ("bfloat16", "bf16")):
        src = read_source(make_ckpt("g3", save_dtype=save), dtype="source")
        mats = {t.dtype for t in src.tensors if len(t.shape) == 2}
        assert mats == {want}, (save, mats)
        assert all(t.note.endswith(f"-> {want} (exact)") for t in src.tensors if len(t.shape) == 2)
