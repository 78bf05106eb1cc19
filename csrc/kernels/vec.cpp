// Scalar reference of the attention vector kernels, and their dispatch.
#include "kernels/vec.h"

#include <algorithm>

#include "kernels/dtype.h"
#include "kernels/ops.h"

namespace gemma::vec {

namespace scalar {
void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out) {
  for (int64_t j = 0; j < nk; ++j) {
    const float* k = K + j * stride;
    float s = 0.f;
    for (int64_t i = 0; i < n; ++i) s += q[i] * k[i];
    out[j] = s;
  }
}

void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out) {
  for (int64_t j = 0; j < nk; ++j) {
    const float* v = V + j * stride;
    for (int64_t i = 0; i < n; ++i) out[i] += p[j] * v[i];
  }
}

static inline float to_float(float v) { return v; }
static inline float to_float(uint16_t v) { return bf16_to_f32(v); }
static inline float to_float(int8_t v) { return float(v); }
static inline float to_float(Half v) { return f16_to_f32(v.bits); }

template <typename E>
void dot_rows_t(const float* q, const E* K, int64_t stride, const float* scale, int64_t scale_stride,
                int64_t nk, int64_t n, float* out) {
  for (int64_t j = 0; j < nk; ++j) {
    const E* k = K + j * stride;
    float s = 0.f;
    if (!scale) {
      for (int64_t i = 0; i < n; ++i) s += q[i] * to_float(k[i]);
    } else {
      for (int64_t b0 = 0; b0 < n; b0 += kKvBlock) {
        float bs = 0.f;
        for (int64_t i = b0; i < std::min<int64_t>(n, b0 + kKvBlock); ++i) bs += q[i] * to_float(k[i]);
        s += bs * scale[j * scale_stride + b0 / kKvBlock];
      }
    }
    out[j] = s;
  }
}

template <typename E>
void weighted_sum_rows_t(const float* p, const E* V, int64_t stride, const float* scale, int64_t scale_stride,
                         int64_t nk, int64_t n, float* out) {
  for (int64_t j = 0; j < nk; ++j) {
    const E* v = V + j * stride;
    for (int64_t i = 0; i < n; ++i) {
      const float w = scale ? p[j] * scale[j * scale_stride + i / kKvBlock] : p[j];
      out[i] += w * to_float(v[i]);
    }
  }
}

#define GEMMA_VEC_REFERENCE(E)                                                                            \
  template void dot_rows_t<E>(const float*, const E*, int64_t, const float*, int64_t, int64_t, int64_t, float*); \
  template void weighted_sum_rows_t<E>(const float*, const E*, int64_t, const float*, int64_t, int64_t, int64_t, \
                                       float*);
GEMMA_VEC_REFERENCE(float)
GEMMA_VEC_REFERENCE(uint16_t)
GEMMA_VEC_REFERENCE(Half)
GEMMA_VEC_REFERENCE(int8_t)
#undef GEMMA_VEC_REFERENCE
}  // namespace scalar

// AVX-512 CPUs run the AVX2 versions of these, except the multi-head dot products and weighted
// sums over unscaled rows (attention's hot loops: vec_avx512.cpp, the same bits as AVX2).
static bool use_avx2(Isa isa) {
#if defined(GEMMA_HAVE_AVX2)
  return isa == Isa::Avx2 || vector_isa(isa) == Isa::Avx512;
#else
  (void)isa;
  return false;
#endif
}

void dot_rows_isa(Isa isa, const float* q, const float* K, int64_t stride, int64_t nk, int64_t n,
                  float* out) {
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa)) return avx2::dot_rows(q, K, stride, nk, n, out);
#endif
  (void)isa;
  scalar::dot_rows(q, K, stride, nk, n, out);
}

void weighted_sum_rows_isa(Isa isa, const float* p, const float* V, int64_t stride, int64_t nk,
                           int64_t n, float* out) {
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa)) return avx2::weighted_sum_rows(p, V, stride, nk, n, out);
#endif
  (void)isa;
  scalar::weighted_sum_rows(p, V, stride, nk, n, out);
}

template <typename E>
void dot_rows_multi_isa(Isa isa, const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride,
                        const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                        int64_t out_stride) {
#if defined(GEMMA_HAVE_AVX512)
  if (vector_isa(isa) == Isa::Avx512)
    return avx512::dot_rows_multi_t(Q, q_stride, nq, K, stride, scale, scale_stride, nk, n, out, out_stride);
#endif
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa))
    return avx2::dot_rows_multi_t(Q, q_stride, nq, K, stride, scale, scale_stride, nk, n, out, out_stride);
