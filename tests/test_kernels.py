"""Matmul kernels and the int8/int4 formats, from Python.

Every ISA this CPU supports is checked against the scalar reference (same math, so agreement
to float rounding) and against numpy (float math on the dequantised weights; for int8/int4 the
difference is the activation quantisation, bounded exactly below). Then whole models: every
--dtype converts, loads and generates; int8/int4 quality against f32; scalar vs SIMD greedy.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env

from gemma_cpp import Model, _core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DTYPES = ["f32", "bf16", "f16", "int8", "int4"]
ISAS = _core.available_isas()
# rows, cols, tokens: nothing a multiple of 32 or of the vector width except where noted.
SIZES = [(1, 7, 1), (37, 75, 1), (67, 300, 3), (130, 257, 17), (96, 64, 40), (200, 1001, 2)]


def _act_quant_bound(wd: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact bound on |X Wd^T - (X quantised) Wd^T| when each 32-block of x is rounded to
    steps of dx = max|x_block| / 127: |error| <= sum_k |w_k| dx_block(k) / 2."""
    T, K = x.shape
    nb = -(-K // 32)
    xp = np.zeros((T, nb * 32))
    xp[:, :K] = np.abs(x)
    dx = xp.reshape(T, nb, 32).max(-1) / 127.0
    step = np.repeat(dx, 32, axis=1)[:, :K]
    return step @ np.abs(wd).T.astype(np.float64) / 2.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_every_isa_vs_scalar_vs_numpy(dtype):
    rng = np.random.default_rng(7)
    for rows, cols, T in SIZES:
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        x = rng.standard_normal((T, cols)).astype(np.float32)
        x[:, rng.integers(0, cols)] *= 30.0  # an activation outlier column, as real models have
        wb = _core.quantize(w, dtype, 1)
        wd = _core.dequantize(wb, dtype, rows, cols)
        ref = x.astype(np.float64) @ wd.T.astype(np.float64)
        mag = np.abs(x).astype(np.float64) @ np.abs(wd).T.astype(np.float64)  # sum |x w|
        y_scalar = _core.matmul(wb, dtype, rows, cols, x, isa="scalar")
        # float32 summation of K terms: |error| <= ~K eps sum|xw|; use a generous 4e-7 * K.
        tol = 4e-7 * cols * mag + 1e-6
        if dtype in ("int8", "int4"):
            tol = tol + 1.001 * _act_quant_bound(wd, x)
        assert np.all(np.abs(y_scalar - ref) <= tol), (dtype, rows, cols, T)
        for isa in ISAS:
            for threads in (1, 2):
                y = _core.matmul(wb, dtype, rows, cols, x, isa=isa, n_threads=threads)
                # Same products (integers for int8/int4); only the addition order differs.
                if isa == "scalar":  # the reference is deterministic across thread counts
                    assert np.array_equal(y, y_scalar)
                assert np.all(np.abs(y - y_scalar) <= 1e-5 * mag + 1e-6), (isa, dtype, rows, cols, T, threads)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_batch_invariant(dtype):
    """The determinism rule at the kernel level: an output row of token t has the same bits
    whether t comes alone (decode), in a batch of any size (prefill, in any token tile), or
    with any thread count. int8/int4 kernels compute the canonical arithmetic of
    csrc/kernels/quant_canonical.h, so they also equal the scalar reference bit for bit on
    every ISA; float kernels only promise invariance within one ISA."""
    rng = np.random.default_rng(11)
    for rows, cols, T in [(37, 75, 19), (130, 257, 17), (200, 1001, 11), (64, 640, 33)]:
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        x = rng.standard_normal((T, cols)).astype(np.float32)
        wb = _core.quantize(w, dtype, 1)
        y_scalar = _core.matmul(wb, dtype, rows, cols, x, isa="scalar")
        for isa in ISAS:
            y = _core.matmul(wb, dtype, rows, cols, x, isa=isa, n_threads=2)
            if dtype in ("int8", "int4"):
                assert np.array_equal(y, y_scalar), (isa, dtype, rows, cols, T)
            alone = np.concatenate([_core.matmul(wb, dtype, rows, cols, x[t:t + 1], isa=isa) for t in range(T)])
            assert np.array_equal(y, alone), (isa, dtype, rows, cols, T)
            cut = [0, 3, 4, 12, T]  # chunks of 3, 1, 8, rest: every token tile shape and tail
            chunks = np.concatenate([_core.matmul(wb, dtype, rows, cols, x[a:b], isa=isa, n_threads=1)
                                     for a, b in zip(cut, cut[1:])])
            assert np.array_equal(y, chunks), (isa, dtype, rows, cols, T)


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_rows16_layout_gives_the_same_bits(dtype):
    """The Rows16 kernel layout (groups of 16 rows interleaved; csrc/quant/quant.h) only moves
    bytes: it dequantises to the same values, and every ISA, thread count and token count gives
    the scalar reference's bits of the Rows layout (the canonical arithmetic). Row counts that
    are not a multiple of 16 exercise the zero padding of the last group."""
    rng = np.random.default_rng(16)
    # T >= 16 exercises the AMX tiles (16 tokens each) and their T % 16 tail, where the CPU has them.
    for rows, cols, T in [(16, 32, 1), (37, 75, 1), (33, 300, 9), (130, 257, 17), (64, 640, 8), (200, 1001, 3),
                          (16, 32, 16), (70, 520, 50), (48, 96, 35)]:
        w = rng.standard_normal((rows, cols)).astype(np.float32)
        x = rng.standard_normal((T, cols)).astype(np.float32)
        wb = _core.quantize(w, dtype, 1)
        w16 = _core.interleave_rows16(wb, dtype, rows, cols)
        assert w16.nbytes == _core.tensor_bytes(dtype, "rows16", rows, cols) == -(-rows // 16) * 16 * wb.nbytes // rows
        assert not np.array_equal(w16[:wb.nbytes], wb) or rows == 1  # really moved
        np.testing.assert_array_equal(_core.dequantize(w16, dtype, rows, cols, layout="rows16"),
                                      _core.dequantize(wb, dtype, rows, cols))
        y_ref = _core.matmul(wb, dtype, rows, cols, x, isa="scalar")
        for isa in ISAS:
            for threads in (1, 2):
                y = _core.matmul(w16, dtype, rows, cols, x, isa=isa, n_threads=threads, layout="rows16")
                assert np.array_equal(y, y_ref), (isa, dtype, rows, cols, T, threads)
            alone = np.concatenate([_core.matmul(w16, dtype, rows, cols, x[t:t + 1], isa=isa, layout="rows16")
                                    for t in range(T)])
            assert np.array_equal(alone, y_ref), (isa, dtype, rows, cols, T)
    with pytest.raises(ValueError, match="rows16 holds int8 or int4"):
        _core.tensor_bytes("bf16", "rows16", 16, 32)
    with pytest.raises(ValueError, match=r"bytes, expected \d+ for int8 rows16"):
        _core.matmul(np.zeros(10, np.uint8), "int8", 16, 32, np.zeros((1, 32), np.float32), layout="rows16")


def test_int8_activation_error_is_not_zero_and_within_bound():
    # Guards the bound above against being vacuous: the int8 result really differs from the float
    # product, and by a fair fraction of the bound (so it is not absurdly loose).
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    wb = _core.quantize(w, "int8", 1)
    wd = _core.dequantize(wb, "int8", 64, 256)
    err = np.abs(_core.matmul(wb, "int8", 64, 256, x, isa="scalar") - x.astype(np.float64) @ wd.T)
    bound = _act_quant_bound(wd, x)
    assert err.max() > 0
    assert np.all(err <= bound)
    assert err.max() > 0.02 * bound.max()


@pytest.mark.parametrize("dtype,bits", [("int8", 8.5), ("int4", 4.5)])
def test_row_bytes_padded_blocks(dtype, bits):
    for cols in (1, 31, 32, 33, 2048, 2049):
        nb = -(-cols // 32)
        assert _core.row_bytes(dtype, cols) == nb * 32 * bits / 8


def _naive(x: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """Max-abs block quantiser (the baseline the stored scale must beat), f16 scale."""
    rows, cols = x.shape
    nb = -(-cols // 32)
    xp = np.zeros((rows, nb * 32), np.float32)
    xp[:, :cols] = x
    b = xp.reshape(rows, nb, 32)
    idx = np.abs(b).argmax(-1)
    xm = np.take_along_axis(b, idx[..., None], -1)
    d = (xm / (qmin if -qmin > qmax else qmax)).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.where(d != 0, np.rint(b / d), 0), qmin, qmax)
    return (q * d).reshape(rows, nb * 32)[:, :cols]


@pytest.mark.parametrize("dtype,qmin,qmax", [("int8", -127, 127), ("int4", -8, 7)])
def test_roundtrip_error(dtype, qmin, qmax):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 333)).astype(np.float32)
    x[3] = 0.0
    x[4, 10] = 50.0  # an outlier
    x[5] *= 1e-3     # a small-scale row: scales are relative
    back = _core.dequantize(_core.quantize(x, dtype, 2), dtype, *x.shape)
    assert np.all(back[3] == 0)
    err = back - x
    sse, sse_naive = float((err ** 2).sum()), float(((_naive(x, qmin, qmax) - x) ** 2).sum())
    assert sse <= sse_naive  # the scale search never loses to max-abs
    assert sse < 0.99 * sse_naive  # ... and measurably wins (3-5% on Gaussian blocks)
    # Relative RMS error on Gaussian data: a uniform rounding error of step d has RMS d/sqrt(12);
    # d ~ 2.1 sigma / 127 (int8) or 2.1 sigma / 8 (int4), i.e. ~0.5% and ~7.5% of sigma.
    g = np.delete(x, [3, 4, 5], 0)
    rel = np.sqrt(((np.delete(back, [3, 4, 5], 0) - g) ** 2).mean() / (g ** 2).mean())
    assert rel < {"int8": 0.006, "int4": 0.09}[dtype], rel
    assert np.abs(err[5]).max() < 1e-3 * {"int8": 0.03, "int4": 0.4}[dtype]


def test_cpp_kernel_tests_binary(cpp_test_binary):
    """The C++ kernel tests (tests/cpp/kernel_tests.cpp): the dev build's binary, or a fresh build."""
    r = subprocess.run([cpp_test_binary("kernel_tests")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failures" in r.stdout, r.stdout


def test_neon_kernels_under_qemu(neon_qemu):
    """Cross-compiles the kernel tests for aarch64 and runs the NEON dotprod kernels in qemu."""
    assert "ISAs available: scalar neon" in neon_qemu and "kernel_tests: " in neon_qemu, neon_qemu
    assert [line for line in neon_qemu.splitlines() if line.startswith("kernel_tests: ") and "checks" in line][0] \
        .endswith(" 0 failures"), neon_qemu


# ---------------------------------------------------------------------------- whole models

@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_converts_loads_and_generates(make_ckpt, tmp_path, dtype):
    ckpt = make_ckpt("g1_mqa")
    out = str(tmp_path / f"m.{dtype}.gcpp")
    r = subprocess.run([sys.executable, "-m", "gemma_cpp.convert.cli", ckpt, out, "--dtype", dtype, "-q"],
                       capture_output=True, text=True, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    m = Model(out, n_threads=2)
    assert m.config.weight_dtype == dtype
    ids = m.generate([2, 10, 20, 30], max_new_tokens=6, ignore_eos=True)
    assert len(ids) == 6 and all(0 <= i < m.config.vocab_size for i in ids)
    assert np.isfinite(m.logits([2, 10, 20])).all()


def test_file_sizes_follow_bits_per_weight(make_gcpp):
    size = {dt: os.path.getsize(make_gcpp("g1_mqa", dtype=dt)) for dt in ("f32", "bf16", "int8", "int4")}
    assert size["int4"] < size["int8"] < size["bf16"] < size["f32"]


def _log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _quality(make_gcpp, spec, dtype, ids):
    pf = _log_softmax(Model(make_gcpp(spec, dtype="f32"), n_threads=2).logits(ids))
    pq = _log_softmax(Model(make_gcpp(spec, dtype=dtype), n_threads=2).logits(ids))
    kl = (np.exp(pf) * (pf - pq)).sum(-1)
    s = np.sort(pf, -1)
    confident = s[:, -1] - s[:, -2] > 0.1  # top-1 is only meaningful where f32 is not a near-tie
    agree = (pf.argmax(-1) == pq.argmax(-1))[confident].mean()
    return kl.mean(), agree, confident.sum()


# Thresholds, measured on the g3 tiny model (random weights: near-uniform outputs, entropy
# ~5.8 nats of ln 512 = 6.2, so top-1 often hinges on small margins; we count top-1 only where
# f32's top-2 margin exceeds 0.1 nats). Expected error amplitudes: bf16 ~0.1%, int8 ~0.5% of each
# weight plus ~0.5% from the int8 activations, int4 ~7.5%; KL grows with the square.
# Measured: bf16 KL 3e-5; int8 KL 4e-4 (agreement 100%); int4 KL 0.058 (agreement 68%).
# Thresholds leave ~10x margin on KL for int8 (near-lossless: < 0.005 nats) and ~3x for int4.
def test_int8_quality_near_lossless(make_gcpp):
    ids = [2] + list(np.random.default_rng(0).integers(4, 512, 160))
    kl, agree, n = _quality(make_gcpp, "g3", "int8", ids)
    assert n > 50
    assert kl < 5e-3, kl
    assert agree >= 0.95, agree


def test_int4_quality(make_gcpp):
    ids = [2] + list(np.random.default_rng(0).integers(4, 512, 160))
    kl, agree, n = _quality(make_gcpp, "g3", "int4", ids)
    kl8, _, _ = _quality(make_gcpp, "g3", "int8", ids)
    assert kl < 0.2, kl
    assert agree >= 0.5, agree  # chance is 1/512
    assert kl8 < kl / 10  # int8 is an order of magnitude closer than int4


_GREEDY = """
import sys, json, numpy as np
from gemma_cpp import Model, _core
m = Model(sys.argv[1], n_threads=2)
ids = m.generate([2, 5, 9, 14, 200], max_new_tokens=24, ignore_eos=True)
print(json.dumps({"isa": _core.active_isa(), "ids": ids,
                  "logits": m.logits([2, 5, 9, 14, 200] + ids).tolist()}))
"""


@pytest.mark.parametrize("dtype", ["f32", "int4"])
def test_greedy_same_on_scalar_and_best_isa(make_gcpp, dtype):
    import json

    best = ISAS[-1]
    if best == "scalar":
        pytest.skip("no SIMD ISA available on this CPU/build")
    path = make_gcpp("g1_mqa", dtype=dtype)
    out = {}
    for isa in ("scalar", best):
        env = subprocess_env(GEMMA_CPP_ISA=isa)
        r = subprocess.run([sys.executable, "-c", _GREEDY, path], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        out[isa] = json.loads(r.stdout)
        assert out[isa]["isa"] == isa
    # Same math up to float summation order: logits agree to ~1e-5 relative, and greedy tokens
    # (which would only flip on an exact near-tie) are identical.
    a, b = np.array(out["scalar"]["logits"]), np.array(out[best]["logits"])
    assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max()
    assert out["scalar"]["ids"] == out[best]["ids"]
