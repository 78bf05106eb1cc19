"""The native GGUF block formats (q5_0, q4_k, q6_k; csrc/quant/kquant.h) and their kernels.

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

import numpy as np
import pytest

from gemma_cpp import _core

ISAS = _core.available_isas()
GGUF_TYPES = {"q5_0": ("Q5_0", 32, 22), "q4_k": ("Q4_K", 256, 144), "q6_k": ("Q6_K", 256, 210)}
# byte offsets of the f16 scales inside a block (d, and dmin for Q4_K)
_F16_AT = {"q5_0": [0], "q4_k": [0, 2], "q6_k": [208]}


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
