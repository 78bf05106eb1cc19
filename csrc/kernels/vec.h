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

// The same over rows stored as bf16 or as int8 with one float scale per row (a KV cache's
// element types): row j holds values scale[j * scale_stride] * K8[j * stride + i].
void dot_rows_bf16(const float* q, const uint16_t* K, int64_t stride, int64_t nk, int64_t n, float* out);
void weighted_sum_rows_bf16(const float* p, const uint16_t* V, int64_t stride, int64_t nk, int64_t n,
                            float* out);
void dot_rows_q8(const float* q, const int8_t* K, int64_t stride, const float* scale, int64_t scale_stride,
                 int64_t nk, int64_t n, float* out);
void weighted_sum_rows_q8(const float* p, const int8_t* V, int64_t stride, const float* scale,
                          int64_t scale_stride, int64_t nk, int64_t n, float* out);

// GeGLU with the tanh-approximated GELU: out[i] = gelu_tanh(gate[i]) * up[i]
// (the scalar reference is ops::geglu; SIMD versions use a polynomial exp, |error| < 1e-6).
void geglu_tanh(const float* gate, const float* up, int64_t n, float* out);
void geglu_tanh_isa(Isa isa, const float* gate, const float* up, int64_t n, float* out);

// The same with an explicit ISA (tests compare every ISA against Isa::Scalar).
void dot_rows_isa(Isa isa, const float* q, const float* K, int64_t stride, int64_t nk, int64_t n,
                  float* out);
void weighted_sum_rows_isa(Isa isa, const float* p, const float* V, int64_t stride, int64_t nk,
                           int64_t n, float* out);

// Typed rows with an explicit ISA, for the tests.
void dot_rows_bf16_isa(Isa isa, const float* q, const uint16_t* K, int64_t stride, int64_t nk, int64_t n,
                       float* out);
void weighted_sum_rows_bf16_isa(Isa isa, const float* p, const uint16_t* V, int64_t stride, int64_t nk,
                                int64_t n, float* out);
void dot_rows_q8_isa(Isa isa, const float* q, const int8_t* K, int64_t stride, const float* scale,
                     int64_t scale_stride, int64_t nk, int64_t n, float* out);
void weighted_sum_rows_q8_isa(Isa isa, const float* p, const int8_t* V, int64_t stride, const float* scale,
                              int64_t scale_stride, int64_t nk, int64_t n, float* out);

namespace scalar {
void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out);
void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out);
template <typename E>
void dot_rows_t(const float* q, const E* K, int64_t stride, const float* scale, int64_t scale_stride,
                int64_t nk, int64_t n, float* out);
template <typename E>
void weighted_sum_rows_t(const float* p, const E* V, int64_t stride, const float* scale, int64_t scale_stride,
                         int64_t nk, int64_t n, float* out);
}  // namespace scalar
namespace avx2 {
template <typename E>
void dot_rows_t(const float* q, const E* K, int64_t stride, const float* scale, int64_t scale_stride,
                int64_t nk, int64_t n, float* out);
template <typename E>
void weighted_sum_rows_t(const float* p, const E* V, int64_t stride, const float* scale, int64_t scale_stride,
                         int64_t nk, int64_t n, float* out);
void geglu_tanh(const float* gate, const float* up, int64_t n, float* out);
void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out);
void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out);
}  // namespace avx2

}  // namespace gemma::vec
