#!/usr/bin/env bash
# Development build: compiles gemma_cpp._core into python/gemma_cpp/ (use PYTHONPATH=python).
# `pip install .` is the real install (it fetches its build tools itself); this is for fast
# edit-compile-test loops and needs pybind11 and cmake in the current environment (ninja is
# used when present, else Make).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
missing=()
PYBIND11_DIR=$("$PY" -m pybind11 --cmakedir 2>/dev/null) || missing+=(pybind11)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
if ((${#missing[@]})); then
  echo "dev-build.sh: missing ${missing[*]}; install the build tools with: $PY -m pip install pybind11 cmake ninja" >&2
  exit 1
fi
GEN=()
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja); fi
BUILD=${BUILD_DIR:-build/dev}
if [[ -f "$BUILD/CMakeCache.txt" ]] && ! grep -q "CMAKE_GENERATOR:INTERNAL=${GEN[1]:-Unix Makefiles}$" "$BUILD/CMakeCache.txt"; then
  BUILD="$BUILD-$( ((${#GEN[@]})) && echo ninja || echo make)"  # a build dir keeps its generator
fi
cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DGEMMA_BUILD_TESTS=${GEMMA_BUILD_TESTS:-OFF} \
  -DPython_EXECUTABLE="$(command -v "$PY")" -Dpybind11_DIR="$PYBIND11_DIR" >/dev/null
cmake --build "$BUILD" -j2
