// AVX2 + FMA attention vector kernels (compiled with -mavx2 -mfma; dispatched only on CPUs that
// have them). 8 lanes; columns past a multiple of 8 are handled one by one.
#include <immintrin.h>

#include "kernels/vec.h"

namespace gemma::vec::avx2 {

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

void dot_rows(const float* q, const float* K, int64_t stride, int64_t nk, int64_t n, float* out) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t j = 0; j < nk; ++j) {
    const float* k = K + j * stride;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n8; i += 16) {  // two chains hide the FMA latency
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i + 8), _mm256_loadu_ps(k + i + 8), a1);
    }
    for (; i < n8; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), _mm256_loadu_ps(k + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; ++i) s += q[i] * k[i];
    out[j] = s;
  }
}

void weighted_sum_rows(const float* p, const float* V, int64_t stride, int64_t nk, int64_t n,
                       float* out) {
  const int64_t n8 = n / 8 * 8;
  // Output columns in register blocks of 32, swept over all rows: `out` is loaded and stored
  // once per block instead of once per row.
  int64_t i0 = 0;
  for (; i0 + 32 <= n8; i0 += 32) {
    __m256 o0 = _mm256_loadu_ps(out + i0), o1 = _mm256_loadu_ps(out + i0 + 8);
    __m256 o2 = _mm256_loadu_ps(out + i0 + 16), o3 = _mm256_loadu_ps(out + i0 + 24);
    for (int64_t j = 0; j < nk; ++j) {
      const float* v = V + j * stride + i0;
      const __m256 w = _mm256_set1_ps(p[j]);
      o0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), o0);
      o1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8), o1);
      o2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 16), o2);
      o3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 24), o3);
    }
    _mm256_storeu_ps(out + i0, o0);
    _mm256_storeu_ps(out + i0 + 8, o1);
    _mm256_storeu_ps(out + i0 + 16, o2);
    _mm256_storeu_ps(out + i0 + 24, o3);
  }
  for (; i0 < n8; i0 += 8) {
    __m256 o = _mm256_loadu_ps(out + i0);
    for (int64_t j = 0; j < nk; ++j)
      o = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), _mm256_loadu_ps(V + j * stride + i0), o);
    _mm256_storeu_ps(out + i0, o);
  }
  for (int64_t i = n8; i < n; ++i) {
    float s = out[i];
    for (int64_t j = 0; j < nk; ++j) s += p[j] * V[j * stride + i];
    out[i] = s;
  }
}

}  // namespace gemma::vec::avx2
