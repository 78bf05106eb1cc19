// AVX-512 attention dot products and weighted sums over unscaled rows (f32, bf16, f16 K/V), the
// same bits as the AVX2 kernels (vec_avx2.cpp), in half the instructions and with each row loaded
// once for several keys and heads.
//
// Why the bits are the same: the AVX2 dot keeps two 8-lane accumulators, a0 over the elements
// i..i+7 and a1 over i+8..i+15 of each 16-element chunk, then sums hsum8(a0 + a1) and the tail.
// One 16-lane accumulator holds a0 in its low half and a1 in its high half, and one zmm FMA over
// the 16 elements of a chunk does both FMAs exactly. The weighted sum adds fma(w_j, v_j, o) to
// each output element, keys ascending: the vector width does not enter. Rows with block scales
// (an int8 KV cache) keep the AVX2 kernels, whose chained per-block sums do not map onto zmm.
//
// Speed: attention was ~40% of a 512-token prefill of the 270M (d 640, head_dim 256, 4 query
// heads per KV head) and load-bound: the AVX2 dot loads a query vector for every FMA. Here a tile
// of kKeys keys x up to 4 heads shares each query and key load (16 accumulators).
#include <immintrin.h>

#include <algorithm>
#include <type_traits>

#include "kernels/dtype.h"
#include "kernels/vec.h"

namespace gemma::vec::avx512 {
namespace {

inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline __m512 load16(const Half* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
// Eight elements in the low half, zeros above.
inline __m512 load8(const float* p) { return _mm512_castps256_ps512(_mm256_loadu_ps(p)); }
inline __m512 load8(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_castsi128_si256(
                                                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))), 16));
}
inline __m512 load8(const Half* p) {
  return _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return bf16_to_f32(v); }
inline float to_float(Half v) { return f16_to_f32(v.bits); }

// hsum8(a0 + a1) in the AVX2 kernels' order (vec_avx2.cpp hsum): a = [a0 | a1].
inline float hsum_halves(__m512 a) {
  const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

constexpr int kKeys = 4;  // keys per tile: 4 keys x 4 heads = 16 accumulators

// Keys j0 .. j0 + NK - 1 against M heads.
template <int M, int NK, typename E>
inline void dot_tile(const float* Q, int64_t q_stride, const E* K, int64_t stride, int64_t j0, int64_t n,
                     float* out, int64_t out_stride) {
  const int64_t n8 = n / 8 * 8, n16 = n / 16 * 16;
  __m512 acc[M][NK];
  for (int h = 0; h < M; ++h)
    for (int k = 0; k < NK; ++k) acc[h][k] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n16; i += 16) {
    __m512 kv[NK];
    for (int k = 0; k < NK; ++k) kv[k] = load16(K + (j0 + k) * stride + i);
    for (int h = 0; h < M; ++h) {
      const __m512 q = _mm512_loadu_ps(Q + h * q_stride + i);
      for (int k = 0; k < NK; ++k) acc[h][k] = _mm512_fmadd_ps(q, kv[k], acc[h][k]);
    }
  }
  if (n16 < n8) {  // one more 8-element step, into the low half (AVX2's a0) only
    __m512 kv[NK];
    for (int k = 0; k < NK; ++k) kv[k] = load8(K + (j0 + k) * stride + n16);
    for (int h = 0; h < M; ++h) {
      const __m512 q = load8(Q + h * q_stride + n16);
      for (int k = 0; k < NK; ++k) acc[h][k] = _mm512_mask3_fmadd_ps(q, kv[k], acc[h][k], __mmask16(0x00ff));
    }
  }
  for (int h = 0; h < M; ++h) {
    const float* q = Q + h * q_stride;
    for (int k = 0; k < NK; ++k) {
      const E* krow = K + (j0 + k) * stride;
      float s = hsum_halves(acc[h][k]);
      for (int64_t t = n8; t < n; ++t) s += q[t] * to_float(krow[t]);
      out[h * out_stride + j0 + k] = s;
    }
  }
}

template <int M, typename E>
void dot_heads(const float* Q, int64_t q_stride, const E* K, int64_t stride, int64_t nk, int64_t n, float* out,
               int64_t out_stride) {
  int64_t j = 0;
  for (; j + kKeys <= nk; j += kKeys) dot_tile<M, kKeys>(Q, q_stride, K, stride, j, n, out, out_stride);
  for (; j < nk; ++j) dot_tile<M, 1>(Q, q_stride, K, stride, j, n, out, out_stride);
}

// out[h][i] += sum_j P[h][j] V[j][i], keys ascending per output element. Keys in blocks of 16
// (L1-resident), each block swept over the columns kChunks x 16 at a time.
constexpr int kChunks = 4;

