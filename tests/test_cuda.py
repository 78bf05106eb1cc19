"""The CUDA backend (docs/cuda.md).

Always run: device strings (Model, CLI) and their errors; what system_info() says about CUDA; that
asking for a GPU where there is none (a CPU-only build, or a CUDA build on a machine without a GPU
or driver) raises DeviceError with the reason and the way out.

With a GPU and a CUDA build (else skipped, with the reason): every op of the CUDA backend against
the CPU scalar reference (tests/cpp/backend_ops_cuda.cpp: the per-op harness of backend_ops.h,
built into build/cuda by benchmarks/cuda_check.sh, or named by GEMMA_CUDA_OPS_BIN), and the whole
model's logits on the tiny Gemma 1/2/3 checkpoints against the CPU path: f32 weights within 1e-4
of the logit range (the bar the CPU path meets against transformers); int8/int4 within 1e-3 of
it (their matmuls give the CPU's bits, but the float ops around them differ by ulps, and an
activation that lands on a rounding boundary of its int8 quantisation moves by one level)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gemma_cpp
from gemma_cpp import DeviceError, InvalidRequestError, Model
from gemma_cpp.device import parse_device
from tests.conftest import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INFO = gemma_cpp.system_info()
NO_GPU = None if INFO["gpus"] else f"no CUDA GPU here: {INFO['cuda']}"


# ---------------------------------------------------------------------------- always
@pytest.mark.parametrize("s, want", [("cpu", "cpu"), ("cuda", "cuda:0"), ("cuda:0", "cuda:0"), ("cuda:12", "cuda:12")])
def test_device_strings(s, want):
    assert parse_device(s) == want


@pytest.mark.parametrize("bad", ["gpu", "CUDA", "cuda:", "cuda:-1", "cuda:x", "cuda0", " cpu", "", "metal", 0, None])
def test_unknown_devices_are_invalid_requests(bad):
    with pytest.raises(InvalidRequestError) as e:
        parse_device(bad)
    assert e.value.param == "device"
    assert "cuda:N" in str(e.value)


def test_system_info_lists_gpus():
    assert isinstance(INFO["cuda_built"], bool)
    assert isinstance(INFO["gpus"], list)
    if not INFO["cuda_built"]:
        assert INFO["gpus"] == []
        assert "built without CUDA" in INFO["cuda"] and "GEMMA_CUDA=ON" in INFO["cuda"]
    for g in INFO["gpus"]:
        assert {"index", "name", "memory_bytes", "compute_capability", "peak_bandwidth_gbs"} <= set(g)
    if INFO["gpus"]:
        assert INFO["cuda"] == "available"
    elif INFO["cuda_built"]:
        assert INFO["cuda"].startswith("no usable CUDA GPU")


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: the no-GPU errors cannot be seen here")
def test_cuda_without_a_gpu_is_a_device_error(make_gcpp):
    path = make_gcpp("g1_mqa")
    with pytest.raises(DeviceError) as e:
        Model(path, device="cuda")
    msg = str(e.value)
    assert "cuda:0" in msg
    if INFO["cuda_built"]:
        assert "no usable CUDA GPU" in msg
    else:
        assert "pip install . -C cmake.define.GEMMA_CUDA=ON" in msg
    assert isinstance(e.value, RuntimeError)
    assert Model(path, device="cpu").device == "cpu"


def test_unknown_device_in_model_and_cli(make_gcpp):
    path = make_gcpp("g1_mqa")
    with pytest.raises(InvalidRequestError, match="unknown device 'tpu'"):
        Model(path, device="tpu")
    env = subprocess_env()
    r = subprocess.run([sys.executable, "-m", "gemma_cpp.cli", "run", path, "hi", "-n", "1", "--device", "tpu"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "unknown device 'tpu'" in r.stderr, r.stderr
    if NO_GPU:
        r = subprocess.run([sys.executable, "-m", "gemma_cpp.cli", "run", path, "hi", "-n", "1", "--device", "cuda"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 1 and "cuda:0" in r.stderr and "\n" == r.stderr[-1], r.stderr


# ---------------------------------------------------------------------------- with a GPU
def _ops_binary() -> str | None:
    for exe in (os.environ.get("GEMMA_CUDA_OPS_BIN"), os.path.join(ROOT, "build", "cuda", "backend_ops_cuda")):
        if exe and os.path.exists(exe):
            return exe
    return None


@pytest.mark.skipif(bool(NO_GPU), reason=NO_GPU or "")
def test_backend_ops_cuda():
    exe = _ops_binary()
    if exe is None:
        pytest.skip("backend_ops_cuda is not built (benchmarks/cuda_check.sh builds it into build/cuda)")
    r = subprocess.run([exe], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "backend_ops_cuda: 0 failures" in r.stdout


@pytest.mark.skipif(bool(NO_GPU), reason=NO_GPU or "")
@pytest.mark.parametrize("spec", ["g1_mqa", "g1_gqa", "g2", "g3", "g3_scaled"])
@pytest.mark.parametrize("dtype, rel", [("f32", 1e-4), ("bf16", 1e-4), ("int8", 1e-3), ("int4", 1e-3)])
def test_logits_match_the_cpu(make_gcpp, spec, dtype, rel):
    path = make_gcpp(spec, dtype)
    ids = [2] + [int(i) for i in np.random.default_rng(0).integers(4, 500, 40)]
    cpu = Model(path, device="cpu").logits(ids)
    gpu = Model(path, device="cuda")
    got = gpu.logits(ids)
    tol = rel * float(cpu.max() - cpu.min())
    assert np.abs(got - cpu).max() <= tol, (spec, dtype, float(np.abs(got - cpu).max()), tol)
    # Decode steps after a prefill give the one prefill's logits (the determinism rule, on the device).
    s = gpu._session
    s.reset()
    rows = [s.eval(ids[:20], all_logits=True)] + [s.eval([i], all_logits=True) for i in ids[20:]]
    assert np.array_equal(np.concatenate(rows), got), spec


@pytest.mark.skipif(bool(NO_GPU), reason=NO_GPU or "")
def test_int8_kv_cache_is_refused_on_cuda(make_gcpp):
    with pytest.raises(ValueError, match="not supported on a CUDA device"):
        Model(make_gcpp("g1_mqa"), device="cuda", kv_dtype="int8")
