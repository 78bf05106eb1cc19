#!/usr/bin/env bash
# Cross-compile C++ test programs for aarch64 (NEON + dotprod kernels) and run them under
# qemu-user. Needs Debian's g++-aarch64-linux-gnu and qemu-user (CI installs them; this script
# installs nothing). Usage: tests/cpp/run_neon_qemu.sh [BUILD_DIR [PROGRAM...]], PROGRAM one of
# kernel_tests (the default) and backend_ops (the per-op tests of the NEON CPU backend; the
# scalar reference is the same code on every machine and is covered natively).
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
OUT=${1:-build/neon-qemu}
shift || true
PROGRAMS=("${@:-kernel_tests}")
command -v "$CXX" >/dev/null || { echo "missing $CXX (apt-get install g++-aarch64-linux-gnu)" >&2; exit 77; }
command -v "$QEMU" >/dev/null || { echo "missing $QEMU (apt-get install qemu-user)" >&2; exit 77; }
mkdir -p "$OUT"
FLAGS=(-std=c++17 -O2 -pthread -Icsrc -I. -DGEMMA_HAVE_NEON -ffp-contract=off -Wall -Wextra -Wno-unused-parameter)
# Only the kernel sources, the CPU backend and the KV cache (no model/io), with the flags
# cmake/sources.cmake uses; compiled once for every program.
SOURCES=(csrc/kernels/isa.cpp csrc/kernels/matmul.cpp csrc/kernels/matmul_scalar.cpp csrc/kernels/matmul_kquant_scalar.cpp
         csrc/backend/cpu/thread_pool.cpp csrc/kernels/vec.cpp csrc/kernels/ops.cpp csrc/quant/quant.cpp
         csrc/quant/kquant.cpp csrc/backend/backend.cpp csrc/backend/memory.cpp csrc/backend/cpu/cpu_backend.cpp
         csrc/model/kv_cache.cpp)
OBJS=()
for f in csrc/kernels/matmul_neon.cpp csrc/kernels/matmul_kquant_neon.cpp; do
  OBJS+=("$OUT/$(basename "${f%.cpp}").o")
  "$CXX" "${FLAGS[@]}" -march=armv8.2-a+dotprod+fp16 -c "$f" -o "${OBJS[-1]}" &
done
for f in "${SOURCES[@]}"; do
  OBJS+=("$OUT/$(basename "${f%.cpp}").o")
  "$CXX" "${FLAGS[@]}" -march=armv8-a -c "$f" -o "${OBJS[-1]}" &
  while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
done
wait
for p in "${PROGRAMS[@]}"; do
  case "$p" in
    kernel_tests) ARGS=() ;;
    backend_ops) ARGS=(--isa neon) ;;
    *) echo "unknown program $p (kernel_tests or backend_ops)" >&2; exit 2 ;;
  esac
  "$CXX" "${FLAGS[@]}" -march=armv8-a -o "$OUT/$p" "tests/cpp/$p.cpp" "${OBJS[@]}" -static
  # -cpu max enables dotprod/fp16 in the emulated CPU.
  "$QEMU" -cpu max -L /usr/aarch64-linux-gnu "$OUT/$p" "${ARGS[@]}"
done
