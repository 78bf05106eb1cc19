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
  int64_t row_bytes = 0;  // bytes of one row (quant::row_bytes); Rows: also the stride
  Layout layout = Layout::Rows;  // Rows16 (int8/int4): groups of 16 rows interleaved (quant.h)
};

// Row r of W in the Rows layout: a pointer into W for Rows, else gathered into `buf` (which
// must hold W.row_bytes bytes). For the scalar reference, embedding lookups and NEON.
const uint8_t* plain_row(const WeightView& W, int64_t r, uint8_t* buf);

// Bytes one row of `cols` elements occupies in format `dtype`.
int64_t row_bytes(DType dtype, int64_t cols);

class ThreadPool;

// Y (T x ldy, first W.rows columns written) = X (T x W.cols) * W^T, output rows split over the
// pool's threads in contiguous chunks (threads never split a reduction).
void matmul(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy, ThreadPool& pool);

// Same with an explicit ISA (tests compare every ISA against Isa::Scalar).
void matmul_isa(Isa isa, const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                ThreadPool& pool);
// Same on a pool of n_threads made for this call (tests and the Python binding).
void matmul_isa(Isa isa, const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy,
                int n_threads);

// Row r of W as float32 (embedding lookup of a quantised/bf16 table).
void dequantize_row(const WeightView& W, int64_t r, float* out);

// Activations quantised for the int8/int4 kernels, once per matmul (shared by every ISA, so all
// kernels see the same integers): token t, block b holds 32 int8 q in [-127, 127] with
// x ~= d * q, d = max|x| / 127 over the block (columns past cols are 0), and s = sum of the q.
struct QuantizedActs {
  const int8_t* q = nullptr;   // [T][nb * 32]
  const float* d = nullptr;    // [T][nb]
  const int32_t* s = nullptr;  // [T][nb]
  int64_t nb = 0;              // blocks per token (= quant::n_blocks(cols))
};

// Fills q/d/s for T rows of X (each `cols` floats); buffers sized T * nb * 32, T * nb, T * nb.
// This is the reference; quantize_activations_isa runs the ISA's version (same bits, tested).
void quantize_activations(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, int32_t* s);
void quantize_activations_isa(Isa isa, const float* X, int64_t T, int64_t cols, int8_t* q, float* d, int32_t* s);
namespace avx2 {
void quantize_activations(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, int32_t* s);
}
namespace neon {
void quantize_activations(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, int32_t* s);
}

// Per-ISA kernel: rows [r0, r1) of the product. Implemented in matmul_<isa>.cpp. For Q8/Q4
// weights `xq` holds X quantised (quantize_activations); for float weights it is null.
using MatmulRowsFn = void (*)(const WeightView& W, const float* X, const QuantizedActs* xq,
                              int64_t T, float* Y, int64_t ldy, int64_t r0, int64_t r1);

inline bool is_quantized(DType t) {
  return t == DType::Q8 || t == DType::Q4 || t == DType::Q5_0 || t == DType::Q4_K || t == DType::Q6_K ||
         t == DType::Q5_K || t == DType::Q4_1 || t == DType::Q5_1;
}

#define GEMMA_DECLARE_MATMUL_ROWS(ns)                                                             \
  namespace ns {                                                                                  \
  void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T,      \
                   float* Y, int64_t ldy, int64_t r0, int64_t r1);                               \
  }
GEMMA_DECLARE_MATMUL_ROWS(scalar)
GEMMA_DECLARE_MATMUL_ROWS(avx2)
GEMMA_DECLARE_MATMUL_ROWS(avx512)
GEMMA_DECLARE_MATMUL_ROWS(amx)  // AVX-512 + AMX tiles for int8/int4 prefill (matmul_amx.cpp)
GEMMA_DECLARE_MATMUL_ROWS(neon)

}  // namespace gemma
