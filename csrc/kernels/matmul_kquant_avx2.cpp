// AVX2 kernels for the native GGUF formats (compiled with -mavx2 -mfma -mf16c). The tiles are in
// matmul_kquant_x86.inc; this file supplies the unsigned x signed byte dot product.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kernels/matmul_kquant.h"
#include "quant/kquant.h"

namespace gemma::avx2 {
namespace {

// vpmaddubsw: unsigned u times signed x, adjacent pairs summed to int16 (|2 * 63 * 127| < 32767,
// no saturation), then vpmaddwd with ones sums pairs of pairs into int32 lanes of 4 bytes each.
struct KDot {
  static __m256i dot_us(__m256i u, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1));
  }
};

// 16 ymm registers: 2 rows x 4 tokens = 8 accumulators.
#define GEMMA_KR 2
#define GEMMA_KT 4
#include "kernels/matmul_kquant_x86.inc"

}  // namespace

void matmul_rows_kquant(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                        int64_t ldy, int64_t r0, int64_t r1) {
  kquant_rows_impl(W, *xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx2