template <int M, int NC, typename E>
inline void weighted_cols(const float (*w)[16], int64_t nj, const E* Vb, int64_t stride, int64_t i0, float* out,
                          int64_t out_stride) {
  __m512 o[M][NC];
  for (int h = 0; h < M; ++h)
    for (int c = 0; c < NC; ++c) o[h][c] = _mm512_loadu_ps(out + h * out_stride + i0 + 16 * c);
  for (int64_t j = 0; j < nj; ++j) {
    __m512 v[NC];
    for (int c = 0; c < NC; ++c) v[c] = load16(Vb + j * stride + i0 + 16 * c);
    for (int h = 0; h < M; ++h) {
      const __m512 wj = _mm512_set1_ps(w[h][j]);
      for (int c = 0; c < NC; ++c) o[h][c] = _mm512_fmadd_ps(wj, v[c], o[h][c]);
    }
  }
  for (int h = 0; h < M; ++h)
    for (int c = 0; c < NC; ++c) _mm512_storeu_ps(out + h * out_stride + i0 + 16 * c, o[h][c]);
}

template <int M, typename E>
void weighted_heads(const float* P, int64_t p_stride, const E* V, int64_t stride, int64_t nk, int64_t n, float* out,
                    int64_t out_stride) {
  const int64_t n8 = n / 8 * 8, n16 = n / 16 * 16;
  constexpr int64_t kBlockKeys = 16;
  for (int64_t j0 = 0; j0 < nk; j0 += kBlockKeys) {
    const int64_t nj = std::min(kBlockKeys, nk - j0);
    float w[M][16];
    for (int h = 0; h < M; ++h)
      for (int64_t j = 0; j < nj; ++j) w[h][j] = P[h * p_stride + j0 + j];
    const E* Vb = V + j0 * stride;
    int64_t i0 = 0;
    for (; i0 + 16 * kChunks <= n16; i0 += 16 * kChunks) weighted_cols<M, kChunks>(w, nj, Vb, stride, i0, out, out_stride);
    for (; i0 < n16; i0 += 16) weighted_cols<M, 1>(w, nj, Vb, stride, i0, out, out_stride);
    if (i0 < n8) {  // 8 more columns
      __m256 o[M];
      for (int h = 0; h < M; ++h) o[h] = _mm256_loadu_ps(out + h * out_stride + i0);
      for (int64_t j = 0; j < nj; ++j) {
        const __m256 v = _mm512_castps512_ps256(load8(Vb + j * stride + i0));
        for (int h = 0; h < M; ++h) o[h] = _mm256_fmadd_ps(_mm256_set1_ps(w[h][j]), v, o[h]);
      }
      for (int h = 0; h < M; ++h) _mm256_storeu_ps(out + h * out_stride + i0, o[h]);
    }
  }
  for (int h = 0; h < M; ++h)  // the last n % 8 columns, one by one, keys ascending
    for (int64_t i = n8; i < n; ++i) {
      float s = out[h * out_stride + i];
      for (int64_t j = 0; j < nk; ++j) s += P[h * p_stride + j] * to_float(V[j * stride + i]);
      out[h * out_stride + i] = s;
    }
}

// run(M, h0) for the heads in groups of up to 4 (one tile's worth), M a compile-time constant.
template <typename Run>
void by_head_groups(int nq, Run run) {
  for (int h0 = 0; h0 < nq; h0 += 4) {
    switch (std::min(4, nq - h0)) {
      case 4: run(std::integral_constant<int, 4>(), h0); break;
      case 3: run(std::integral_constant<int, 3>(), h0); break;
      case 2: run(std::integral_constant<int, 2>(), h0); break;
      default: run(std::integral_constant<int, 1>(), h0); break;
    }
  }
}

}  // namespace

// Rows with block scales (an int8 cache, always scaled) take the AVX2 kernels.
template <typename E>
void dot_rows_multi_t(const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride, const float* scale,
                      int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride) {
  if constexpr (!std::is_same_v<E, int8_t>) {
    if (!scale) {
      return by_head_groups(nq, [&](auto m, int h0) {
        dot_heads<decltype(m)::value>(Q + h0 * q_stride, q_stride, K, stride, nk, n, out + h0 * out_stride, out_stride);
      });
    }
  }
  avx2::dot_rows_multi_t(Q, q_stride, nq, K, stride, scale, scale_stride, nk, n, out, out_stride);
}

template <typename E>
void weighted_sum_rows_multi_t(const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                               const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                               int64_t out_stride) {
  if constexpr (!std::is_same_v<E, int8_t>) {
    if (!scale) {
      return by_head_groups(nq, [&](auto m, int h0) {
        weighted_heads<decltype(m)::value>(P + h0 * p_stride, p_stride, V, stride, nk, n, out + h0 * out_stride,
                                           out_stride);
      });
    }
  }
  avx2::weighted_sum_rows_multi_t(P, p_stride, nq, V, stride, scale, scale_stride, nk, n, out, out_stride);
}

#define GEMMA_VEC_MULTI(E)                                                                                  \
  template void dot_rows_multi_t<E>(const float*, int64_t, int, const E*, int64_t, const float*, int64_t,   \
                                    int64_t, int64_t, float*, int64_t);                                     \
  template void weighted_sum_rows_multi_t<E>(const float*, int64_t, int, const E*, int64_t, const float*,   \
                                             int64_t, int64_t, int64_t, float*, int64_t);
GEMMA_VEC_MULTI(float)
GEMMA_VEC_MULTI(uint16_t)
GEMMA_VEC_MULTI(Half)
GEMMA_VEC_MULTI(int8_t)
#undef GEMMA_VEC_MULTI

}  // namespace gemma::vec::avx512
