// Scalar reference kernels: the definition every SIMD kernel is tested against.
//
// Float weights (f32/bf16/f16): each product is accumulated in float32 in index order, one
// weight row at a time:  Y[t, r] = sum_k x[t, k] * w[r, k].
//
// Quantised weights (Q8/Q4): the canonical arithmetic of quant_canonical.h (exact integer dot
// per block, one fused multiply-add per block in ascending block order). SIMD kernels return
// exactly these bits. A Rows16 tensor's row is gathered back into the Rows layout first: the
// reference reads every layout through the same per-row code.
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_canonical.h"
#include "quant/quant.h"

namespace gemma::scalar {

namespace {

// Block b of a quantised row as 32 signed levels.
void load_block(DType dtype, const uint8_t* row, int64_t nb, int64_t b, int8_t* w, float* dw) {
  uint16_t h;
  std::memcpy(&h, row + 2 * b, 2);
  *dw = f16_to_f32(h);
  const uint8_t* qs = row + 2 * nb;
  if (dtype == DType::Q8) {
    std::memcpy(w, qs + b * quant::kBlock, quant::kBlock);
  } else {
    const uint8_t* p = qs + b * (quant::kBlock / 2);
    for (int j = 0; j < quant::kBlock / 2; ++j) {
      w[j] = int8_t((p[j] & 15) - 8);
      w[j + quant::kBlock / 2] = int8_t((p[j] >> 4) - 8);
    }
  }
}

void matmul_rows_quant(const WeightView& W, const QuantizedActs& xq, int64_t T, float* Y,
                       int64_t ldy, int64_t r0, int64_t r1) {
  const int64_t nb = xq.nb;
  int8_t w[quant::kBlock];
  std::vector<uint8_t> buf(size_t(W.row_bytes));
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = plain_row(W, r, buf.data());
    for (int64_t t = 0; t < T; ++t) {
      float acc = 0.f;
      for (int64_t b = 0; b < nb; ++b) {
        float dw;
        load_block(W.dtype, row, nb, b, w, &dw);
        const int8_t* x = xq.q + (t * nb + b) * quant::kBlock;
        int32_t dot = 0;
        for (int j = 0; j < quant::kBlock; ++j) dot += int32_t(w[j]) * int32_t(x[j]);
        acc = canonical_block_step(dot, dw, xq.d[t * nb + b], acc);
      }
      Y[t * ldy + r] = acc;
    }
  }
}

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  if (is_quantized(W.dtype)) {
    matmul_rows_quant(W, *xq, T, Y, ldy, r0, r1);
    return;
  }
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
