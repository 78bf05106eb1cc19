// Vector kernels of attention: many dot products against one query, and a weighted sum of rows.
// Dispatched on the active ISA like matmul; vec.cpp holds the scalar reference.
#pragma once
#include <cstdint>

#include "kernels/isa.h"

namespace gemma::vec {

// out[j] = sum_i q[i] * K[j * stride + i]        for j < nk, i < n
void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out);

// out[i] += sum_j p[j] * V[j * stride + i]       for i < n, j < nk
void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out);

// Rows stored as bf16, f16 (IEEE half, wrapped in Half to tell it from bf16) or int8 with a
// float scale per block of kKvBlock values (a KV cache's element types) go through the *_multi
// kernels below. With a scale, row j's values i are scale[j * scale_stride + i / kKvBlock] * E
// (a last, shorter block has its own scale); without one (null), they are E widened to float.
constexpr int kKvBlock = 32;

struct Half {
  uint16_t bits;
};

// Several query heads against the same rows at once (grouped-query attention: the heads of a
// KV group share every K and V row, so each row is read once for all of them). Per head, the
// arithmetic is exactly that of dot_rows / weighted_sum_rows above:
//   out[h * out_stride + j] = q_h . row j,  q_h = Q + h * q_stride              (h < nq)
//   out[h * out_stride + i] += sum_j P[h * p_stride + j] * row j [i]
// E is float, uint16_t (bf16), Half (f16) or int8_t (with block scales; null scale = 1). With a scale,
// dot products are summed per block, each block's sum times its scale added in block order.
template <typename E>
void dot_rows_multi(const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride, const float* scale,
                    int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride);
template <typename E>
void weighted_sum_rows_multi(const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                             const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                             int64_t out_stride);
template <typename E>
void dot_rows_multi_isa(Isa isa, const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride,
                        const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                        int64_t out_stride);
template <typename E>
void weighted_sum_rows_multi_isa(Isa isa, const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                                 const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                                 int64_t out_stride);

// GeGLU with the tanh-approximated GELU: out[i] = gelu_tanh(gate[i]) * up[i]
// (the scalar reference is ops::geglu; SIMD versions use a polynomial exp, |error| < 1e-6).
void geglu_tanh(const float* gate, const float* up, int64_t n, float* out);
void geglu_tanh_isa(Isa isa, const float* gate, const float* up, int64_t n, float* out);

// RMSNorm of one row, the bits of ops::rms_norm (the reference): eight partial double sums of
// squares, element i into sum i mod 8 (products of floats are exact in double, so the vector
// version adds the same numbers in the same order), then out = (x * inv) * (1 + w).
void rms_norm_isa(Isa isa, const float* x, const float* one_plus_w, int64_t n, float eps, float* out);

// Attention weights from raw scores: x = softmax(cap(x * scale)) where cap(s) = c tanh(s / c)
// when softcap = c > 0 (Gemma 2), else the identity. The scalar reference is ops::soft_cap and
// ops::softmax; SIMD versions use the polynomial exp (relative error ~1e-7) and sum in lanes.
void attention_softmax(float* x, int64_t n, float scale, float softcap);
void attention_softmax_isa(Isa isa, float* x, int64_t n, float scale, float softcap);

// The same with an explicit ISA (tests compare every ISA against Isa::Scalar).
void dot_rows_isa(Isa isa, const float* q, const float* K, int64_t stride, int64_t nk, int64_t n,
                  float* out);
void weighted_sum_rows_isa(Isa isa, const float* p, const float* V, int64_t stride, int64_t nk,
                           int64_t n, float* out);

namespace scalar {
void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out);
void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out);
// One head over typed rows: the reference of the *_multi kernels (null scale = 1).
template <typename E>
void dot_rows_t(const float* q, const E* K, int64_t stride, const float* scale, int64_t scale_stride,
                int64_t nk, int64_t n, float* out);
template <typename E>
void weighted_sum_rows_t(const float* p, const E* V, int64_t stride, const float* scale, int64_t scale_stride,
                         int64_t nk, int64_t n, float* out);
}  // namespace scalar
namespace avx2 {
template <typename E>
void dot_rows_multi_t(const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride, const float* scale,
                      int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride);
template <typename E>
void weighted_sum_rows_multi_t(const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                               const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                               int64_t out_stride);
void geglu_tanh(const float* gate, const float* up, int64_t n, float* out);
void attention_softmax(float* x, int64_t n, float scale, float softcap);
void rms_norm(const float* x, const float* one_plus_w, int64_t n, float eps, float* out);
void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out);
void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out);
}  // namespace avx2
namespace avx512 {  // unscaled rows in zmm, the AVX2 kernels' bits (vec_avx512.cpp); scaled rows: AVX2
template <typename E>
void dot_rows_multi_t(const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride, const float* scale,
                      int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride);
template <typename E>
void weighted_sum_rows_multi_t(const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                               const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                               int64_t out_stride);
}  // namespace avx512

}  // namespace gemma::vec
