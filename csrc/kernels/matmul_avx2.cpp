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

}  // namespace gemma::avx2
