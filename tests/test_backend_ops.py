"""The per-op backend tests (tests/cpp/backend_ops.h, in the spirit of llama.cpp's
test-backend-ops): every op of the CPU backend on each ISA this machine supports, against the
backend pinned to the scalar kernels, on random shapes (odd sizes, K not a multiple of the block,
T = 1 and T > 1, every weight dtype and KV cache dtype), with the tolerances derived there; and
the determinism rule per op (a token alone = its row of a chunk, any thread count)."""

from __future__ import annotations

import subprocess

import pytest

from gemma_cpp import _core

# AVX-512 and AVX2 runs need a CPU that has them: the ISAs missing here are reported as skipped.
# NEON runs natively on aarch64, elsewhere cross-compiled under qemu-user when it is installed.
ALL_ISAS = ["scalar", "avx2", "avx512", "neon"]


@pytest.mark.parametrize("isa", ALL_ISAS)
def test_backend_ops(cpp_test_binary, request, isa):
    if isa == "neon" and isa not in _core.available_isas():
        out = request.getfixturevalue("neon_qemu")
        assert "backend_ops cpu/neon vs cpu/scalar" in out and "backend_ops: 0 failures" in out, out[-6000:]
        return
    if isa not in _core.available_isas():
        pytest.skip(f"this CPU/build has no {isa} (available: {', '.join(_core.available_isas())})")
    r = subprocess.run([cpp_test_binary("backend_ops"), "--isa", isa], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert f"cpu/{isa} vs cpu/scalar" in r.stdout and " 0 failures" in r.stdout, r.stdout[-6000:]
