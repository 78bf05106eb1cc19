#!/usr/bin/env bash
# Development build: compiles gemma_cpp._core into python/gemma_cpp/ (use PYTHONPATH=python).
# `pip install .` is the real install; this is for fast edit-compile-test loops.
set -euo pipefail
cd "$(dirname "$0")"
BUILD=${BUILD_DIR:-build/dev}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGEMMA_BUILD_TESTS=${GEMMA_BUILD_TESTS:-OFF} \
  -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD" -j2
