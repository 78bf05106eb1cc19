// Scalar reference for the native GGUF formats: the definition (matmul_kquant.h) written out one
// sub-block at a time. SIMD kernels compute the same integers and the same float products.
#include "kernels/matmul_kquant.h"
#include "quant/kquant.h"

namespace gemma::scalar {

namespace {

inline int32_t dot(const int8_t* w, const int8_t* x, int n) {
  int32_t s = 0;
  for (int j = 0; j < n; ++j) s += int32_t(w[j]) * int32_t(x[j]);
  return s;
}

float row_dot(DType dt, const uint8_t* row, const QuantizedActs& xq, int64_t t) {
  using namespace quant;
  const int64_t nb = xq.nb;
  const int8_t* xt = xq.q + t * nb * 32;
  const float* dx = xq.d + t * nb;
  const int32_t* sx = xq.s + t * nb;
  int8_t lvl[32];
  float acc = 0.f;
  if (dt == DType::Q5_0) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * kQ5_0Bytes;
      q5_0_levels(blk, lvl);
      acc += float(dot(lvl, xt + b * 32, 32)) * (load_f16(blk) * dx[b]);
    }
    return acc;
  }
  if (dt == DType::Q4_1 || dt == DType::Q5_1) {
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * gguf_block_bytes(dt);
      if (dt == DType::Q4_1) q4_1_levels(blk, lvl); else q5_1_levels(blk, lvl);
      acc += float(dot(lvl, xt + b * 32, 32)) * (load_f16(blk) * dx[b]);
      acc += load_f16(blk + 2) * (dx[b] * float(sx[b]));
    }
    return acc;
  }
  for (int64_t i = 0; i < nb / 8; ++i) {
    const int64_t b0 = 8 * i;
    if (dt == DType::Q4_K || dt == DType::Q5_K) {
      const uint8_t* blk = row + i * gguf_block_bytes(dt);
      const float d = load_f16(blk), dmin = load_f16(blk + 2);
      for (int c = 0; c < 8; ++c) {
        int sc, m;
        q4k_scale_min(blk + 4, c, &sc, &m);
        if (dt == DType::Q4_K) q4_k_levels(blk, c, lvl); else q5_k_levels(blk, c, lvl);
        const int64_t b = b0 + c;
        acc += float(dot(lvl, xt + b * 32, 32)) * ((d * float(sc)) * dx[b]);
        acc -= (dmin * float(m)) * (dx[b] * float(sx[b]));
      }
    } else {
      const uint8_t* blk = row + i * kQ6_KBytes;
      const float d = load_f16(blk + 208);
      for (int c = 0; c < 8; ++c) {
        int sc[2];
        q6_k_levels(blk, c, lvl, sc);
        const int64_t b = b0 + c;
        const int32_t dot_sc = sc[0] * dot(lvl, xt + b * 32, 16) + sc[1] * dot(lvl + 16, xt + b * 32 + 16, 16);
        acc += float(dot_sc) * (d * dx[b]);
      }
    }
  }
  return acc;
}

}  // namespace

void matmul_rows_kquant(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T,
                        float* Y, int64_t ldy, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = W.data + r * W.row_bytes;
    for (int64_t t = 0; t < T; ++t) Y[t * ldy + r] = row_dot(W.dtype, row, *xq, t);
  }
}

}  // namespace gemma::scalar
