// Weight-times-activation products: the hot path of every forward pass.
//
//   Y[t, r] = sum_k X[t, k] * W[r, k]     for t < T (tokens), r < rows (output features)
//
// T = 1 is decode (a matrix-vector product, memory bound); T > 1 is prefill (compute bound).
// W is stored row-major in one of the DType formats; X and Y are float32.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/dtype.h"
#include "kernels/isa.h"

namespace gemma {

// A weight matrix as it lies in the mapped file (never copied).
struct WeightView {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_bytes = 0;  // bytes from one row to the next (quant::row_bytes for quantised types)
};

// Bytes one row of `cols` elements occupies in format `dtype`.
int64_t row_bytes(DType dtype, int64_t cols);

// Y (T x ldy, first W.rows columns written) = X (T x W.cols) * W^T, split over n_threads.
void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy, int n_threads);

// Same with an explicit ISA (tests compare every ISA against Isa::Scalar).
void matmul_isa(Isa isa, const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                int n_threads);

// Row r of W as float32 (embedding lookup of a quantised/bf16 table).
void dequantize_row(const WeightView& W, int64_t r, float* out);

// Per-ISA kernel: rows [r0, r1) of the product. Implemented in matmul_<isa>.cpp.
using MatmulRowsFn = void (*)(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                              int64_t r0, int64_t r1);

namespace scalar {
void matmul_rows(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy, int64_t r0,
                 int64_t r1);
}

}  // namespace gemma
