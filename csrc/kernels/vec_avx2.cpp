// AVX2 + FMA + F16C attention vector kernels (compiled with -mavx2 -mfma -mf16c; dispatched only on CPUs that
// have them). 8 lanes; columns past a multiple of 8 are handled one by one.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/vec.h"

namespace gemma::vec::avx2 {

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// exp(x) for 8 floats: x = n ln2 + r with |r| <= ln2/2, exp(r) by the Cephes degree-6
// polynomial (relative error ~1e-7), times 2^n built in the exponent bits.
static inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

void geglu_tanh(const float* gate, const float* up, int64_t n, float* out) {
  // gelu(g) = 0.5 g (1 + tanh(u)), u = sqrt(2/pi) (g + 0.044715 g^3), tanh(u) = 1 - 2 / (e^{2u} + 1)
  const __m256 k = _mm256_set1_ps(0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
  const __m256 one = _mm256_set1_ps(1.f), two = _mm256_set1_ps(2.f), half = _mm256_set1_ps(0.5f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 u = _mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(c, g), _mm256_mul_ps(g, g), g));
    const __m256 e = exp8(_mm256_add_ps(u, u));
    const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(e, one)));
    const __m256 act = _mm256_mul_ps(_mm256_mul_ps(half, g), _mm256_add_ps(one, t));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(act, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) {
    const float g = gate[i];
    out[i] = 0.5f * g * (1.0f + std::tanh(0.7978845608028654f * (g + 0.044715f * g * g * g))) * up[i];
  }
}