#endif
  (void)isa;
  for (int h = 0; h < nq; ++h)
    scalar::dot_rows_t(Q + h * q_stride, K, stride, scale, scale_stride, nk, n, out + h * out_stride);
}

template <typename E>
void weighted_sum_rows_multi_isa(Isa isa, const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                                 const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                                 int64_t out_stride) {
#if defined(GEMMA_HAVE_AVX512)
  if (vector_isa(isa) == Isa::Avx512)
    return avx512::weighted_sum_rows_multi_t(P, p_stride, nq, V, stride, scale, scale_stride, nk, n, out,
                                             out_stride);
#endif
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa))
    return avx2::weighted_sum_rows_multi_t(P, p_stride, nq, V, stride, scale, scale_stride, nk, n, out,
                                           out_stride);
#endif
  (void)isa;
  for (int h = 0; h < nq; ++h)
    scalar::weighted_sum_rows_t(P + h * p_stride, V, stride, scale, scale_stride, nk, n, out + h * out_stride);
}

template <typename E>
void dot_rows_multi(const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride, const float* scale,
                    int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride) {
  dot_rows_multi_isa(active_isa(), Q, q_stride, nq, K, stride, scale, scale_stride, nk, n, out, out_stride);
}

template <typename E>
void weighted_sum_rows_multi(const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                             const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                             int64_t out_stride) {
  weighted_sum_rows_multi_isa(active_isa(), P, p_stride, nq, V, stride, scale, scale_stride, nk, n, out,
                              out_stride);
}

#define GEMMA_VEC_MULTI(E)                                                                                   \
  template void dot_rows_multi_isa<E>(Isa, const float*, int64_t, int, const E*, int64_t, const float*,      \
                                      int64_t, int64_t, int64_t, float*, int64_t);                           \
  template void weighted_sum_rows_multi_isa<E>(Isa, const float*, int64_t, int, const E*, int64_t,           \
                                               const float*, int64_t, int64_t, int64_t, float*, int64_t);    \
  template void dot_rows_multi<E>(const float*, int64_t, int, const E*, int64_t, const float*, int64_t,      \
                                  int64_t, int64_t, float*, int64_t);                                        \
  template void weighted_sum_rows_multi<E>(const float*, int64_t, int, const E*, int64_t, const float*,      \
                                           int64_t, int64_t, int64_t, float*, int64_t);
GEMMA_VEC_MULTI(float)
GEMMA_VEC_MULTI(uint16_t)
GEMMA_VEC_MULTI(Half)
GEMMA_VEC_MULTI(int8_t)
#undef GEMMA_VEC_MULTI

void geglu_tanh_isa(Isa isa, const float* gate, const float* up, int64_t n, float* out) {
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa)) return avx2::geglu_tanh(gate, up, n, out);
#endif
  (void)isa;
  ops::geglu(gate, up, n, /*tanh_approx=*/true, out);
}

void geglu_tanh(const float* gate, const float* up, int64_t n, float* out) {
  geglu_tanh_isa(active_isa(), gate, up, n, out);
}

void rms_norm_isa(Isa isa, const float* x, const float* one_plus_w, int64_t n, float eps, float* out) {
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa)) return avx2::rms_norm(x, one_plus_w, n, eps, out);
#endif
  (void)isa;
  ops::rms_norm(x, one_plus_w, n, eps, out);
}

void attention_softmax_isa(Isa isa, float* x, int64_t n, float scale, float softcap) {
#if defined(GEMMA_HAVE_AVX2)
  if (use_avx2(isa)) return avx2::attention_softmax(x, n, scale, softcap);
#endif
  (void)isa;
  for (int64_t i = 0; i < n; ++i) x[i] *= scale;
  if (softcap > 0) ops::soft_cap(x, n, softcap);
  ops::softmax(x, n);
}

void attention_softmax(float* x, int64_t n, float scale, float softcap) {
  attention_softmax_isa(active_isa(), x, n, scale, softcap);
}

void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out) {
  dot_rows_isa(active_isa(), q, K, stride, nk, n, out);
}

void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out) {
  weighted_sum_rows_isa(active_isa(), p, V, stride, nk, n, out);
}

}  // namespace gemma::vec
