// AVX-512 VNNI kernels (compiled with avx512f/bw/vl/dq/vnni; dispatched only on CPUs that have
// them, e.g. Zen 4/5, Ice Lake and later). The shared tile code is matmul_x86.inc (256-bit
// vectors: EVEX encoding gives 32 ymm registers, so the tiles are larger than AVX2's, and
// 256-bit VNNI avoids the frequency drop some Intel parts take on zmm); this file supplies the
// int8 dot product with vpdpbusd.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/matmul.h"
#include "quant/quant.h"

namespace gemma::avx512 {
namespace {

// vpdpbusd multiplies UNSIGNED bytes by signed bytes and adds groups of 4 into int32 lanes.
// Make x unsigned by offsetting: xu = x + 128 (x ^ 0x80), so sum xu w = sum x w + 128 sum w.
// The correction 128 sum w depends only on the weight block, so it is computed once per weight
// block (as -vpdpbusd(0x80.., w), lane by lane matching) and used as the accumulator's start.
struct IntDot {
  static __m256i prep_w(__m256i w) {
    const __m256i c = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(char(0x80)), w);
    return _mm256_sub_epi32(_mm256_setzero_si256(), c);
  }
  static __m256i prep_x(__m256i x) { return _mm256_xor_si256(x, _mm256_set1_epi8(char(0x80))); }
  static __m256i dot(__m256i w, __m256i neg_corr, __m256i xu) {
    return _mm256_dpbusd_epi32(neg_corr, xu, w);
  }
};

#define GEMMA_QR 4
#define GEMMA_QT 4
#define GEMMA_FR 4
#define GEMMA_FT 4
#include "kernels/matmul_x86.inc"

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  matmul_rows_impl(W, X, xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx512
