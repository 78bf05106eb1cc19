#!/usr/bin/env bash
# Cross-compile the kernel tests for aarch64 (NEON + dotprod kernels) and run them under
# qemu-user. Needs Debian's g++-aarch64-linux-gnu and qemu-user (CI installs them; this script
# installs nothing). Usage: tests/cpp/run_neon_qemu.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
OUT=${1:-build/neon-qemu}
command -v "$CXX" >/dev/null || { echo "missing $CXX (apt-get install g++-aarch64-linux-gnu)" >&2; exit 77; }
command -v "$QEMU" >/dev/null || { echo "missing $QEMU (apt-get install qemu-user)" >&2; exit 77; }
mkdir -p "$OUT"
FLAGS=(-std=c++17 -O2 -pthread -Icsrc -DGEMMA_HAVE_NEON -ffp-contract=off -Wall -Wextra -Wno-unused-parameter)
# Only the kernel sources (no model/io), the same files and flags cmake/sources.cmake uses.
"$CXX" "${FLAGS[@]}" -march=armv8.2-a+dotprod+fp16 -c csrc/kernels/matmul_neon.cpp -o "$OUT/matmul_neon.o"
"$CXX" "${FLAGS[@]}" -march=armv8.2-a+dotprod+fp16 -c csrc/kernels/matmul_kquant_neon.cpp -o "$OUT/matmul_kquant_neon.o"
"$CXX" "${FLAGS[@]}" -march=armv8-a -o "$OUT/kernel_tests" "$OUT/matmul_neon.o" "$OUT/matmul_kquant_neon.o" \
  tests/cpp/kernel_tests.cpp csrc/kernels/isa.cpp csrc/kernels/matmul.cpp \
  csrc/kernels/matmul_scalar.cpp csrc/kernels/matmul_kquant_scalar.cpp csrc/backend/cpu/thread_pool.cpp \
  csrc/kernels/vec.cpp csrc/kernels/ops.cpp csrc/quant/quant.cpp csrc/quant/kquant.cpp -static
# -cpu max enables dotprod/fp16 in the emulated CPU.
"$QEMU" -cpu max -L /usr/aarch64-linux-gnu "$OUT/kernel_tests"
