// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; dispatched only on CPUs that
// have them). The shared tile code is matmul_x86.inc; this file supplies the int8 dot product.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/matmul.h"
#include "quant/quant.h"

namespace gemma::avx2 {
namespace {

// int8 x int8 with vpmaddubsw, which multiplies UNSIGNED by signed bytes: use |w| as the unsigned
// operand and move w's sign onto x (vpsignb): |w| * sign(w) x = w x. Pairs sum to at most
// 2 * 127 * 127 < 32767 (levels are in [-127, 127], never -128), so the int16 step cannot
// saturate; vpmaddwd with ones widens pairs of pairs to int32.
struct IntDot {
  static __m256i prep_w(__m256i w) { return _mm256_sign_epi8(w, w); }  // |w|
  static __m256i prep_x(__m256i x) { return x; }
  static __m256i dot(__m256i w, __m256i abs_w, __m256i x) {
    const __m256i p16 = _mm256_maddubs_epi16(abs_w, _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
  }
};

// 16 ymm registers: quantised tile 2x4 = 8 accumulators + 2x2 weight regs; float 4x3.
#define GEMMA_QR 2
#define GEMMA_QT 4
#define GEMMA_FR 4
#define GEMMA_FT 3
#include "kernels/matmul_x86.inc"

}  // namespace

void matmul_rows(const WeightView& W, const float* X, const QuantizedActs* xq, int64_t T, float* Y,
                 int64_t ldy, int64_t r0, int64_t r1) {
  matmul_rows_impl(W, X, xq, T, Y, ldy, r0, r1);
}

}  // namespace gemma::avx2