// ops::softmax in 8 lanes: the max is exact; exp by exp8 and the sum in 8 lane partials (then a
// fixed tree), the last n % 8 scores one by one. A soft-cap (tanh) stays scalar (ops::soft_cap).
void attention_softmax(float* x, int64_t n, float scale, float softcap) {
  const int64_t n8 = n / 8 * 8;
  const __m256 vs = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i < n8; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
  for (; i < n; ++i) x[i] *= scale;
  if (softcap > 0) ops::soft_cap(x, n, softcap);
  __m256 vm = _mm256_set1_ps(x[0]);
  for (i = 0; i < n8; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
  for (i = n8; i < n; ++i) m = x[i] > m ? x[i] : m;
  const __m256 vmax = _mm256_set1_ps(m);
  __m256 vsum = _mm256_setzero_ps();
  for (i = 0; i < n8; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
    _mm256_storeu_ps(x + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  float s = hsum(vsum);
  for (i = n8; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    s += x[i];
  }
  const __m256 inv = _mm256_set1_ps(1.0f / s);
  for (i = 0; i < n8; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (i = n8; i < n; ++i) x[i] *= 1.0f / s;
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

// ---- typed rows (KV cache elements): 8 values widened to f32 per step ----
static inline __m256 load8(const uint16_t* p) {  // bf16: the top half of an f32
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
static inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
static inline __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
static inline float to_float(uint16_t v) { return bf16_to_f32(v); }
static inline float to_float(Half v) { return _cvtsh_ss(v.bits); }
static inline float to_float(int8_t v) { return float(v); }

// ops::rms_norm's arithmetic: part[j] (j < 8) sums x[i]^2 in double over i = j mod 8; a float's
// square is exact in double, so a 4-lane fma adds exactly what the scalar loop adds, in order.
void rms_norm(const float* x, const float* one_plus_w, int64_t n, float eps, float* out) {
  __m256d p_lo = _mm256_setzero_pd(), p_hi = _mm256_setzero_pd();  // part[0..3], part[4..7]
  int64_t i0 = 0;
  for (; i0 + 8 <= n; i0 += 8) {
    const __m256 v = _mm256_loadu_ps(x + i0);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    p_lo = _mm256_fmadd_pd(lo, lo, p_lo);
    p_hi = _mm256_fmadd_pd(hi, hi, p_hi);
  }
  alignas(32) double part[8];
  _mm256_store_pd(part, p_lo);
  _mm256_store_pd(part + 4, p_hi);
  for (int j = 0; i0 + j < n; ++j) part[j] += double(x[i0 + j]) * double(x[i0 + j]);
  const double ss = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  const float mean = float(ss / double(n));
  const float inv = 1.0f / std::sqrt(mean + eps);
  const __m256 vinv = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), _mm256_loadu_ps(one_plus_w + i)));
  for (; i < n; ++i) out[i] = (x[i] * inv) * one_plus_w[i];
}

// ---- several heads against the same rows (per head the arithmetic of dot_rows /
// weighted_sum_rows above, each row loaded once for all heads) ----
static inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
static inline float to_float(float v) { return v; }

template <int M, typename E>
static void dot_rows_heads(const float* Q, int64_t q_stride, const E* K, int64_t stride, int64_t nk, int64_t n,
                           float* out, int64_t out_stride) {
  const int64_t n8 = n / 8 * 8;
  for (int64_t j = 0; j < nk; ++j) {
    const E* k = K + j * stride;
    __m256 a0[M], a1[M];
    for (int h = 0; h < M; ++h) a0[h] = a1[h] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n8; i += 16) {
      const __m256 k0 = load8(k + i), k1 = load8(k + i + 8);
      for (int h = 0; h < M; ++h) {
        a0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(Q + h * q_stride + i), k0, a0[h]);
        a1[h] = _mm256_fmadd_ps(_mm256_loadu_ps(Q + h * q_stride + i + 8), k1, a1[h]);
      }
    }
    for (; i < n8; i += 8) {
      const __m256 k0 = load8(k + i);
      for (int h = 0; h < M; ++h) a0[h] = _mm256_fmadd_ps(_mm256_loadu_ps(Q + h * q_stride + i), k0, a0[h]);
    }
    for (int h = 0; h < M; ++h) {
      const float* q = Q + h * q_stride;
      float s = hsum(_mm256_add_ps(a0[h], a1[h]));
      for (int64_t t = i; t < n; ++t) s += q[t] * to_float(k[t]);
      out[h * out_stride + j] = s;
    }
  }
}

// Rows with a scale per block of kKvBlock (= 32) values: per block, 4 vectors of products summed
// in one chain, then that sum times the block's scale added to the row's accumulator.
template <int M, typename E>
static void dot_rows_heads_scaled(const float* Q, int64_t q_stride, const E* K, int64_t stride, const float* scale,
                                  int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride) {
  static_assert(kKvBlock == 32, "one block is four vectors of 8");
  for (int64_t j = 0; j < nk; ++j) {
    const E* k = K + j * stride;
    const float* sc = scale + j * scale_stride;
    __m256 acc[M];
    for (int h = 0; h < M; ++h) acc[h] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m256 k0 = load8(k + i), k1 = load8(k + i + 8), k2 = load8(k + i + 16), k3 = load8(k + i + 24);
      const __m256 s = _mm256_set1_ps(sc[i / 32]);
      for (int h = 0; h < M; ++h) {
        const float* q = Q + h * q_stride + i;
        __m256 b = _mm256_mul_ps(_mm256_loadu_ps(q), k0);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8), k1, b);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(q + 16), k2, b);
        b = _mm256_fmadd_ps(_mm256_loadu_ps(q + 24), k3, b);
        acc[h] = _mm256_fmadd_ps(b, s, acc[h]);
      }
    }
    const int64_t n8 = i + (n - i) / 8 * 8;  // a last, shorter block: vectors of 8, then one by one
    for (int h = 0; h < M; ++h) {
      const float* q = Q + h * q_stride;
      float s = hsum(acc[h]);
      if (i < n) {
        __m256 b = _mm256_setzero_ps();
        for (int64_t t = i; t < n8; t += 8) b = _mm256_fmadd_ps(_mm256_loadu_ps(q + t), load8(k + t), b);
        float bs = hsum(b);
        for (int64_t t = n8; t < n; ++t) bs += q[t] * to_float(k[t]);
        s += bs * sc[i / 32];
      }
      out[h * out_stride + j] = s;
    }
  }
}

template <typename E>
void dot_rows_multi_t(const float* Q, int64_t q_stride, int nq, const E* K, int64_t stride, const float* scale,
                      int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride) {
  for (int h0 = 0; h0 < nq; h0 += 4) {
    const float* q = Q + h0 * q_stride;
    float* o = out + h0 * out_stride;
    if (scale) {
      switch (std::min(4, nq - h0)) {
        case 4: dot_rows_heads_scaled<4>(q, q_stride, K, stride, scale, scale_stride, nk, n, o, out_stride); break;
        case 3: dot_rows_heads_scaled<3>(q, q_stride, K, stride, scale, scale_stride, nk, n, o, out_stride); break;
        case 2: dot_rows_heads_scaled<2>(q, q_stride, K, stride, scale, scale_stride, nk, n, o, out_stride); break;
        default: dot_rows_heads_scaled<1>(q, q_stride, K, stride, scale, scale_stride, nk, n, o, out_stride); break;
      }
      continue;
    }
    switch (std::min(4, nq - h0)) {
      case 4: dot_rows_heads<4>(q, q_stride, K, stride, nk, n, o, out_stride); break;
      case 3: dot_rows_heads<3>(q, q_stride, K, stride, nk, n, o, out_stride); break;
      case 2: dot_rows_heads<2>(q, q_stride, K, stride, nk, n, o, out_stride); break;
      default: dot_rows_heads<1>(q, q_stride, K, stride, nk, n, o, out_stride); break;
    }
  }
}

