// AVX-512 VNNI kernels (compiled with avx512f/bw/vl/dq/vnni; dispatched only on CPUs that have
// them, e.g. Zen 4/5, Ice Lake and later). int8/int4 weights: matmul_quant_avx512.inc (zmm,
// vpdpbusd, 16 rows per vector). Float weights: the shared tiles of matmul_x86.inc on zmm.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/matmul.h"
#include "kernels/quant_canonical.h"
#include "quant/quant.h"

namespace gemma::avx512 {
namespace {

// Float weights in zmm: 16 lanes (Zen 4/5 and Intel run two 512-bit FMAs per cycle).
struct FV {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load_x(const float* p) { return _mm512_loadu_ps(p); }
  template <DType DT>
  static V load_w(const uint8_t* row, int64_t k) {
    if constexpr (DT == DType::F32) {
      return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + k);
    } else {
      const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * k));
      return DT == DType::BF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16))
                               : _mm512_cvtph_ps(h);
    }
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(V v) {  // a fixed tree: 16 -> 8 -> 4 -> 2 -> 1
    const __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                                    _mm512_castps512_ps256(_mm512_shuffle_f32x4(v, v, _MM_SHUFFLE(3, 2, 3, 2))));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
};

// 32 zmm registers: float tile 4 rows x 6 tokens (24 accumulators, 6 activations, 1 weight).
#define GEMMA_FR 4
#define GEMMA_FT 6
#include "kernels/matmul_quant_avx512.inc"
#include "kernels/matmul_quant_driver.inc"
#include "kernels/matmul_x86.inc"

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  matmul_rows_impl(W, X, xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx512
