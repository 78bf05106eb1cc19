// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; dispatched only on CPUs that
// have them). int8/int4 weights: matmul_quant_avx2.inc (8 rows per vector); float weights: the
// shared tiles of matmul_x86.inc.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_canonical.h"
#include "quant/quant.h"

namespace gemma::avx2 {
namespace {

// Float weights in ymm: 8 lanes; bf16 widens to f32 by a shift, f16 with F16C.
struct FV {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load_x(const float* p) { return _mm256_loadu_ps(p); }
  template <DType DT>
  static V load_w(const uint8_t* row, int64_t k) {
    if constexpr (DT == DType::F32) {
      return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
    } else {
      const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 2 * k));
      return DT == DType::BF16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
                               : _mm256_cvtph_ps(h);
    }
  }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// 16 ymm registers: float tile 4x3.
#define GEMMA_FR 4
#define GEMMA_FT 3
#include "kernels/matmul_quant_avx2.inc"
#include "kernels/matmul_quant_driver.inc"
#include "kernels/matmul_x86.inc"

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  matmul_rows_impl(W, X, xq, T, Y, ldy, r0, r1);
}

// quantize_activations (matmul.cpp, the reference) with 8 lanes; the same operations in the same
// precision, so the same bits: max is exact, round-to-nearest-even equals the reference's
// magic-number rounding below 2^22, and the sign is restored exactly. Partial blocks (a row's
// last, when cols is not a multiple of 32) go to the reference.
void quantize_activations(const float* X, int64_t T, int64_t cols, int8_t* q, float* d, int32_t* s) {
  const int64_t nb = quant::n_blocks(cols), full = cols / kB;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 k127 = _mm256_set1_ps(127.f);
  for (int64_t t = 0; t < T; ++t) {
    const float* x = X + t * cols;
    for (int64_t b = 0; b < full; ++b) {
      const float* xb = x + b * kB;
      __m256 v[4], a[4];
      for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(xb + 8 * i), a[i] = _mm256_and_ps(v[i], abs_mask);
      __m256 m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float amax = _mm_cvtss_f32(m4);
      const __m256 id = _mm256_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
      __m256i qi[4], sum = _mm256_setzero_si256();
      for (int i = 0; i < 4; ++i) {
        const __m256 r = _mm256_min_ps(k127, _mm256_round_ps(_mm256_mul_ps(a[i], id),
                                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        qi[i] = _mm256_sign_epi32(_mm256_cvttps_epi32(r), _mm256_castps_si256(v[i]));
        sum = _mm256_add_epi32(sum, qi[i]);
      }
      // int32 -> int8 (no saturation: |q| <= 127); packs work within 128-bit lanes, so undo the interleave.
      const __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
      const __m256i p8 = _mm256_packs_epi16(p16a, p16b);
      const __m256i ordered = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (t * nb + b) * kB), ordered);
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
      d[t * nb + b] = amax / 127.f;
      s[t * nb + b] = _mm_cvtsi128_si32(s4);
    }
    if (full < nb)  // the partial last block
      gemma::quantize_activations(x + full * kB, 1, cols - full * kB, q + (t * nb + full) * kB, d + t * nb + full,
                                  s + t * nb + full);
  }
}

}  // namespace gemma::avx2