template <int M, typename E>
static void weighted_sum_heads(const float* P, int64_t p_stride, const E* V, int64_t stride, const float* scale,
                               int64_t scale_stride, int64_t nk, int64_t n, float* out, int64_t out_stride) {
  const int64_t n8 = n / 8 * 8, n16 = n / 16 * 16;
  // Keys in blocks of kKeys rows of V (L1-resident, read row by row, ascending), each block swept
  // over the output columns 16 at a time (2M independent FMA chains). Every output element still
  // takes its keys in ascending order, o = fma(w_j, v_j, o), so the block size changes no bit;
  // sweeping all keys per column chunk instead read V in 32-byte pieces a row apart. With scales
  // (one per kKvBlock = 32 columns), a chunk of 16 or 8 columns lies in one scale block.
  static_assert(kKvBlock % 16 == 0, "a column chunk must lie in one scale block");
  constexpr int64_t kKeys = 16;
  for (int64_t j0 = 0; j0 < nk; j0 += kKeys) {
    const int64_t nj = std::min(kKeys, nk - j0);
    float w[M][kKeys];
    for (int h = 0; h < M; ++h)
      for (int64_t j = 0; j < nj; ++j) {
        w[h][j] = P[h * p_stride + j0 + j];
      }
    const E* Vb = V + j0 * stride;
    int64_t i0 = 0;
    for (; i0 < n16; i0 += 16) {
      __m256 a[M], b[M];
      for (int h = 0; h < M; ++h)
        a[h] = _mm256_loadu_ps(out + h * out_stride + i0), b[h] = _mm256_loadu_ps(out + h * out_stride + i0 + 8);
      for (int64_t j = 0; j < nj; ++j) {
        const __m256 va = load8(Vb + j * stride + i0), vb = load8(Vb + j * stride + i0 + 8);
        const float sc = scale ? scale[(j0 + j) * scale_stride + i0 / kKvBlock] : 1.f;
        for (int h = 0; h < M; ++h) {
          const __m256 wj = _mm256_set1_ps(scale ? w[h][j] * sc : w[h][j]);
          a[h] = _mm256_fmadd_ps(wj, va, a[h]);
          b[h] = _mm256_fmadd_ps(wj, vb, b[h]);
        }
      }
      for (int h = 0; h < M; ++h)
        _mm256_storeu_ps(out + h * out_stride + i0, a[h]), _mm256_storeu_ps(out + h * out_stride + i0 + 8, b[h]);
    }
    for (; i0 < n8; i0 += 8) {
      __m256 o[M];
      for (int h = 0; h < M; ++h) o[h] = _mm256_loadu_ps(out + h * out_stride + i0);
      for (int64_t j = 0; j < nj; ++j) {
        const __m256 v = load8(Vb + j * stride + i0);
        const float sc = scale ? scale[(j0 + j) * scale_stride + i0 / kKvBlock] : 1.f;
        for (int h = 0; h < M; ++h) o[h] = _mm256_fmadd_ps(_mm256_set1_ps(scale ? w[h][j] * sc : w[h][j]), v, o[h]);
      }
      for (int h = 0; h < M; ++h) _mm256_storeu_ps(out + h * out_stride + i0, o[h]);
    }
  }
  for (int h = 0; h < M; ++h)
    for (int64_t i = n8; i < n; ++i) {
      float s = out[h * out_stride + i];
      for (int64_t j = 0; j < nk; ++j) {
        const float p = P[h * p_stride + j];
        s += (scale ? p * scale[j * scale_stride + i / kKvBlock] : p) * to_float(V[j * stride + i]);
      }
      out[h * out_stride + i] = s;
    }
}

template <typename E>
void weighted_sum_rows_multi_t(const float* P, int64_t p_stride, int nq, const E* V, int64_t stride,
                               const float* scale, int64_t scale_stride, int64_t nk, int64_t n, float* out,
                               int64_t out_stride) {
  for (int h0 = 0; h0 < nq; h0 += 4) {
    const float* p = P + h0 * p_stride;
    float* o = out + h0 * out_stride;
    switch (std::min(4, nq - h0)) {
      case 4: weighted_sum_heads<4>(p, p_stride, V, stride, scale, scale_stride, nk, n, o, out_stride); break;
      case 3: weighted_sum_heads<3>(p, p_stride, V, stride, scale, scale_stride, nk, n, o, out_stride); break;
      case 2: weighted_sum_heads<2>(p, p_stride, V, stride, scale, scale_stride, nk, n, o, out_stride); break;
      default: weighted_sum_heads<1>(p, p_stride, V, stride, scale, scale_stride, nk, n, o, out_stride); break;
    }
  }
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

}  // namespace gemma::vec::avx2
