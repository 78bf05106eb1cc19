// Scalar reference kernels: the definition every SIMD kernel is tested against.
// Each product is accumulated in float32 in index order, one weight row at a time.
#include <vector>

#include "kernels/matmul.h"
#include "quant/quant.h"

namespace gemma::scalar {

void matmul_rows(const WeightView& W, const float* X, int64_t T, float* Y, int64_t ldy, int64_t r0,
                 int64_t r1) {
  const int64_t K = W.cols;
  thread_local std::vector<float> row;
  if (row.size() < size_t(K)) row.resize(size_t(K));
  for (int64_t r = r0; r < r1; ++r) {
    const float* w;
    if (W.dtype == DType::F32) {
      w = reinterpret_cast<const float*>(W.data + r * W.row_bytes);
    } else {
      quant::dequantize_row(W.dtype, W.data + r * W.row_bytes, K, row.data());
      w = row.data();
    }
    for (int64_t t = 0; t < T; ++t) {
      const float* x = X + t * K;
      float acc = 0.f;
      for (int64_t k = 0; k < K; ++k) acc += w[k] * x[k];
      Y[t * ldy + r] = acc;
    }
  }
}

}  // namespace gemma::scalar
